"""The examples run: each one's events reach the reference collector (exact counts)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

import fanout

from .conftest import PYTHON, ROOT, app_env, stored

EXAMPLES = ROOT / "examples"


def test_lambda_handler_example_delivers_before_os_exit(collector):
    done = subprocess.run([PYTHON, str(EXAMPLES / "lambda_handler" / "handler.py")],
                          env=app_env(collector, FANOUT_FLUSH_INTERVAL="30"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [(e["event_id"], e["person_id"]) for e in stored(collector)] == [("evt_example_1", "cus_1")]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flask_example(collector, clients):
    client = clients(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    try:
        app = _load(EXAMPLES / "flask_app" / "app.py", "example_flask_app").app
        http = app.test_client()
        assert http.get("/?utm_source=readme", headers={"X-Fanout-Anonymous-Id": "v1"}).status_code == 200
        assert http.post("/orders", headers={"X-User-Id": "u1", "X-Fanout-Anonymous-Id": "v1"}).status_code == 200
        assert client.flush(timeout=10).ok
    finally:
        fanout.set_default_client(previous)
    page, order = stored(collector)
    assert (page["kind"], page["anonymous_id"], page["context"]["campaign"]) == ("page", "v1", {"source": "readme"})
    assert (order["name"], order["person_id"], order["anonymous_id"]) == ("order.placed", "u1", "v1")


def test_fastapi_example_webhook(collector, clients, monkeypatch):
    pytest.importorskip("fastapi", reason="the FastAPI example needs fastapi (pip install fastapi)")
    import asyncio

    import httpx

    from .test_wsgi_flask import _signed

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test_secret")
    client = clients(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    try:
        app = _load(EXAMPLES / "fastapi_stripe" / "app.py", "example_fastapi_app").app
        payload = (b'{"id": "evt_ex", "object": "event", "type": "checkout.session.completed", '
                   b'"data": {"object": {"client_reference_id": "u9", "amount_total": 1, "currency": "eur"}}}')

        async def deliver_twice() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://example") as http:
                return [(await http.post("/stripe/webhook", content=payload,
                                         headers={"Stripe-Signature": _signed(payload)})).status_code
                        for _ in range(2)]

        codes = asyncio.run(deliver_twice())
        assert client.flush(timeout=10).ok
    finally:
        fanout.set_default_client(previous)
    assert codes == [200, 200]
    assert [(e["event_id"], e["person_id"]) for e in stored(collector)] == [("evt_ex", "u9")]


@pytest.mark.parametrize("argv, cwd", [
    ([PYTHON, "manage.py", "check"], "django_app"),
    ([PYTHON, "-c", "import tasks; assert 'tasks.send_welcome_email' in tasks.app.tasks"], "celery_worker"),
])
def test_django_and_celery_examples_load(argv, cwd, collector):
    done = subprocess.run(argv, cwd=EXAMPLES / cwd, env=app_env(collector), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
