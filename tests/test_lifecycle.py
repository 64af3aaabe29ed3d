"""Fork, interpreter exit and sync mode, with a real fork and real subprocesses."""

from __future__ import annotations

import json
import os
import signal
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


def test_a_thousand_clients_leave_no_hook_thread_or_socket_behind(tmp_path):
    """One at-fork hook and one exit hook for the process, however many clients it builds."""
    proc = _run(
        """
        import atexit, gc, os, threading
        forks = []
        real = os.register_at_fork
        def counting(**kw):  # count fanout's registrations (the stdlib's random has its own)
            if any(f.__module__.startswith("fanout") for f in kw.values()):
                forks.append(kw)  # (one: before the fork, and after it in the child)
            real(**kw)
        os.register_at_fork = counting
        import fanout
        from fanout import _lifecycle
        from fanout.testing import InMemoryProvider
        def fds():
            return len(os.listdir("/proc/self/fd"))
        before = (atexit._ncallbacks(), threading.active_count(), fds())
        for i in range(1000):
            c = fanout.Client(providers=["null"], load_entry_points=False, environ={})
            if i % 2:  # half of them are used and shut down, half just dropped
                c.track("x", person_id="u")
                c.shutdown(1)
            del c
        for i in range(200):  # with HTTP providers, used and shut down
            with fanout.Client(
                providers=["collector"], load_entry_points=False, sync=True,
                environ={"FANOUT_COLLECTOR_URL": "http://127.0.0.1:9", "FANOUT_COLLECTOR_KEY": "k",
                         "FANOUT_MAX_RETRIES": "0", "FANOUT_REQUEST_TIMEOUT": "0.2"},
            ) as c:
                c.track("x", person_id="u")
        del c
        gc.collect()
        after = (atexit._ncallbacks(), threading.active_count(), fds())
        counts = _lifecycle.hook_counts()
        print(len(forks), after[0] - before[0], after[1] - before[1], after[2] - before[2],
              counts["clients"], counts["fork_aware"])
        """,
        {},
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    forks, atexits, threads, fds, clients, channels = map(int, proc.stdout.split())
    assert (forks, atexits) == (1, 1)
    assert (threads, fds) == (0, 0)
    assert (clients, channels) == (0, 0)  # nothing kept alive by the registry


MP_CHILDREN = {
    "process-fork": """
        ctx = mp.get_context("fork")
        ps = [ctx.Process(target=work, args=(i,)) for i in range(4)]
        [p.start() for p in ps]; [p.join(30) for p in ps]
        assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
        """,
    "process-spawn": """
        ctx = mp.get_context("spawn")
        ps = [ctx.Process(target=work, args=(i,)) for i in range(2)]
        [p.start() for p in ps]; [p.join(60) for p in ps]
        assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
        """,
    "pool-fork": """
        pool = mp.get_context("fork").Pool(2, maxtasksperchild=1)
        pool.map(work, range(4))
        pool.close(); pool.join()
        """,
    "process-pool-executor": """
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as ex:
            list(ex.map(work, range(4)))
        """,
}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("how", sorted(MP_CHILDREN))
def test_multiprocessing_children_deliver_what_they_tracked(
    how, httpserver, poster_plugin, tmp_path
):
    """Children leave through os._exit, after multiprocessing's own finalizers: ours is one.

    The flush interval is 60 s, so nothing is sent before the child exits."""
    received = _collecting_server(httpserver)
    (tmp_path / "mp_work.py").write_text(
        textwrap.dedent(
            """
            import fanout, poster_plugin
            _client = None
            def client():
                global _client
                if _client is None:
                    _client = fanout.Client(plugins=[poster_plugin], load_entry_points=False)
                return _client
            def work(i):
                c = client()
                for j in range(50):
                    c.track("mp", person_id=f"w{i}", properties={"j": j})
                return i
            """
        )
    )
    proc = _run(
        "import multiprocessing as mp\nfrom mp_work import client, work\n"
        "if __name__ == '__main__':\n"
        "    client()  # built in the parent, inherited by forked children\n"
        + textwrap.indent(textwrap.dedent(MP_CHILDREN[how]), "    ")
        + "    print('done')\n",
        {
            "FANOUT_PROVIDERS": "poster",
            "FANOUT_POSTER_URL": httpserver.url_for("/batch"),
            "FANOUT_FLUSH_INTERVAL": "60",
            "FANOUT_SHUTDOWN_TIMEOUT": "10",
        },
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    flat = [i for req in received for i in req]
    children = 2 if how == "process-spawn" else 4
    assert len(flat) == 50 * children
    assert len(set(flat)) == len(flat)


EXIT_PATHS = {
    # name: (how the script ends, signal sent from outside or None, events delivered)
    "normal exit": ("pass", None, 300),
    "sys.exit(3)": ("sys.exit(3)", None, 300),
    "uncaught exception": ("raise RuntimeError('boom')", None, 300),
    "Ctrl-C (SIGINT)": ("wait()", signal.SIGINT, 300),
    "SIGTERM with a handler": (
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); wait()",
        signal.SIGTERM,
        300,
    ),
    "SIGTERM without a handler": ("wait()", signal.SIGTERM, 0),
    "os._exit": ("os._exit(0)", None, 0),
    "kill -9": ("wait()", signal.SIGKILL, 0),
}


@pytest.mark.parametrize("path", list(EXIT_PATHS))
def test_exit_paths_deliver_what_docs_lifecycle_md_says(path, httpserver, poster_plugin, tmp_path):
    """Each row of the exit-path table in docs/lifecycle.md, in a real process.

    The flush interval is 60 s and a batch holds all 300 events, so only the exit hook can
    deliver (with batches of 100, a worker fast enough to send the first full batch before
    the signal arrives made the kill rows racy). The rows that lose the in-memory queue (no
    Python code runs) are what the durable spool is for."""
    how, sig, expected = EXIT_PATHS[path]
    received = _collecting_server(httpserver)
    code = f"""
import os, signal, sys, time, fanout, poster_plugin
c = fanout.Client(plugins=[poster_plugin], load_entry_points=False, flush_interval=60)
for i in range(300):
    c.track("exit", person_id="u", properties={{"i": i}})
def wait():
    print("ready", flush=True)
    time.sleep(30)
{how}
"""
    env = {
        **os.environ,
        "FANOUT_PROVIDERS": "poster",
        "FANOUT_POSTER_URL": httpserver.url_for("/batch"),
        "FANOUT_SHUTDOWN_TIMEOUT": "10",
        "FANOUT_BATCH_SIZE": "500",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if sig is not None:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sum(len(r) for r in received) == expected
