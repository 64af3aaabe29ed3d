"""Fork, interpreter exit and sync mode, with a real fork and real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from werkzeug import Request, Response

import fanout


def _collecting_server(httpserver):
    """A local backend that records the event ids it receives (one list per request)."""
    received: list[list[str]] = []
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        body = json.loads(request.get_data())
        with lock:
            received.append([e["event_id"] for e in body])
        return Response("{}", status=200)

    httpserver.expect_request("/batch").respond_with_handler(handler)
    return received


HTTP_PLUGIN = textwrap.dedent(
    """
    import fanout
    from fanout.http import HttpSender, encode_json, raise_for_status

    class Poster:
        def __init__(self, config):
            self.url = config.settings["url"]
            self.http = HttpSender(timeout=5)
        def send(self, batch):
            raise_for_status(self.http.post(self.url, encode_json([e.to_dict() for e in batch])))
        def close(self):
            self.http.close()
        def after_fork(self):
            self.http.after_fork()

    @fanout.hookimpl
    def register_providers(register):
        register("poster", Poster, settings=[fanout.Setting("url", required=True)])
    """
)


@pytest.fixture
def poster_plugin(tmp_path, monkeypatch):
    (tmp_path / "poster_plugin.py").write_text(HTTP_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import poster_plugin

    importlib.reload(poster_plugin)
    return poster_plugin, tmp_path


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_works_and_parent_events_are_not_sent_twice(
    httpserver, poster_plugin, make_client
):
    received = _collecting_server(httpserver)
    plugin, _ = poster_plugin
    client = make_client(
        providers=["poster"],
        plugins=[plugin],
        settings={"poster": {"url": httpserver.url_for("/batch")}},
        flush_interval=30,  # nothing leaves the parent's queue before the fork
        batch_size=1000,
    )
    parent_ids = [client.track("parent", person_id="p") for _ in range(5)]
    assert client.stats()["poster"].pending == 5
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            child_id = client.track("child", person_id="c")
            report = client.flush(timeout=10)
            r = report["poster"]
            code = 0 if (r.delivered, r.pending) == (1, 0) and child_id else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    report = client.flush(timeout=10)
    assert report["poster"].delivered == 5
    flat = [i for req in received for i in req]
    assert len(flat) == len(set(flat))  # no id twice
    assert set(parent_ids) <= set(flat)
    assert len(flat) == 6  # 5 from the parent, 1 from the child, none duplicated


def _run(code: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        **env,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_tracked_just_before_exit_are_delivered(httpserver, poster_plugin, tmp_path):
    received = _collecting_server(httpserver)
    proc = _run(
        """
        import fanout, poster_plugin
        c = fanout.Client(plugins=[poster_plugin], load_entry_points=False, flush_interval=60)
        for i in range(1010):
            c.track("exit", person_id="u", properties={"i": i})
        print("tracked")
        """,
        {
            "FANOUT_PROVIDERS": "poster",
            "FANOUT_POSTER_URL": httpserver.url_for("/batch"),
            "FANOUT_SHUTDOWN_TIMEOUT": "20",
        },
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sum(len(r) for r in received) == 1010


def test_exit_is_bounded_by_shutdown_timeout_when_backend_hangs(tmp_path):
    """A backend that never answers cannot hold the process at exit past the timeout."""
    proc = _run(
        """
        import threading, time, fanout
        class Hang:
            name = "hang"
            def send(self, batch):
                threading.Event().wait(600)
            def close(self): pass
        c = fanout.Client(providers=[Hang()], load_entry_points=False, environ={"FANOUT_SHUTDOWN_TIMEOUT": "1"})
        for i in range(10):
            c.track("x", person_id="u")
        c.flush(0.5)
        print("exiting")
        """,
        {},
        tmp_path,
    )
    assert proc.returncode == 0
    assert "exiting" in proc.stdout
    assert "not everything was delivered" in proc.stderr


def test_default_client_from_environment_and_module_functions(httpserver, poster_plugin, tmp_path):
    received = _collecting_server(httpserver)
    proc = _run(
        """
        import fanout, poster_plugin
        from fanout._default import set_default_client
        fanout.track("a", person_id="u")
        c = fanout.get_default_client()
        print(c.providers)
        fanout.identify("u", traits={"x": 1})
        fanout.page("/p", person_id="u")
        fanout.alias("u", "anon")
        fanout.group("company", "acme", person_id="u")
        print(fanout.flush(5)["null"].delivered)
        print(fanout.shutdown(5).ok)
        """,
        {"FANOUT_PROVIDERS": ""},
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['null']", "5", "True"]
    assert received == []


def test_sync_mode_sends_before_returning_and_isolates(make_client, memory, httpserver):
    from _helpers import RaisingProvider

    received = _collecting_server(httpserver)
    from test_isolation import HttpProvider

    http = HttpProvider("http", httpserver.url_for("/batch"))
    raising = RaisingProvider()
    client = make_client(providers=[raising, http, memory], sync=True, max_retries=0)
    client.track("now", person_id="u")
    # delivered before track() returned: no flush, no worker thread
    assert memory.names() == ["now"]
    assert len(received) == 1
    assert all(ch._thread is None for ch in client._channels)
    assert client.stats()["raising"].failed == 1


def test_client_context_manager_and_reopen(make_client, memory):
    with make_client(providers=[memory]) as client:
        client.track("x", person_id="u")
    assert client.state.value == "closed"
    assert memory.names() == ["x"] and memory.closed
    with pytest.raises(RuntimeError, match="shut down"):
        with client:
            pass


def test_testing_fixture_captures_default_client(fanout_events):
    fanout.track("checkout.finished", person_id="u", properties={"amount": 100})
    assert fanout_events.names() == ["checkout.finished"]
    assert fanout_events.events[0].properties["amount"] == 100
