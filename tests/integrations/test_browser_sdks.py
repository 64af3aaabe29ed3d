"""Real browser SDKs in headless Chromium: the event fanout stores carries the id they report.

Each SDK (npm packages, installed by ``npm ci`` in ``tests/integrations/browser``) is loaded
by a local page, with its network calls pointed at a local sink. The page asks the SDK for
its ids (``posthog.get_distinct_id()``, ``analytics.user().anonymousId()``...), then calls
an app route behind fanout's ASGI middleware with its cookies; the collector must store
that request's event with the SDK's own anonymous id (and session id, where it has one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import fanout
from fanout.integrations.asgi import FanoutMiddleware

from .conftest import free_port, stored

BROWSER_DIR = Path(__file__).parent / "browser"
MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (apt-get install nodejs npm; .ci/run does)"),
    pytest.mark.skipif(not (MODULES / "puppeteer-core").is_dir(),
                       reason="the browser SDKs are not installed (npm ci --prefix tests/integrations/browser; .ci/run does)"),
]

# What each page runs: init the SDK against the local sink, then report its ids.
SDKS = {
    "posthog": ("posthog-js/dist/array.full.no-external.js", """
        posthog.init("phc_fanouttest", {api_host: location.origin + "/sink/posthog",
            autocapture: false, capture_pageview: false, capture_pageleave: false,
            disable_session_recording: true, advanced_disable_flags: true,
            advanced_disable_decide: true, disable_surveys: true, request_batching: false,
            disable_compression: true, opt_out_useragent_filter: true});
        posthog.capture("probe");
        const ids = {anonymous_id: posthog.get_distinct_id(), session_id: posthog.get_session_id()};
    """),
    "segment": ("@segment/analytics-next/dist/umd/index.js", """
        const [analytics] = await AnalyticsNext.AnalyticsBrowser.load({writeKey: "wk_fanouttest",
            cdnSettings: {integrations: {"Segment.io": {apiKey: "wk_fanouttest",
                apiHost: location.host + "/sink/segment/v1", protocol: "http"}}}});
        await analytics.track("probe");
        const ids = {anonymous_id: analytics.user().anonymousId(), session_id: null};
    """),
    "mixpanel": ("mixpanel-browser/dist/mixpanel.umd.js", """
        await new Promise((resolve) => mixpanel.init("mptoken", {api_host: location.origin + "/sink/mixpanel",
            track_pageview: false, autocapture: false, batch_requests: false,
            api_payload_format: "json", loaded: resolve}));
        mixpanel.track("probe");
        const ids = {anonymous_id: mixpanel.get_distinct_id(), session_id: null};
    """),
    "amplitude": ("@amplitude/analytics-browser/lib/scripts/amplitude-min.js", """
        await amplitude.init("0123456789abcdef", {serverUrl: location.origin + "/sink/amplitude",
            defaultTracking: false, autocapture: false, fetchRemoteConfig: false}).promise;
        const ids = {anonymous_id: amplitude.getDeviceId(), session_id: String(amplitude.getSessionId())};
    """),
    "rudderstack": ("@rudderstack/analytics-js/dist/npm/modern/bundled/umd/index.js", """
        const ra = new rudderanalytics.RudderAnalytics();
        await new Promise((resolve) => {
            ra.load("rs_writekey", location.origin + "/sink/rudderstack",
                {configUrl: location.origin + "/sink/rudderstack-config", onLoaded: resolve,
                 loadIntegration: false});
        });
        const ids = {anonymous_id: ra.getAnonymousId(), session_id: String(ra.getSessionId())};
    """),
}

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{sdk}</title>
<script src="/nm/{script}"></script></head><body><script>
(async () => {{
  try {{
    {init}
    const r = await fetch("/api/track?sdk={sdk}", {{credentials: "same-origin"}});
    await new Promise((resolve) => setTimeout(resolve, 300));  // the probe's request
    window.__result = {{...ids, event: await r.json(), cookies: document.cookie,
      page: {{url: location.href, path: location.pathname, referrer: document.referrer,
              user_agent: navigator.userAgent, locale: navigator.language}}}};
  }} catch (e) {{
    window.__result = {{error: String(e && e.stack || e)}};
  }}
}})();
</script></body></html>"""


SINK: list[tuple[str, str, bytes]] = []


def rudder_config(request: Request) -> Response:
    return JSONResponse({
        "isHosted": False,
        "source": {"id": "src_test", "name": "test", "writeKey": "rs_writekey", "workspaceId": "ws_test",
                   "enabled": True, "destinations": [],
                   "config": {"statsCollection": {"errors": {"enabled": False}, "metrics": {"enabled": False}}}},
    })


