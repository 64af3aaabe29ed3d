"""``console``: one JSON line per event, to stderr or a file, for development."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from .._events import Event
from ..provider import ProviderConfig

# One encoder for every call: json.dumps() with keyword arguments builds a new one each
# time, which costs about as much as encoding a small event.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
        text = "".join(_encode(e.to_dict()) + "\n" for e in batch)
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
