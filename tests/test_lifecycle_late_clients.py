"""Clients built once the process has begun to exit, in real processes (docs/lifecycle.md).

Python never runs an ``atexit`` callback registered while the callbacks run, and fanout's
exit hook shuts down the clients it knows of once. A client built after that (the default
client first used by an ``atexit`` handler, a new ``Client`` in a handler that runs after
fanout's hook) has no hook left to send its queue: it delivers each call before returning.

Each test runs an app that ends normally, sending to a real reference collector (in this
process, on 127.0.0.1), with a 60 s flush interval so only the exit path can deliver. The
app writes each event id it got to a file; the collector must store exactly those.
Also the helpers of ``test_lifecycle_forkserver.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.collector.app import AppOptions
from fanout.collector.keys import INGEST
from fanout.collector.protocol import Limits
from fanout.collector.server import ServerThread
from fanout.collector.sqlite import SQLiteStore

#: Imported by the apps: ``T()`` tracks and writes the id to $SENT_FILE (append mode, one
#: line each, so every process of an app adds its own); ``record()`` for the other calls.
COMMON = '''
import os
import fanout

_sent = None


def record(event_id):
    global _sent
    if _sent is None or _sent[0] != os.getpid():
        _sent = (os.getpid(), open(os.environ["SENT_FILE"], "a", buffering=1))
    _sent[1].write(event_id + "\\n")
    return event_id


def T(name="ev", client=None, **kwargs):
    kwargs.setdefault("person_id", f"p{os.getpid()}")
    return record((client or fanout).track(name, **kwargs))
'''


@dataclasses.dataclass
class Reference:
    url: str
    key: str
    store: SQLiteStore

    def stored(self, expected: int, wait: float = 10.0) -> list[str]:
        """The stored event ids, once there are ``expected`` of them (or ``wait`` passed)."""
        deadline = time.monotonic() + wait
        while True:
            ids = self.store.event_ids()
            if len(ids) >= expected or time.monotonic() > deadline:
                return ids
            time.sleep(0.05)


@contextlib.contextmanager
def reference_collector(directory: Path) -> Iterator[Reference]:
    """The reference collector in a thread of this process, as ``start_collector`` runs it."""
    store = SQLiteStore(directory / "collector.db")
    store.create_project("tests")
    _, key = store.create_key("tests", (INGEST,), "tests-ingest")
    server = ServerThread(
        store, limiter=store.limiter(None, None), options=AppOptions(limits=Limits())
    )
    server.start()
    try:
        yield Reference(server.url, key, store)
    finally:
        server.stop()
        store.close()


@dataclasses.dataclass
class AppRun:
    returncode: int
    stdout: str
    stderr: str
    sent: list[str]
    elapsed: float


def run_app(
    reference: Reference,
    directory: Path,
    script: str,
    *,
    files: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> AppRun:
    """Run ``script`` as ``app.py`` in ``directory`` (its cwd: nothing in the way of
    PYTHONPATH), with the default client configured for ``reference``."""
    (directory / "lc_common.py").write_text(COMMON)
    for name, text in (files or {}).items():
        (directory / name).write_text(textwrap.dedent(text))
    (directory / "app.py").write_text(textwrap.dedent(script))
    sent = directory / "sent.txt"
    sent.write_text("")
    full_env = {
        **os.environ,
        "FANOUT_PROVIDERS": "collector",
        "FANOUT_COLLECTOR_URL": reference.url,
        "FANOUT_COLLECTOR_KEY": reference.key,
        "FANOUT_FLUSH_INTERVAL": "60",  # only the exit path delivers
        "FANOUT_SHUTDOWN_TIMEOUT": "10",
        "SENT_FILE": str(sent),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p
        ),
        **(env or {}),
    }
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(directory / "app.py")],
        cwd=directory,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.monotonic() - started
    return AppRun(proc.returncode, proc.stdout, proc.stderr, sent.read_text().split(), elapsed)


def assert_stored_exactly(reference: Reference, run: AppRun, expected: int) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert len(run.sent) == expected, (len(run.sent), run.stdout, run.stderr)
    stored = reference.stored(expected)
    assert len(stored) == len(set(stored))
    missing = set(run.sent) - set(stored)
    assert not missing, f"{len(missing)} of {expected} events lost\n{run.stderr}"
    assert sorted(stored) == sorted(run.sent)


@pytest.fixture
def reference(tmp_path: Path) -> Iterator[Reference]:
    with reference_collector(tmp_path) as ref:
        yield ref


def test_an_atexit_handler_that_is_fanouts_first_user_delivers(reference, tmp_path):
    """fanout's own exit hook was never installed before exit began: the default client
    the handler builds would register one that Python never runs."""
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, fanout
        from lc_common import T, record

        def late():
            for i in range(30):
                T("from_atexit", properties={"i": i})
            T("routed", providers=["collector"])
            record(fanout.identify("u1", traits={"plan": "pro"}))
            record(fanout.page("/bye", person_id="u1"))
            record(fanout.group("company", "acme", person_id="u1"))

        atexit.register(late)
        print("nothing tracked before exit")
        """,
    )
    assert_stored_exactly(reference, run, 34)


