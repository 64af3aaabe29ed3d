"""``flush_after`` in a handler process that ends with ``os._exit`` (no exit hook runs).

``FANOUT_FLUSH_INTERVAL=30`` keeps every event queued until something flushes it, so what
the collector stores is exactly what ``flush_after`` delivered before the process died.
"""

from __future__ import annotations

import subprocess
import textwrap

import pytest

from .conftest import PYTHON, app_env, stored

EVENTS = 20

HANDLERS = {
    "decorator": """
        @flush_after
        def handler(event, context):
            work(event)
            return {"ok": True}

        handler({"id": "h"}, None)
    """,
    "decorator-with-timeout": """
        @flush_after(timeout=10)
        def handler(event, context):
            work(event)

        handler({"id": "h"}, None)
    """,
    "decorator-raising": """
        @flush_after
        def handler(event, context):
            work(event)
            raise RuntimeError("the handler failed after tracking")

        try:
            handler({"id": "h"}, None)
        except RuntimeError:
            pass
    """,
    "async-decorator": """
        @flush_after
        async def handler(event, context):
            await asyncio.sleep(0)
            work(event)

        asyncio.run(handler({"id": "h"}, None))
    """,
    "context-manager": """
        with flush_after():
            work({"id": "h"})
    """,
    "async-context-manager": """
        async def main():
            async with flush_after(timeout=10):
                work({"id": "h"})

        asyncio.run(main())
    """,
    "no-flush (control: what os._exit costs)": """
        work({"id": "h"})
    """,
}

PRELUDE = f"""
import asyncio, os
import fanout
from fanout.integrations.serverless import flush_after

def work(event):
    for i in range({EVENTS}):
        fanout.track("handler.ran", person_id="user-1", event_id=f"{{event['id']}}-{{i}}")
"""


@pytest.mark.parametrize("variant", list(HANDLERS))
def test_handler_ending_in_os_exit(collector, variant):
    script = PRELUDE + textwrap.dedent(HANDLERS[variant]) + "\nos._exit(0)\n"
    env = app_env(collector, FANOUT_FLUSH_INTERVAL="30")
    done = subprocess.run([PYTHON, "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    expected = 0 if variant.startswith("no-flush") else EVENTS
    ids = sorted(e["event_id"] for e in stored(collector))
    assert ids == sorted(f"h-{i}" for i in range(expected)), done.stderr
