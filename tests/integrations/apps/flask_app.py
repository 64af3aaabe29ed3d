"""A Flask app with fanout's helper and a Stripe webhook, run in-process and under gunicorn."""

from __future__ import annotations

import os

import stripe
from flask import Flask, jsonify, request

import fanout
from fanout.integrations.flask import init_app

#: The webhook signing secret (test value; in production it comes from the environment).
WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_test_secret")

app = Flask(__name__)
init_app(app, person_id=lambda: request.headers.get("X-Test-User"))


@app.get("/track")
def track():  # type: ignore[no-untyped-def]
    i = int(request.args["i"])
    return jsonify(event_id=fanout.track("request.handled", properties={"i": i}, event_id=f"req-{i}"))


@app.get("/stream")
def stream():  # type: ignore[no-untyped-def]
    def body():  # runs after the view returned: the middleware keeps the context open
        for i in range(3):
            fanout.track("chunk.sent", properties={"i": i})
            yield f"{i}\n"

    return app.response_class(body(), mimetype="text/plain")


@app.get("/health")
def health():  # type: ignore[no-untyped-def]
    return "ok"


@app.post("/stripe/webhook")
def stripe_webhook():  # type: ignore[no-untyped-def]
    try:
        event = stripe.Webhook.construct_event(
            request.get_data(), request.headers.get("Stripe-Signature", ""), WEBHOOK_SECRET
        )
    except (ValueError, stripe.SignatureVerificationError):
        return "bad signature", 400
    session = event["data"]["object"]
    # Stripe's event id as fanout's event id: a redelivery is the same event, stored once.
    fanout.track(
        "checkout.completed",
        person_id=session["client_reference_id"],
        properties={"amount_total": session["amount_total"], "currency": session["currency"]},
        event_id=event["id"],
    )
    return "", 204
