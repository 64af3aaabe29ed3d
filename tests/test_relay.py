"""Process delivery (FANOUT_DELIVERY=process): a real delivery process, real HTTP backends
on 127.0.0.1, real signals and forks; every event counted where it was stored.

The backends are named instances of the built-in collector provider, each at its own path
of one local HTTP server that records the event ids it stores (and answers like the
collector), so "stored exactly once per provider" is checked id by id.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import fanout
from fanout._relay import MAX_RESTARTS, Relay
from fanout._relay_child import BATCH_SIZE
from fanout._relay_link import PIPE_BYTES

FOUR = ("collector", "collector:b", "collector:c", "collector:d")


class Sink:
    """A threaded local HTTP backend: ``/<name>/v1/batch`` stores the batch's event ids
    under ``<name>``; names in ``hang`` block until :meth:`release`, names in ``refuse``
    answer 400."""

    def __init__(self) -> None:
        self.stored: dict[str, list[str]] = collections.defaultdict(list)
        self.sizes: dict[str, list[int]] = collections.defaultdict(list)  # events a request
        self.hang: set[str] = set()
        self.refuse: set[str] = set()
        self.hanging = 0  # requests held by ``hang`` so far
        self.released = threading.Event()
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                name = self.path.strip("/").split("/")[0]
                if name in sink.hang:
                    with sink.lock:
                        sink.hanging += 1
                    sink.released.wait(60)
                    self.send_response(503)
                    self.end_headers()
                    return
                batch = json.loads(body)["batch"]
                if name in sink.refuse:
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"error":"refused"}')
                    return
                with sink.lock:
                    sink.stored[name].extend(e["event_id"] for e in batch)
                    sink.sizes[name].append(len(batch))
                reply = json.dumps({"accepted": len(batch), "rejected": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def environ(self, names: tuple[str, ...] = FOUR, **extra: str) -> dict[str, str]:
        env = {"FANOUT_DELIVERY": "process", "FANOUT_METRICS": "off", **extra}
        for name in names:
            token = "" if name == "collector" else "_" + name.split(":")[1].upper()
            path = name.replace(":", "-")
            env[f"FANOUT_COLLECTOR{token}_URL"] = f"{self.url}/{path}"
            env[f"FANOUT_COLLECTOR{token}_KEY"] = "sk_test"
        return env

    def ids(self, name: str) -> list[str]:
        with self.lock:
            return list(self.stored[name.replace(":", "-")])

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def _relay(client: fanout.Client) -> Relay:
    relay: Relay = client._channels[0]._relay  # type: ignore[attr-defined]
    return relay


def _gone(pid: int) -> bool:
    """The process has exited (absent, or a zombie not yet reaped by its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_four_providers_each_event_stored_exactly_once(sink: Sink) -> None:
    client = fanout.Client(providers=list(FOUR), environ=sink.environ(), register_atexit=False)
    try:
        assert client.providers == list(FOUR)
        sent = [client.track("order.paid", person_id=f"u{i}", properties={"i": i})
                for i in range(700)]
        sent.append(client.identify("u1", traits={"plan": "pro"}))
        sent.append(client.track("only.b", person_id="u2", providers=["collector:b"]))
        report = client.flush(timeout=30)
        assert not report.timed_out and report.ok
        pid = _relay(client).child_pid()
        assert pid is not None and pid != os.getpid()
        for name in FOUR:
            stored = sink.ids(name)
            expected = sent if name == "collector:b" else sent[:-1]
            assert len(stored) == len(set(stored)) == len(expected)  # no duplicates
            assert set(stored) == set(expected)
            r = report[name]
            assert r.delivered == len(expected) and r.pending == 0 and r.failed == 0
            assert r.skipped == (0 if name == "collector:b" else 1)
            assert r.losses == ({} if name == "collector:b" else {"routed": 1})
            assert client.stats()[name] == r  # stats() reads the same counts
        final = client.shutdown(timeout=10)
        assert final.ok and not final.timed_out
        assert _gone(pid)
    finally:
        client.shutdown(timeout=2)


@pytest.mark.slow  # about 5 s: a 3 s flush deadline and a 1 s shutdown one
def test_flush_and_shutdown_keep_one_deadline_with_a_hung_backend(sink: Sink) -> None:
    names = ("collector", "collector:b")
    env = sink.environ(names, FANOUT_REQUEST_TIMEOUT="60")
    del env["FANOUT_DELIVERY"]  # the keyword argument instead
    client = fanout.Client(
        providers=list(names), environ=env, delivery_mode="process", register_atexit=False
    )
    try:
        # The delivery process is up before the backend hangs (its start is not measured).
        warm = client.track("warm", person_id="u")
        assert client.flush(timeout=30).ok
        sink.hang.add("collector-b")
        sent = [client.track("x", person_id="u") for _ in range(50)]
        report = client.flush(timeout=3.0)  # the hung request would take 60 s
        assert report.timed_out
        assert report["collector"].delivered == 51 and report["collector"].pending == 0
        assert report["collector:b"].delivered == 1 and report["collector:b"].pending == 50
        pid = _relay(client).child_pid()
        final = client.shutdown(timeout=1.0)
        assert final.timed_out
        assert final["collector"].delivered == 51
        b = final["collector:b"]
        assert b.delivered == 1 and b.pending == 0
        assert b.losses == {"shutdown_timeout": 50}
        assert sorted(sink.ids("collector")) == sorted([warm, *sent])
        assert sink.ids("collector:b") == [warm]
        assert pid is not None and _gone(pid)
    finally:
        sink.released.set()
        client.shutdown(timeout=2)


APP = textwrap.dedent(
    """
    import json, os, sys, time
    import fanout

    env = json.loads(sys.argv[1])
    n = int(sys.argv[2])
    client = fanout.Client(providers=["collector", "collector:b"], environ=env)
    relay = client._channels[0]._relay
    ids = [client.track("x", person_id="u", properties={"i": i}) for i in range(n)]
    while relay.child_received() < n:
        time.sleep(0.01)
    print(json.dumps({"child": relay.child_pid(), "ids": ids}), flush=True)
    time.sleep(600)
    """
)


def test_parent_killed_child_delivers_what_it_holds_and_exits(sink: Sink, tmp_path) -> None:
    # The delivery process holds the events (30 s flush interval) when the app dies.
    env = sink.environ(
        ("collector", "collector:b"), FANOUT_FLUSH_INTERVAL="30", FANOUT_BATCH_SIZE="500"
    )
    app = subprocess.Popen(
        [sys.executable, "-c", APP, json.dumps(env), "120"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert app.stdout is not None
        started = json.loads(app.stdout.readline())
        child = started["child"]
        assert sink.ids("collector") == []  # nothing sent before the kill
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        _wait_for(lambda: _gone(child), "the delivery process to exit")
        for name in ("collector", "collector:b"):
            stored = sink.ids(name)
            assert len(stored) == len(set(stored)) == 120
            assert set(stored) == set(started["ids"])
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(5)
        if app.stdout is not None:
            app.stdout.close()


FORK_APP = textwrap.dedent(
    """
    import json, os, sys
    import fanout

    env = json.loads(sys.argv[1])
    client = fanout.Client(providers=["collector", "collector:b"], environ=env)
    relay = client._channels[0]._relay
    before = [client.track("parent.before", person_id="p") for _ in range(30)]
    client.flush(timeout=20)
    parent_child = relay.child_pid()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        mine = [client.track("forked", person_id="f") for _ in range(40)]
        report = client.flush(timeout=20)
        out = {
            "ids": mine,
            "child": relay.child_pid(),
            "delivered": {n: report[n].delivered for n in report},
            "timed_out": report.timed_out,
        }
        client.shutdown(timeout=10)
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    after = [client.track("parent.after", person_id="p") for _ in range(20)]
    report = client.flush(timeout=20)
    forked = json.loads(os.read(r, 1 << 20))
    os.waitpid(pid, 0)
    print(json.dumps({
        "parent_ids": before + after,
        "parent_child": parent_child,
        "parent_child_after": relay.child_pid(),
        "delivered": {n: report[n].delivered for n in report},
        "forked": forked,
    }))
    client.shutdown(timeout=10)
    """
)


def test_forked_app_process_gets_its_own_delivery_process(sink: Sink) -> None:
    env = sink.environ(("collector", "collector:b"))
    out = subprocess.run(
        [sys.executable, "-c", FORK_APP, json.dumps(env)],
        capture_output=True, text=True, timeout=90, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    forked = result["forked"]
    assert forked["child"] not in (None, result["parent_child"])
    assert result["parent_child_after"] == result["parent_child"]
    assert forked["delivered"] == {"collector": 40, "collector:b": 40}
    assert not forked["timed_out"]
    assert result["delivered"] == {"collector": 50, "collector:b": 50}
    for name in ("collector", "collector:b"):
        stored = sink.ids(name)
        assert len(stored) == len(set(stored)) == 90
        assert set(stored) == set(result["parent_ids"]) | set(forked["ids"])


CWD_APP = textwrap.dedent(
    """
    import json, sys
    import fanout

    client = fanout.Client(providers=["collector"], environ=json.loads(sys.argv[1]))
    relay = client._channels[0]._relay
    ids = [client.track("x", person_id="u") for _ in range(20)]
    report = client.flush(timeout=30)
    print(json.dumps({
        "ids": ids,
        "delivered": report["collector"].delivered,
        "child": relay.child_pid(),
        "in_process": relay._fallback is not None,
    }))
    client.shutdown(timeout=10)
    """
)


def test_the_delivery_process_runs_the_apps_fanout_whatever_the_directory(
    sink: Sink, tmp_path: Path
) -> None:
    """An app started in a directory holding another ``fanout`` package (a checkout of
    another version, here one that cannot even be imported): its delivery process still
    runs the app's own fanout, not the one in the working directory."""
    shadow = tmp_path / "cwd" / "fanout"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("not the app\'s fanout")\n')
    script = tmp_path / "app" / "app.py"
    script.parent.mkdir()
    script.write_text(CWD_APP)
    out = subprocess.run(
        [sys.executable, str(script), json.dumps(sink.environ(("collector",)))],
        cwd=shadow.parent, capture_output=True, text=True, timeout=90, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "not the app's fanout" not in out.stderr
    assert result["child"] is not None and not result["in_process"]
    assert result["delivered"] == 20
    assert sorted(sink.ids("collector")) == sorted(result["ids"])


def test_a_dead_delivery_process_is_counted_and_replaced(sink: Sink) -> None:
    names = ("collector", "collector:b")
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names, FANOUT_FLUSH_INTERVAL="30"),
        register_atexit=False,
    )
    try:
        relay = _relay(client)
        for _ in range(25):
            client.track("held", person_id="u")
        _wait_for(lambda: relay.child_received() == 25, "the hand-off")
        first = relay.child_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: relay.child_pid() is None, "the death to be noticed")
        lost = client.stats()
        assert all(lost[n].losses == {"relay_lost": 25} and lost[n].pending == 0 for n in names)
        sent = [client.track("after", person_id="u") for _ in range(15)]
        report = client.flush(timeout=30)
        second = relay.child_pid()
        assert second is not None and second != first
        for name in names:
            assert report[name].delivered == 15
            assert report[name].dropped == 25 and report[name].losses == {"relay_lost": 25}
            assert sorted(sink.ids(name)) == sorted(sent)
    finally:
        client.shutdown(timeout=5)


def test_permanent_failures_reach_on_error_in_the_app(sink: Sink) -> None:
    sink.refuse.add("collector-b")
    names = ("collector", "collector:b")
    failures: list[fanout.DeliveryFailure] = []  # type: ignore[name-defined]
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names),
        on_error=failures.append,
        register_atexit=False,
    )
    try:
        sent = [client.track("x", person_id="u") for _ in range(12)]
        report = client.flush(timeout=20)
        assert report["collector"].delivered == 12
        assert report["collector:b"].failed == 12
        assert report["collector:b"].losses == {"permanent_error": 12}
        _wait_for(lambda: sum(len(f.events) for f in failures) == 12, "on_error")
        assert {f.provider for f in failures} == {"collector:b"}
        assert sorted(e.event_id for f in failures for e in f.events) == sorted(sent)
    finally:
        client.shutdown(timeout=5)


