"""A Lambda-style handler: ``FANOUT_PROVIDERS=console python examples/lambda_handler/handler.py``.

``flush_after`` delivers before the handler returns, because the runtime may freeze or end
the process right after, without any exit hook (this script ends with ``os._exit`` to show it).
"""

from __future__ import annotations

import os
from typing import Any

import fanout
from fanout.integrations.serverless import flush_after


@flush_after(timeout=2.0)
def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    fanout.track("invoice.paid", person_id=event["customer"], event_id=event["id"],
                 properties={"amount": event["amount"]})
    return {"statusCode": 200}


if __name__ == "__main__":
    print(handler({"id": "evt_example_1", "customer": "cus_1", "amount": 4200}, None), flush=True)
    os._exit(0)  # what a frozen-then-killed function amounts to: no exit hook runs
