"""``console``: one JSON line per event, to stderr or a file, for development."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from .._events import Event
from ..provider import ProviderConfig


class ConsoleProvider:
    def __init__(self, file: str = "-") -> None:
        self.file = file
        self._stream: TextIO | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: ProviderConfig) -> ConsoleProvider:
        return cls(config.get("file") or "-")

    def _out(self) -> TextIO:
        if self.file == "-":
            return sys.stderr
        if self._stream is None:
            self._stream = open(self.file, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        return self._stream

    def send(self, batch: Sequence[Event]) -> None:
        lines = [e.to_json() for e in batch]
        lines.append(b"")
        text = b"\n".join(lines).decode("utf-8")
        with self._lock:
            out = self._out()
            out.write(text)
            out.flush()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None

    def after_fork(self) -> None:
        self._lock = threading.Lock()
