"""Small in-process provider plugins for the core tests.

They are real providers (the channel calls them exactly as it calls a vendor plugin), each
standing for a backend that misbehaves in one of the ways the channel must survive.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence

from fanout import Event


class RaisingProvider:
    """A provider with a bug: every send raises something unexpected."""

    name = "raising"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, batch: Sequence[Event]) -> None:
        self.calls += 1
        raise ZeroDivisionError("provider bug")

    def close(self) -> None:
        pass


class HangingProvider:
    """A backend that never answers (until released at the end of the test)."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, batch: Sequence[Event]) -> None:
        self.entered.set()
        self.release.wait(60)

    def close(self) -> None:
        self.release.set()


class ScriptedProvider:
    """Raises the given exceptions in order, then accepts; records every batch it sees."""

    def __init__(self, name: str, script: Sequence[BaseException | None] = ()) -> None:
        self.name = name
        self.script = list(script)
        self.seen: list[list[Event]] = []
        self.accepted: list[Event] = []
        self.lock = threading.Lock()

    def send(self, batch: Sequence[Event]) -> None:
        with self.lock:
            self.seen.append(list(batch))
            if self.script:
                exc = self.script.pop(0)
                if exc is not None:
                    raise exc
            self.accepted.extend(batch)

    def close(self) -> None:
        pass


class GatedProvider(ScriptedProvider):
    """A :class:`ScriptedProvider` whose sends wait at ``gate`` (up to 10 s): the worker
    holds its batch there while a test fills the queue behind it."""

    def __init__(self, name: str, script: Sequence[BaseException | None] = ()) -> None:
        super().__init__(name, script)
        self.gate = threading.Event()

    def send(self, batch: Sequence[Event]) -> None:
        self.gate.wait(10)
        super().send(batch)


def in_forked_child(work: Callable[[], object], timeout: float = 10.0) -> str:
    """``repr(work())`` as run in a child made by ``os.fork()``, or ``"hung"`` if the child
    did not finish within ``timeout`` seconds (it is then killed, by its pid), or the
    exception it raised. The child leaves by ``os._exit``, running no exit hook."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            try:
                out = repr(work())
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                out = f"raised {exc!r}"
            os.write(write, out.encode())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + timeout
    chunks = []
    try:
        while True:  # read as it writes (a pipe holds 64 KB), to its end or the deadline
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                return "hung"
            chunk = os.read(read, 65536)
            if not chunk:
                return b"".join(chunks).decode()
            chunks.append(chunk)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
