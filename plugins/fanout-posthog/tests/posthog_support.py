"""Helpers shared by the tests (a uniquely named module, so that several plugins' test
directories can run in one pytest session without their helpers colliding).

The local server, the client aimed at it and the decoding of what it received come from
:mod:`fanout.testing`; only what is PostHog's lives here.
"""

from __future__ import annotations

from typing import Any

import fanout_posthog
from pytest_httpserver import HTTPServer

import fanout
from fanout.testing import ProviderHarness

#: Looks like a real project key; every secrecy test searches for it.
API_KEY = "phc_TESTsecretPROJECTkey0123456789abcdefXYZ"


def harness(server: HTTPServer, **kwargs: Any) -> ProviderHarness:
    """The ``posthog`` provider in a real client, aimed at ``server``."""
    options: dict[str, Any] = {
        "plugins": [fanout_posthog],
        "settings": {"api_key": API_KEY},
        # Retries in tests should not idle; the backoff schedule itself is the core's.
        "delivery": {"posthog": {"retry_base": 0.05, "retry_cap": 0.2}},
    }
    options.update(kwargs)
    return ProviderHarness(server, "posthog", **options)


def make_client(
    server: HTTPServer, *, settings: dict[str, Any] | None = None, **kwargs: Any
) -> fanout.Client:
    """A real fanout client whose only provider is ``posthog``, aimed at ``server``."""
    return harness(server).client(settings=settings, **kwargs)
