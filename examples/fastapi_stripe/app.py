"""FastAPI with fanout: request context from the middleware, an idempotent Stripe webhook.

    FANOUT_PROVIDERS=console STRIPE_WEBHOOK_SECRET=whsec_... uvicorn examples.fastapi_stripe.app:app
"""

from __future__ import annotations

import os

import stripe
from fastapi import FastAPI, Header, HTTPException, Request

import fanout
from fanout.integrations.asgi import FanoutMiddleware

app = FastAPI()
# Request context in; flush within FANOUT_SHUTDOWN_TIMEOUT on uvicorn's lifespan shutdown.
app.add_middleware(FanoutMiddleware)


@app.get("/")
def home() -> dict[str, str]:
    # anonymous_id, ip, user agent, url, referrer and utm_* come from the request context;
    # a first-time visitor with no id gets a generated one, never an error.
    fanout.page("/")
    return {"hello": "world"}


@app.post("/signup")
def signup(email_domain: str) -> dict[str, str]:
    user_id = f"user_{abs(hash(email_domain)) % 10_000}"
    # Inside the request context, identify links the browser's anonymous id to the user.
    fanout.identify(user_id, traits={"email_domain": email_domain})
    fanout.track("signup.finished", person_id=user_id)
    return {"user_id": user_id}


@app.post("/stripe/webhook")
async def stripe_webhook(request: Request, stripe_signature: str = Header("")) -> dict[str, bool]:
    try:
        event = stripe.Webhook.construct_event(
            await request.body(), stripe_signature, os.environ["STRIPE_WEBHOOK_SECRET"]
        )
    except (ValueError, stripe.SignatureVerificationError):
        raise HTTPException(status_code=400, detail="bad signature") from None
    if event["type"] == "checkout.session.completed":
        session = event["data"]["object"]
        # Stripe's event id as fanout's event id: a redelivered webhook is stored once.
        fanout.track(
            "checkout.completed",
            person_id=session["client_reference_id"],
            properties={"amount_total": session["amount_total"], "currency": session["currency"]},
            event_id=event["id"],
        )
    return {"received": True}
