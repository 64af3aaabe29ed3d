"""End to end: every installed vendor plugin, plus a local provider, enabled at once.

Each vendor gets its own pytest-httpserver on 127.0.0.1, configured through the vendors' own
environment variables (``SEGMENT_WRITE_KEY``/``SEGMENT_HOST``, ``POSTHOG_API_KEY``/
``POSTHOG_HOST``, ``MIXPANEL_TOKEN``/``MIXPANEL_API_HOST``) and found through the ``fanout``
entry points, as an application would. In each scenario one vendor's server answers 500 to
everything and another's never answers (until the test releases it); the test shows that:

- ``track()`` returned for every call while one provider's request was hanging;
- every other provider received every event exactly once (counted by each vendor's own
  dedupe key: Segment ``messageId``, PostHog ``uuid``, Mixpanel ``$insert_id``);
- ``flush(timeout)`` returns at its deadline, reporting the hung and failing ones pending.

The built-in ``collector`` provider (fanout's own protocol) takes part the same way, on its
own local server (``FANOUT_COLLECTOR_URL``/``FANOUT_COLLECTOR_KEY``, dedupe key ``event_id``),
and an in-memory provider rides along as a backend that is always healthy and keeps order.
The scenarios rotate the roles so each backend is, in turn, the hanging one. Vendors whose
plugin is not installed are left out (named in the skip reason when fewer than two remain).
"""

from __future__ import annotations

import base64
import gzip
import importlib.metadata
import importlib.util
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

import fanout
from fanout.testing import InMemoryProvider

EVENTS = 250


@dataclass(frozen=True)
class Vendor:
    name: str  # provider name = entry-point name
    key_var: str
    host_var: str
    id_key: str  # the vendor's dedupe key inside each event


VENDORS = (
    Vendor("posthog", "POSTHOG_API_KEY", "POSTHOG_HOST", "uuid"),
    Vendor("mixpanel", "MIXPANEL_TOKEN", "MIXPANEL_API_HOST", "$insert_id"),
    Vendor("segment", "SEGMENT_WRITE_KEY", "SEGMENT_HOST", "messageId"),
)


#: fanout's own protocol, built in (when the core ships it): on a local server like the rest.
COLLECTOR = Vendor("collector", "FANOUT_COLLECTOR_KEY", "FANOUT_COLLECTOR_URL", "event_id")


def _installed() -> list[Vendor]:
    names = {ep.name for ep in importlib.metadata.entry_points(group="fanout")}
    found = [v for v in VENDORS if v.name in names]
    if importlib.util.find_spec("fanout.providers.collector") is not None:
        found.append(COLLECTOR)
    return found


INSTALLED = _installed()


def _scenarios() -> list[Any]:
    """(hung, failing) pairs: with three vendors the roles rotate and one is always healthy;
    with two, each also hangs once beside a healthy other (the 500 role then left out)."""
    if len(INSTALLED) < 2:
        present = ", ".join(v.name for v in INSTALLED) or "none"
        return [pytest.param(None, None, marks=pytest.mark.skip(f"vendors installed: {present}"))]
    out = []
    for i, hung in enumerate(INSTALLED):
        failing = INSTALLED[(i + 1) % len(INSTALLED)]
        out.append(
            pytest.param(hung.name, failing.name, id=f"{hung.name}-hangs-{failing.name}-500")
        )
        if len(INSTALLED) == 2:
            out.append(pytest.param(hung.name, None, id=f"{hung.name}-hangs"))
    return out


# -- decoding what each vendor received ----------------------------------------------------


def _json_payloads(request: Request) -> Iterator[Any]:
    """Every JSON document in a request: raw or gzip body, or form fields (Mixpanel's
    ``data=``, JSON or base64 JSON)."""
    data = request.get_data()
    if request.headers.get("Content-Encoding") == "gzip" or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    candidates = [text]
    if "application/x-www-form-urlencoded" in request.headers.get("Content-Type", ""):
        candidates = [v for vs in urllib.parse.parse_qs(text).values() for v in vs]
    for candidate in candidates:
        for decode in (lambda s: s, lambda s: base64.b64decode(s).decode("utf-8")):
            try:
                yield json.loads(decode(candidate))
                break
            except (ValueError, UnicodeDecodeError):
                continue


def _find(doc: Any, key: str) -> Iterator[Any]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == key:
                yield v
            else:
                yield from _find(v, key)
    elif isinstance(doc, list):
        for item in doc:
            yield from _find(item, key)


def _received_ids(server: HTTPServer, vendor: Vendor) -> list[str]:
    """Dedupe keys of every event the vendor's server accepted (answered 2xx)."""
    ids: list[str] = []
    for request, response in server.log:
        if 200 <= response.status_code < 300:
            for doc in _json_payloads(request):
                ids.extend(_find(doc, vendor.id_key))
    return ids