def test_provider_objects_cannot_go_to_a_delivery_process() -> None:
    from fanout.testing import InMemoryProvider

    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(
            providers=[InMemoryProvider()],
            environ={"FANOUT_DELIVERY": "process"},
            register_atexit=False,
        )
    assert info.value.variable == "FANOUT_DELIVERY"


def test_thread_mode_is_the_default_and_modes_are_checked() -> None:
    client = fanout.Client(providers=["null"], environ={}, register_atexit=False)
    try:
        assert not hasattr(client._channels[0], "_relay")
    finally:
        client.shutdown(timeout=1)
    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(providers=["null"], environ={"FANOUT_DELIVERY": "fork"})
    assert info.value.variable == "FANOUT_DELIVERY"
    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(providers=["null"], environ={}, delivery_mode="processes")
    assert info.value.variable == "delivery_mode"


@pytest.mark.slow  # three delivery processes start and die
def test_after_repeated_deaths_delivery_falls_back_in_process(sink: Sink, caplog) -> None:
    names = ("collector", "collector:b")
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names, FANOUT_FLUSH_INTERVAL="30", FANOUT_BATCH_SIZE="500"),
        register_atexit=False,
    )
    try:
        relay = _relay(client)
        pids = []
        for _ in range(MAX_RESTARTS):
            for _ in range(5):
                client.track("held", person_id="u")
            _wait_for(lambda: relay.child_received() == 5, "the hand-off")
            pid = relay.child_pid()
            assert pid is not None and pid not in pids
            pids.append(pid)
            os.kill(pid, signal.SIGKILL)
            _wait_for(lambda: relay.child_pid() is None, "the death to be noticed")
        fallbacks = [r for r in caplog.records if "delivering in-process" in r.getMessage()]
        assert len(fallbacks) == 1
        sent = [client.track("after", person_id="u") for _ in range(10)]
        report = client.flush(timeout=30)
        assert relay.child_pid() is None  # no fourth child
        for name in names:
            assert report[name].delivered == 10
            assert report[name].losses == {"relay_lost": 5 * MAX_RESTARTS}
            assert sorted(sink.ids(name)) == sorted(sent)
        assert all(_gone(pid) for pid in pids)
    finally:
        client.shutdown(timeout=5)