def build_app() -> FanoutMiddleware:
    async def page(request: Request) -> Response:
        sdk = request.path_params["sdk"]
        script, init = SDKS[sdk]
        return HTMLResponse(PAGE.format(sdk=sdk, script=script, init=init))

    async def sink(request: Request) -> Response:
        body = await request.body()
        if body:
            SINK.append((request.url.path, request.headers.get("content-type", ""), body))
        return JSONResponse({"status": 1, "code": 200})

    async def track(request: Request) -> Response:
        sdk = request.query_params["sdk"]
        event_id = fanout.track("browser.request", properties={"sdk": sdk}, event_id=f"browser-{sdk}")
        return JSONResponse({"event_id": event_id})

    routes = [
        Route("/page/{sdk}", page),
        Route("/api/track", track),
        Route("/sink/rudderstack-config/{rest:path}", rudder_config),
        Route("/sink/{rest:path}", sink, methods=["GET", "POST", "OPTIONS"]),
        Mount("/nm", StaticFiles(directory=MODULES)),
    ]
    return FanoutMiddleware(Starlette(routes=routes))


@pytest.fixture
def site(collector):
    from collector.conftest import collector_client

    client = collector_client(collector.url, collector.key)
    previous = fanout.set_default_client(client)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    yield f"http://localhost:{port}", client
    server.should_exit = True
    thread.join(timeout=20)
    fanout.set_default_client(previous)
    client.shutdown(timeout=10)


def test_stored_events_carry_the_ids_the_browser_sdks_report(site, collector, tmp_path):
    base, client = site
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "driver.mjs"), base, CHROMIUM, str(tmp_path / "profile"), *SDKS],
        capture_output=True, text=True, timeout=240, cwd=BROWSER_DIR,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    assert client.flush(timeout=10).ok
    events = {e["event_id"]: e for e in stored(collector)}
    failures = {sdk: r for sdk, r in results.items() if "error" in r}
    assert not failures, json.dumps(failures, indent=1)[:4000]
    assert len(events) == len(SDKS)  # one request per SDK page, one event each
    for sdk, result in results.items():
        event = events[f"browser-{sdk}"]
        assert result["event"]["event_id"] == f"browser-{sdk}"
        assert result["anonymous_id"], (sdk, result)
        assert event["anonymous_id"] == result["anonymous_id"], (sdk, result["cookies"])
        if result["session_id"] not in (None, "null", "undefined"):
            assert event["context"].get("session_id") == result["session_id"], (sdk, result)


def _sent(path_part: str) -> dict[str, Any]:
    """The probe event a browser SDK sent to the sink, decoded."""
    for path, _ctype, body in SINK:
        if path_part not in path:
            continue
        if body.startswith(b"data="):
            body = unquote_plus(body[5:].decode()).encode()
        data = json.loads(body)
        for item in data if isinstance(data, list) else data.get("batch", [data]):
            if item.get("event") == "probe":
                return dict(item)
    raise AssertionError(f"no probe event reached the sink for {path_part}: {[p for p, _, _ in SINK]}")


def test_provider_mappings_match_what_the_browser_sdks_send(site, tmp_path):
    """Each provider maps the canonical context to the names *and* values the vendor's own
    browser SDK sends for the same page (URL with utm_*, referrer, user agent, locale)."""
    fanout_posthog = pytest.importorskip("fanout_posthog._mapping")
    fanout_segment = pytest.importorskip("fanout_segment.message")
    fanout_mixpanel = pytest.importorskip("fanout_mixpanel._mapping")
    base, _client = site
    SINK.clear()
    sdks = ["posthog", "segment", "mixpanel"]
    done = subprocess.run(
        ["node", str(BROWSER_DIR / "driver.mjs"), base, CHROMIUM, str(tmp_path / "profile"), *sdks],
        capture_output=True, text=True, timeout=240, cwd=BROWSER_DIR,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)
    events = {}
    for sdk in sdks:
        page = results[sdk]["page"]
        assert page["referrer"], "the page needs a referrer to compare"
        canonical = {**page, "campaign": {"source": "news", "medium": "email", "name": "spring"}}
        events[sdk] = fanout.Event.from_dict({
            "kind": "track", "name": "probe", "anonymous_id": "a", "context": canonical})

    ours = fanout_posthog.MessageBuilder(lib="t", lib_version="0").message(events["posthog"])["properties"]
    theirs = _sent("/sink/posthog")["properties"]
    mapped = ["$raw_user_agent", "$current_url", "$host", "$pathname", "$browser_language",
              "$referrer", "$referring_domain", "utm_source", "utm_medium", "utm_campaign"]
    assert {k: ours[k] for k in mapped} == {k: theirs[k] for k in mapped}

    ours = fanout_segment.to_message(events["segment"])["context"]
    theirs = _sent("/sink/segment")["context"]
    ours.pop("library"), theirs["page"].pop("title")  # who sent it; the title is not context
    assert ours == {k: theirs[k] for k in ours}
    assert set(ours) == {"userAgent", "locale", "page", "campaign"}

    ((_, record),) = fanout_mixpanel.to_records(events["mixpanel"], "mptoken")
    ours = {k: v for k, v in record["properties"].items()
            if k.startswith(("$current_url", "$referr", "utm_"))}
    theirs = _sent("/sink/mixpanel")["properties"]
    assert ours == {k: theirs[k] for k in ours}
    assert set(ours) == {"$current_url", "$referrer", "$referring_domain",
                         "utm_source", "utm_medium", "utm_campaign"}