def _settled(client: fanout.Client, names: list[str], bound: float = 30.0) -> Any:
    """Stats once ``names`` have nothing pending, or after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        stats = client.stats()
        if all(stats[n].pending == 0 for n in names) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


# -- the scenario ---------------------------------------------------------------------------


def _collector_reply(request: Request) -> Response:
    batch = json.loads(request.get_data())["batch"]
    body = {"accepted": len(batch), "duplicates": 0, "rejected": []}
    return Response(json.dumps(body), status=200, content_type="application/json")


@pytest.mark.parametrize(("hung_name", "failing_name"), _scenarios())
def test_failing_and_hanging_vendors_cost_the_others_nothing(
    hung_name: str, failing_name: str | None
) -> None:
    release = threading.Event()  # set at the end: lets the hung request finish
    hung_entered = threading.Event()

    def hang(request: Request) -> Response:
        hung_entered.set()
        release.wait(60)
        return Response("{}", status=200)

    servers: dict[str, HTTPServer] = {}
    memory = InMemoryProvider("local")
    client: fanout.Client | None = None
    try:
        env: dict[str, str] = {}
        for vendor in INSTALLED:
            server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
            server.start()
            servers[vendor.name] = server
            if vendor.name == hung_name:
                server.expect_request("").respond_with_handler(hang)
            elif vendor.name == failing_name:
                server.expect_request("").respond_with_data("down for maintenance", status=500)
            elif vendor.name == "collector":  # the collector's own summary, as it answers
                server.expect_request("").respond_with_handler(_collector_reply)
            else:
                server.expect_request("").respond_with_data('{"status": 1}', status=200)
            env[vendor.key_var] = f"e2e-{vendor.name}-key"
            env[vendor.host_var] = f"http://127.0.0.1:{server.port}"
        env["FANOUT_PROVIDERS"] = ",".join(v.name for v in INSTALLED)

        delivery: dict[str, dict[str, Any]] = {hung_name: {"request_timeout": 60.0}}
        if failing_name is not None:
            delivery[failing_name] = {"retry_base": 0.05, "retry_cap": 0.2}
        client = fanout.Client(
            providers=[*(v.name for v in INSTALLED), memory],
            environ=env,
            register_atexit=False,
            delivery=delivery,
        )
        assert set(client.providers) == {v.name for v in INSTALLED} | {"local"}

        # Get the hung provider's worker stuck inside a request first...
        ids = [client.track("e2e.event", person_id="user_0", properties={"n": 0})]
        client.flush(timeout=0.2)
        assert hung_entered.wait(30), "the hung vendor never received its request"
        # ... then every further call must still return while it stays stuck.
        for n in range(1, EVENTS):
            ids.append(client.track("e2e.event", person_id=f"user_{n}", properties={"n": n}))
        assert len(ids) == len(set(ids)) == EVENTS
        assert not release.is_set()

        started = time.monotonic()
        report = client.flush(timeout=3)
        # One deadline for all channels: the hung and the failing vendor (when there is one)
        # with a deadline each would take 6 s. The 2 s margin is for a loaded machine.
        assert time.monotonic() - started < 3 + 2
        assert report.timed_out
        assert report[hung_name].pending > 0 and report[hung_name].delivered == 0
        if failing_name is not None:
            assert report[failing_name].delivered == 0
            assert report[failing_name].pending + report[failing_name].failed == EVENTS
            assert len(servers[failing_name].log) >= 2  # retried, not given up on at once

        healthy = [v for v in INSTALLED if v.name not in (hung_name, failing_name)]
        # On a loaded machine the healthy ones may need longer than the flush deadline;
        # wait for them (bounded), without making their speed part of the assertion.
        report = _settled(client, [v.name for v in healthy] + ["local"])
        for vendor in healthy:
            assert report[vendor.name].delivered == EVENTS, report[vendor.name]
            assert report[vendor.name].pending == 0 and report[vendor.name].failed == 0
            received = _received_ids(servers[vendor.name], vendor)
            assert len(received) == EVENTS and len(set(received)) == EVENTS, vendor.name
        if any(v.name == "segment" for v in healthy):  # event_id is messageId unchanged
            assert set(_received_ids(servers["segment"], VENDORS[2])) == set(ids)
        assert report["local"].delivered == EVENTS
        assert [e.event_id for e in memory.events] == ids  # exactly once, in order
    finally:
        release.set()
        if client is not None:
            client.shutdown(timeout=1)
        for server in servers.values():
            server.clear()
            if server.is_running():
                server.stop()
