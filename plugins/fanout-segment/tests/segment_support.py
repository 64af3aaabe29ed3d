"""Helpers shared by the tests (a uniquely named module, so that several plugins' test
directories can run in one pytest session without their helpers colliding).

The local server, the client aimed at it and the decoding of what it received come from
:mod:`fanout.testing`; only what is Segment's lives here.
"""

from __future__ import annotations

from typing import Any

import fanout_segment
from pytest_httpserver import HTTPServer

import fanout
from fanout.testing import ProviderHarness

#: Looks like a real write key; every secrecy test searches for it and its base64 form.
WRITE_KEY = "wk_Zq8TESTsecretWRITEkey0123456789"


def harness(server: HTTPServer, **kwargs: Any) -> ProviderHarness:
    """The ``segment`` provider in a real client, aimed at ``server``."""
    return ProviderHarness(
        server, "segment", plugins=[fanout_segment], settings={"write_key": WRITE_KEY}, **kwargs
    )


def make_client(server: HTTPServer, **kwargs: Any) -> fanout.Client:
    """A real fanout client whose only provider is ``segment``, aimed at ``server``."""
    return harness(server).client(**kwargs)
