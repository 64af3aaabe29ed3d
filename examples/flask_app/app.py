"""Flask with fanout: ``FANOUT_PROVIDERS=console flask --app examples/flask_app/app.py run``."""

from __future__ import annotations

from flask import Flask, request

import fanout
from fanout.integrations.flask import init_app

app = Flask(__name__)
# person_id: your login system's current user id (Flask-Login: current_user.get_id()).
init_app(app, person_id=lambda: request.headers.get("X-User-Id"))


@app.get("/")
def home() -> dict[str, str]:
    fanout.page(request.path)  # ids, ip, user agent, url, utm_* from the request context
    return {"hello": "world"}


@app.post("/orders")
def order() -> dict[str, str]:
    event_id = fanout.track("order.placed", properties={"items": 2})
    return {"event_id": event_id}
