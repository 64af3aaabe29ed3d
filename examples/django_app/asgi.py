"""Under an ASGI server (``uvicorn asgi:application``): fanout's ASGI middleware answers the
lifespan protocol Django refuses, and flushes on the shutdown."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

from fanout.integrations.asgi import FanoutMiddleware  # noqa: E402

application = FanoutMiddleware(get_asgi_application())
