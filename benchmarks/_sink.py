"""A do-nothing HTTP sink for benchmarks, in its own process so it costs the measured
process nothing: reads each body, answers 200 with one JSON reply that every provider here
and the Mixpanel and Amplitude SDKs read as success (the sink counts nothing).

    with Sink() as url: ...        # starts ``python _sink.py PORT``, stops it on exit
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per request

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        # One answer every provider takes as success: Mixpanel's and PostHog's status, the
        # collector's summary (accepted must be a number), Segment's success flag, Amplitude's
        # code (its SDK reads it).
        body = (
            b'{"status": 1, "success": true, "accepted": 0, "duplicates": 0, "rejected": [],'
            b' "code": 200}'
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


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Handler)
    server.daemon_threads = True
    server.serve_forever()
