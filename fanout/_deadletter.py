"""Dead letters: events a provider will never accept, kept as JSON lines with the reason.

One file per provider (``<dir>/<provider>.jsonl``), appended and closed per record so that
a crash, a fork or a second process loses nothing already written. Each line holds the
canonical event, so ``fanout import`` can replay a file once the cause is fixed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from ._events import Event
from ._json import dumps
from ._report import DeliveryFailure

__all__ = ["DeadLetters"]

logger = logging.getLogger("fanout")


class DeadLetters:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()

    def path(self, provider: str) -> Path:
        return self.directory / f"{provider}.jsonl"

    def write(self, failure: DeliveryFailure) -> None:
        self.write_events(
            failure.provider, failure.events, failure.reason, failure.error, failure.status_code
        )

    def write_events(
        self,
        provider: str,
        events: Sequence[Event],
        reason: str,
        error: str,
        status_code: int | None = None,
    ) -> None:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat()
        lines = "".join(
            dumps(
                {
                    "provider": provider,
                    "reason": reason,
                    "error": error,
                    "status_code": status_code,
                    "failed_at": now,
                    "event": e.to_dict(),
                }
            ).decode("utf-8")
            + "\n"
            for e in events
        )
        try:
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                with open(self.path(provider), "a", encoding="utf-8") as f:
                    f.write(lines)
        except OSError as exc:
            logger.error(
                "could not write %d dead letter(s) for %s to %s: %s",
                len(events),
                provider,
                self.directory,
                exc,
            )

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
