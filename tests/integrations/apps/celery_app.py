"""A Celery app with fanout's integration, run by the tests as a real prefork worker."""

from __future__ import annotations

import os

from celery import Celery

import fanout
from fanout.integrations.celery import setup


def make_app(broker: str) -> Celery:
    app = Celery("celery_app", broker=broker, backend=broker)
    app.conf.update(
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    setup(app)

    @app.task(name="record")
    def record(i: int) -> str:
        return fanout.track("task.ran", properties={"i": i}, event_id=f"task-{i}")

    return app


app = make_app(os.environ.get("CELERY_TEST_BROKER", "memory://"))