def test_the_pipe_gives_back_every_field_of_every_kind_of_event():
    import orjson

    from fanout._events import build_event
    from fanout._relay_link import decode_event, encode_events

    events = [
        build_event("track", name="paid", person_id="u1", properties={"a": [1, {"b": None}]},
                    context={"ip": "1.2.3.4", "page": {"url": "https://x"}}),
        build_event("identify", person_id="u1", anonymous_id="anon", traits={"email": "e@x"}),
        build_event("page", anonymous_id="anon", name="Home"),
        build_event("alias", person_id="u2", previous_id="u1"),
        build_event("group", person_id="u2", group_type="company", group_id="c1",
                    traits={"plan": "pro", "emoji": "\U0001f600 é"}),
    ]
    back = [decode_event(fields) for fields in orjson.loads(encode_events(events))]
    assert back == events  # timestamps to the microsecond, size and footprint included
    assert [type(e.timestamp.tzinfo) for e in back] == [type(e.timestamp.tzinfo) for e in events]
    with pytest.raises(TypeError):
        back[0].properties["a"] = 2  # read-only again


def _dead_letters(directory: Path, name: str) -> list[dict]:
    path = directory / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _failed(failures: list, name: str, reason: str) -> list[str]:
    return [e.event_id for f in list(failures) if f.provider == name and f.reason == reason
            for e in f.events]


