"""A small Django project in one module (settings, URLs, views) with fanout's middleware.

``DJANGO_SETTINGS_MODULE=django_site``; the database file comes from ``DJANGO_TEST_DB``.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import fanout

SECRET_KEY = "django-insecure-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "fanout.integrations.django.FanoutMiddleware",
]
ROOT_URLCONF = "django_site"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_TEST_DB", "django-test.db"),
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"


def login_view(request: HttpRequest) -> HttpResponse:
    from django.contrib.auth import login
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username=request.GET["user"])
    login(request, user)
    return JsonResponse({"pk": user.pk})


def track_view(request: HttpRequest) -> HttpResponse:
    i = int(request.GET["i"])
    return JsonResponse(
        {"event_id": fanout.track("request.handled", properties={"i": i, "mode": "sync"},
                                  event_id=f"req-{i}")}
    )


async def atrack_view(request: HttpRequest) -> HttpResponse:
    i = int(request.GET["i"])
    return JsonResponse(
        {"event_id": fanout.track("request.handled", properties={"i": i, "mode": "async"},
                                  event_id=f"areq-{i}")}
    )


def health_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("login", login_view),
    path("track", track_view),
    path("atrack", atrack_view),
    path("health", health_view),
]