@pytest.mark.parametrize("mode", ["thread delivery", "process delivery", "spool"])
def test_the_default_client_first_built_after_fanouts_hook_delivers(reference, tmp_path, mode):
    """An app Client installed fanout's hook; a handler registered before it runs after it
    and builds the default client: nothing would ever shut that one down. Built late, a
    client delivers in the caller's thread whatever FANOUT_DELIVERY and the spool say."""
    env = {
        "thread delivery": {},
        "process delivery": {"FANOUT_DELIVERY": "process"},
        "spool": {"FANOUT_SPOOL_DIR": str(tmp_path / "spool")},
    }[mode]
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, fanout
        from lc_common import T

        def late():
            for i in range(50):
                T("from_atexit")

        atexit.register(late)  # before fanout's hook: runs after it
        app_client = fanout.Client()
        for i in range(100):
            T(client=app_client)
        """,
        env=env,
    )
    assert_stored_exactly(reference, run, 150)


def test_new_clients_built_in_a_handler_after_fanouts_hook_deliver(reference, tmp_path):
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, fanout
        from lc_common import T

        def late():
            registered = fanout.Client()
            for i in range(20):
                T("registered", client=registered)
            unregistered = fanout.Client(register_atexit=False)  # shut down by nobody
            for i in range(20):
                T("unregistered", client=unregistered, providers=["collector"])
            with fanout.Client() as scoped:
                for i in range(20):
                    T("scoped", client=scoped)
            print(registered.stats()["collector"].pending, unregistered.stats().ok)

        atexit.register(late)
        T("before exit")
        """,
    )
    assert_stored_exactly(reference, run, 61)
    assert run.stdout.split() == ["0", "True"]  # nothing left queued, nothing lost


def test_a_handler_that_runs_before_fanouts_hook_is_delivered_by_the_hook(reference, tmp_path):
    """Registered after fanout's first use, the handler runs first: the hook sends it all."""
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit
        from lc_common import T

        def late():
            for i in range(50):
                T("from_atexit")

        for i in range(100):
            T()
        atexit.register(late)
        """,
    )
    assert_stored_exactly(reference, run, 150)


def test_a_client_the_hook_shut_down_counts_later_calls_closed_and_warns(reference, tmp_path):
    """The documented row: a handler that runs after fanout's hook, on a client that existed
    before, finds it shut down; its events are counted ``closed``, with a warning."""
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, fanout
        from lc_common import T

        def late():
            for i in range(50):
                fanout.track("after_shutdown", person_id="u")  # not in the sent file
            print(fanout.get_default_client().stats()["collector"].losses)

        atexit.register(late)
        for i in range(100):
            T()
        """,
    )
    assert_stored_exactly(reference, run, 100)
    assert run.stdout.strip() == "{'closed': 50}"
    assert "events tracked after shutdown are dropped" in run.stderr
    time.sleep(0.3)
    assert len(reference.store.event_ids()) == 100


def test_a_late_client_delivers_where_no_thread_can_start(reference, tmp_path):
    """Python 3.12.0-3.12.2 refuse new threads once exit has begun (no worker, no parallel
    sync senders): the late client sends to its providers one after another."""
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, threading, fanout
        from lc_common import T

        class Recorder:
            name = "recorder"
            def __init__(self):
                self.ids = []
            def send(self, batch):
                self.ids.extend(e.event_id for e in batch)
            def close(self):
                pass

        def refuse(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")

        def late():
            threading.Thread.start = refuse
            recorder = Recorder()
            client = fanout.Client(providers=["collector", recorder])
            sent = [T("no_threads", client=client) for i in range(30)]
            print(sorted(recorder.ids) == sorted(sent), len(recorder.ids))

        atexit.register(late)
        """,
    )
    assert_stored_exactly(reference, run, 30)
    assert run.stdout.split() == ["True", "30"]


def test_a_hung_backend_holds_a_late_client_up_once_and_the_others_still_deliver(
    reference, tmp_path
):
    """Each call waits at most FANOUT_SHUTDOWN_TIMEOUT; a provider that did not make it is
    not waited for again (its events are dead-lettered and counted at once)."""
    run = run_app(
        reference,
        tmp_path,
        """
        import atexit, threading, time, fanout
        from lc_common import T

        class Hang:
            name = "hang"
            def send(self, batch):
                threading.Event().wait(600)
            def close(self):
                pass

        def late():
            client = fanout.Client(providers=["collector", Hang()])
            started = time.monotonic()
            for i in range(20):
                T("late", client=client)
            stats = client.stats()
            print(time.monotonic() - started, stats["hang"].losses.get("sync_timeout"),
                  stats["hang"].failed, stats["collector"].delivered)

        atexit.register(late)
        """,
        env={"FANOUT_SHUTDOWN_TIMEOUT": "2"},
    )
    assert_stored_exactly(reference, run, 20)
    seconds, timed_out, failed, delivered = run.stdout.split()
    assert float(seconds) < 4, run.stdout  # one timeout of 2 s, not one per call
    assert (int(timed_out), int(failed), int(delivered)) == (20, 20, 20)
    assert run.elapsed < 15


def test_a_client_built_on_a_thread_outliving_the_main_thread_is_an_ordinary_one(
    reference, tmp_path
):
    """The main thread has ended (and is no longer alive) while non-daemon threads run,
    but exit callbacks have not started: such a client queues, and the hook sends it."""
    run = run_app(
        reference,
        tmp_path,
        """
        import threading, time, fanout
        from lc_common import T

        clients = []  # kept: the exit hook holds clients weakly

        def worker():
            time.sleep(0.3)
            assert not threading.main_thread().is_alive()
            client = fanout.Client()
            clients.append(client)
            for i in range(40):
                T("worker", client=client)
            print(client.stats()["collector"].pending, flush=True)

        threading.Thread(target=worker).start()
        """,
    )
    assert_stored_exactly(reference, run, 40)
    assert run.stdout.strip() == "40"  # queued, not sent one by one