def test_a_delivery_process_killed_mid_batch_dead_letters_what_it_held(
    sink: Sink, tmp_path: Path
) -> None:
    """kill -9 of the delivery process while one backend holds a batch: what it had not
    settled reaches on_error and the dead letters (relay_lost), exactly once each, as an
    in-process channel's failures do; a refusing backend's failures likewise."""
    names = ("collector", "collector:b", "collector:c")
    failures: list = []
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names, FANOUT_BATCH_SIZE="10"),
        dead_letter_dir=str(tmp_path),
        on_error=failures.append,
        register_atexit=False,
    )
    try:
        relay = _relay(client)
        warm = client.track("warm", person_id="u")
        assert client.flush(timeout=30).ok
        sink.hang.add("collector-b")
        sink.refuse.add("collector-c")
        sent = [client.track("x", person_id="u", properties={"i": i}) for i in range(40)]

        def settled() -> bool:
            stats = client.stats()
            return (
                stats["collector"].delivered == 41
                and stats["collector:c"].losses == {"permanent_error": 40}
                and len(_failed(failures, "collector:c", "permanent_error")) == 40
                and sink.hanging == 1
            )

        _wait_for(settled, "a and c to settle while b's backend holds a batch")
        first = relay.child_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: len(_failed(failures, "collector:b", "relay_lost")) == 40, "on_error")

        stats = client.stats()
        assert stats["collector"].losses == {} and stats["collector"].delivered == 41
        assert stats["collector:b"].delivered == 1
        assert stats["collector:b"].losses == {"relay_lost": 40}
        assert stats["collector:c"].delivered == 1
        assert stats["collector:c"].losses == {"permanent_error": 40}
        # on_error: each lost or refused event once, under its provider and reason.
        assert sorted(_failed(failures, "collector:b", "relay_lost")) == sorted(sent)
        assert sorted(_failed(failures, "collector:c", "permanent_error")) == sorted(sent)
        assert sum(len(f.events) for f in failures) == 80
        assert all(type(e) is fanout.Event for f in failures for e in f.events)
        # Dead letters: the app wrote b's (its child is dead), the child wrote c's.
        b_letters = _dead_letters(tmp_path, "collector:b")
        assert sorted(r["event"]["event_id"] for r in b_letters) == sorted(sent)
        assert {r["reason"] for r in b_letters} == {"relay_lost"}
        c_letters = _dead_letters(tmp_path, "collector:c")
        assert sorted(r["event"]["event_id"] for r in c_letters) == sorted(sent)
        assert _dead_letters(tmp_path, "collector") == []

        # A new delivery process takes the next events; the counts add up per provider.
        sink.hang.clear()
        sink.refuse.clear()
        after = [client.track("after", person_id="u") for _ in range(10)]
        report = client.flush(timeout=30)
        assert relay.child_pid() not in (None, first)
        tracked = 1 + 40 + 10
        for name in names:
            r = report[name]
            stored = sink.ids(name)
            assert len(stored) == len(set(stored)) == r.delivered  # none twice
            lost = r.losses.get("relay_lost", 0)
            refused = r.losses.get("permanent_error", 0)
            letters = _dead_letters(tmp_path, name)
            assert len(letters) == lost + refused
            assert r.delivered + lost + refused == tracked and r.pending == 0
            expected = [warm, *sent, *after] if name == "collector" else [warm, *after]
            assert sorted(stored) == sorted(expected)
    finally:
        sink.released.set()
        client.shutdown(timeout=5)


