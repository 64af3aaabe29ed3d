"""A Celery worker with fanout (needs Redis on localhost:6379):

    FANOUT_PROVIDERS=console celery -A tasks worker --max-tasks-per-child 10
    python tasks.py          # enqueue one task inside a request-like context
"""

from __future__ import annotations

import os

from celery import Celery

import fanout
from fanout.integrations.celery import setup

app = Celery("tasks", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))
# Context in task headers; each prefork child flushes before it exits.
setup(app)


@app.task
def send_welcome_email(user_id: str) -> None:
    # the enqueuing request's anonymous id, ip, ... come with the task
    fanout.track("welcome_email.sent", person_id=user_id)


if __name__ == "__main__":
    with fanout.context(anonymous_id="visitor-1", ip="203.0.113.5"):
        send_welcome_email.delay("user_1")
