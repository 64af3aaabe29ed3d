"""A one-module Django project with fanout's middleware (settings, URLs and a view)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

import fanout

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # after authentication: the logged-in user's pk becomes person_id
    "fanout.integrations.django.FanoutMiddleware",
]
ROOT_URLCONF = "site_settings"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "example.sqlite3"}}
USE_TZ = True


def home(request: HttpRequest) -> JsonResponse:
    fanout.page(request.path)
    return JsonResponse({"hello": "world"})


urlpatterns = [path("", home)]
