"""A do-nothing HTTP sink for benchmarks, in its own process so it costs the measured
process nothing: reads each body, answers 200 with one JSON reply that every provider here
and the Mixpanel and Amplitude SDKs read as success.

    with Sink() as url: ...        # starts ``python _sink.py PORT``, stops it on exit

``GET /_stats`` answers the requests and body bytes received so far (a check that the
measured process really sent something, and how it batched), and :func:`fanout_client`
builds the fanout clients the app-latency and CPU benchmarks compare: 1, 4 or 8 providers
(the vendor plugins, the collector, and second instances of each) pointed at one sink.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_counts = {"requests": 0, "bytes": 0}
_counts_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per request

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.command == "GET" and self.path == "/_stats":
            with _counts_lock:
                body = json.dumps(_counts).encode()
        else:
            if self.command == "POST":
                with _counts_lock:
                    _counts["requests"] += 1
                    _counts["bytes"] += length
            # One answer every provider takes as success: Mixpanel's and PostHog's status,
            # the collector's summary (accepted must be a number), Segment's success flag,
            # Amplitude's code (its SDK reads it).
            body = (
                b'{"status": 1, "success": true, "accepted": 0, "duplicates": 0,'
                b' "rejected": [], "code": 200}'
            )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


class Sink:
    """``with Sink() as url:`` a local sink process on 127.0.0.1, terminated on exit."""

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1).read()
                return url
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("benchmark sink did not start") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def sink_stats(url: str) -> dict[str, int]:
    """Requests and body bytes the sink at ``url`` has received so far."""
    with urllib.request.urlopen(url + "/_stats", timeout=10) as response:
        data: dict[str, int] = json.loads(response.read())
    return data


#: The provider sets compared by the app-latency and CPU benchmarks. ``posthog:2`` and the
#: like are second named instances (another project, another write key), which is how a
#: team reaches eight backends; each has its own channel like any other provider.
FOUR = ("posthog", "segment", "mixpanel", "collector")
PROVIDER_SETS: dict[int, tuple[str, ...]] = {
    1: ("posthog",),
    4: FOUR,
    8: FOUR + tuple(f"{name}:2" for name in FOUR),
}


def sink_environ(url: str) -> dict[str, str]:
    """Every provider's settings, and its second instance's, pointed at the sink at ``url``
    (keys are placeholders)."""
    return {
        "POSTHOG_API_KEY": "phc_bench",
        "POSTHOG_HOST": url,
        "MIXPANEL_TOKEN": "mp_bench",
        "MIXPANEL_API_HOST": url,
        "SEGMENT_WRITE_KEY": "seg_bench",
        "SEGMENT_HOST": url,
        "FANOUT_COLLECTOR_URL": url,
        "FANOUT_COLLECTOR_KEY": "sk_bench",
        "FANOUT_POSTHOG_2_API_KEY": "phc_bench2",
        "FANOUT_POSTHOG_2_HOST": url,
        "FANOUT_MIXPANEL_2_TOKEN": "mp_bench2",
        "FANOUT_MIXPANEL_2_API_HOST": url,
        "FANOUT_SEGMENT_2_WRITE_KEY": "seg_bench2",
        "FANOUT_SEGMENT_2_HOST": url,
        "FANOUT_COLLECTOR_2_URL": url,
        "FANOUT_COLLECTOR_2_KEY": "sk_bench2",
    }


def fanout_client(url: str, names: Sequence[str], **options: Any) -> Any:
    """A fanout client delivering to ``names`` (see :data:`PROVIDER_SETS`) at the sink."""
    import fanout

    return fanout.Client(
        providers=list(names), environ=sink_environ(url), register_atexit=False, **options
    )


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler)
    server.daemon_threads = True
    server.serve_forever()