@pytest.mark.slow  # about 4 s: hand-offs blocked on a stopped delivery process
def test_hand_offs_that_cannot_be_made_are_dead_lettered_at_shutdown(
    sink: Sink, tmp_path: Path
) -> None:
    """A delivery process that stops reading (SIGSTOP): the pipe fills, hand-offs block.
    Shutdown's deadline fails what never left the app (shutdown_timeout) and kills the
    child, losing what it held (relay_lost): every event of both reaches on_error and the
    dead letters of each provider, and the counts add up to what was tracked."""
    names = ("collector", "collector:b")
    failures: list = []
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names),
        dead_letter_dir=str(tmp_path),
        on_error=failures.append,
        register_atexit=False,
    )
    child = None
    try:
        warm = client.track("warm", person_id="u")
        assert client.flush(timeout=30).ok
        child = _relay(client).child_pid()
        assert child is not None
        os.kill(child, signal.SIGSTOP)
        # About 130 kB per hand-off of 100: the pipe (PIPE_BYTES) holds two of them.
        pad = "x" * (PIPE_BYTES // 200)
        sent = []
        for _ in range(6):
            sent += [client.track("x", person_id="u", properties={"pad": pad, "i": i})
                     for i in range(100)]
            time.sleep(0.25)  # one hand-off per chunk
        # Behind the blocked hand-off: an event for b alone, never handed off either.
        only_b = client.track("to.b", person_id="u", providers=["collector:b"])
        final = client.shutdown(timeout=1.0)
        assert final.timed_out
        assert _gone(child)
        for name in names:
            r = final[name]
            lost = r.losses.get("relay_lost", 0)
            never = r.losses.get("shutdown_timeout", 0)
            assert lost > 0 and never > 0, r.losses  # both kinds of loss happened
            mine = [*sent, only_b] if name == "collector:b" else sent
            skipped = {} if name == "collector:b" else {"routed": 1}
            assert r.losses == {"relay_lost": lost, "shutdown_timeout": never, **skipped}
            assert r.delivered == 1 and r.pending == 0
            assert r.delivered + lost + never + r.skipped == 1 + len(sent) + 1
            assert sink.ids(name) == [warm]
            letters = _dead_letters(tmp_path, name)
            assert sorted(x["event"]["event_id"] for x in letters) == sorted(mine)
            assert sum(x["reason"] == "relay_lost" for x in letters) == lost
            assert sorted(_failed(failures, name, "relay_lost")
                          + _failed(failures, name, "shutdown_timeout")) == sorted(mine)
    finally:
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
        client.shutdown(timeout=2)


def test_the_delivery_process_batches_bigger_only_where_nobody_chose_a_size(
    sink: Sink,
) -> None:
    """No request thread waits on the delivery process's GIL, so a provider without a
    batch size of its own sends up to BATCH_SIZE events a request there; a size set in
    the environment (here for collector:b) is kept, as in-process."""
    names = ("collector", "collector:b")
    env = sink.environ(
        names,
        FANOUT_FLUSH_INTERVAL="30",  # only full batches and the flush send
        FANOUT_COLLECTOR_B_BATCH_SIZE="100",
    )
    client = fanout.Client(providers=list(names), environ=env, register_atexit=False)
    try:
        sent = [client.track("x", person_id="u", properties={"i": i}) for i in range(1200)]
        report = client.flush(timeout=30)
        assert report.ok
        for name in names:
            r = report[name]
            assert (r.delivered, r.dropped, r.failed, r.pending) == (1200, 0, 0, 0)
            assert sorted(sink.ids(name)) == sorted(sent)  # each once, none lost
        big, small = sink.sizes["collector"], sink.sizes["collector-b"]
        assert sum(big) == sum(small) == 1200
        assert max(big) > 100 and max(big) <= BATCH_SIZE
        assert max(small) == 100 and len(small) >= 12
    finally:
        client.shutdown(timeout=5)


def test_what_a_dead_child_lost_is_named_among_filtered_and_routed_events(
    sink: Sink, tmp_path: Path
) -> None:
    """The events named lost are exactly the ones the dead child held for the provider:
    not those its filter skips, not those routed to another provider, and routed ones
    to it in their place in the order."""
    names = ("collector", "collector:b")
    failures: list = []
    client = fanout.Client(
        providers=list(names),
        environ=sink.environ(names, FANOUT_BATCH_SIZE="5"),
        delivery={"collector:b": {"exclude_events": ["skipped.*"]}},
        dead_letter_dir=str(tmp_path),
        on_error=failures.append,
        register_atexit=False,
    )
    try:
        relay = _relay(client)
        client.track("warm", person_id="u")
        assert client.flush(timeout=30).ok
        sink.hang.add("collector-b")
        for_b, for_a_only = [], []
        for i in range(12):
            for_b.append(client.track("kept", person_id="u", properties={"i": i}))
            for_a_only.append(client.track("skipped.by_b", person_id="u"))
            if i % 3 == 0:
                for_b.append(client.track("to.b", person_id="u", providers=["collector:b"]))
                for_a_only.append(client.track("to.a", person_id="u", providers=["collector"]))
        _wait_for(lambda: client.stats()["collector"].delivered == 1 + len(for_a_only) + 12
                  and sink.hanging == 1, "a to settle while b's backend holds a batch")
        os.kill(relay.child_pid(), signal.SIGKILL)
        _wait_for(lambda: len(_failed(failures, "collector:b", "relay_lost")) == len(for_b),
                  "on_error")
        lost = _failed(failures, "collector:b", "relay_lost")
        assert lost == for_b  # exactly these, in the order they were tracked
        b = client.stats()["collector:b"]
        assert b.delivered == 1
        assert b.losses == {"relay_lost": len(for_b), "routed": len(for_a_only)}
        letters = _dead_letters(tmp_path, "collector:b")
        assert [x["event"]["event_id"] for x in letters] == for_b
        assert _dead_letters(tmp_path, "collector") == []
        assert _failed(failures, "collector", "relay_lost") == []
    finally:
        sink.released.set()
        client.shutdown(timeout=5)
