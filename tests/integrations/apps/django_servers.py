"""Django's WSGI and ASGI applications for the real-server tests.

Django's ASGI handler refuses the lifespan protocol, so fanout's ASGI middleware wraps it:
it answers lifespan itself and flushes at the shutdown (see docs/integrations/django.md).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site")

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from fanout.integrations.asgi import FanoutMiddleware  # noqa: E402

wsgi = get_wsgi_application()
asgi = FanoutMiddleware(get_asgi_application())
