"""fanout.testing's helpers for plugin authors, against a real local server."""

from __future__ import annotations

import gzip
import json
import socket

import httpx
import pytest

from fanout.providers.collector import CollectorProvider
from fanout.testing import ProviderHarness, recorded, recording_server, server_url


def test_recorded_requests_are_decoded() -> None:
    with recording_server() as server:
        server.expect_request("/json").respond_with_json({})
        server.expect_request("/form").respond_with_data("nope", status=400)
        base = server_url(server)
        assert base.startswith("http://127.0.0.1:")
        body = json.dumps({"batch": [1, 2]}).encode()
        httpx.post(
            f"{base}/json?strict=1",
            content=gzip.compress(body),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
            auth=("user", ""),
        )
        httpx.post(f"{base}/form", data={"data": '[{"a": 1}]', "verbose": "1"})
        as_json, as_form = recorded(server)
        assert recorded(server, "/form") == [as_form]
        port = server.port
    assert (as_json.method, as_json.path, as_json.status) == ("POST", "/json", 200)
    assert as_json.gzip and as_json.body == body
    assert as_json.json() == as_json.data() == {"batch": [1, 2]}
    assert as_json.params == {"strict": "1"}
    assert as_json.basic_auth == ("user", "")
    assert (as_form.status, as_form.gzip, as_form.basic_auth) == (400, False, None)
    assert as_form.content_type == "application/x-www-form-urlencoded"
    assert as_form.form() == as_form.data() == {"data": '[{"a": 1}]', "verbose": "1"}
    with socket.socket() as probe:  # the server is stopped: its port is free again
        probe.bind(("127.0.0.1", port))


def test_harness_runs_a_provider_through_a_real_client(httpserver) -> None:
    """The built-in collector provider, as a plugin author would test theirs."""
    httpserver.expect_request("/v1/batch").respond_with_json({"accepted": 2})
    plugin = _collector_plugin()
    harness = ProviderHarness(
        httpserver, "collector-under-test", plugins=[plugin], url_setting="url",
        settings={"key": "sk_harness"},
    )
    run = harness.run(
        lambda client: [client.track("a", person_id="u1"), client.track("b", person_id="u2")]
    )
    report = run.report["collector-under-test"]
    assert (report.delivered, report.failed, report.dropped, report.pending) == (2, 0, 0, 0)
    assert run.at("/v1/batch") == run.requests == harness.requests("/v1/batch")
    names = [e["name"] for r in run.requests for e in r.json()["batch"]]
    assert sorted(names) == ["a", "b"]
    assert {r.headers["Authorization"] for r in run.requests} == {"Bearer sk_harness"}
    assert "sk_harness" not in repr(harness)


def test_harness_close_shuts_down_the_clients_it_built(httpserver) -> None:
    with ProviderHarness(
        httpserver, "collector-under-test", plugins=[_collector_plugin()], url_setting="url",
        settings={"key": "sk_harness"},
    ) as harness:
        client = harness.client()
    with pytest.raises(RuntimeError):
        with client:  # a shut-down client cannot be reopened
            pass


def _collector_plugin() -> object:
    import fanout

    class Plugin:
        @fanout.hookimpl
        def register_providers(self, register: fanout.provider.RegisterProvider) -> None:
            register(
                "collector-under-test",
                CollectorProvider.from_config,
                settings=[fanout.Setting("url", required=True), fanout.Setting("key")],
            )

    return Plugin()
