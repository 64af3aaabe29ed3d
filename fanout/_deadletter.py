"""Dead letters: events a provider will never accept, kept as JSON lines with the reason.

One file per provider (``<dir>/<provider>.jsonl``), appended and closed per record so that
a crash, a fork or a second process loses nothing already written. Each line holds the
canonical event, so ``fanout import`` can replay a file once the cause is fixed.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
        """Append one line per event. Never raises: a dead letter is the last resort, so a
        value no encoder takes, a full disk or a bug here is logged, not raised."""
        try:
            now = _dt.datetime.now(_dt.timezone.utc).isoformat()
            lines = "".join(
                _line(
                    {
                        "provider": provider,
                        "reason": reason,
                        "error": error,
                        "status_code": status_code,
                        "failed_at": now,
                    },
                    e,
                )
                for e in events
            )
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                with open(self.path(provider), "a", encoding="utf-8") as f:
                    f.write(lines)
        except Exception as exc:  # noqa: BLE001 - OSError, or anything a bug may raise
            logger.error(
                "could not write %d dead letter(s) for %s to %s: %s: %s",
                len(events),
                provider,
                self.directory,
                type(exc).__name__,
                exc,
            )

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()


def _line(record: dict[str, Any], event: Event) -> str:
    """One JSON line for ``event``, whatever it holds.

    An event that got past validation by a bug (a lone surrogate, a huge integer, NaN)
    would make the encoder raise and the dead letter be lost with the reason it exists.
    Such values are written the way Python's own ``json`` reads them back (``"\\ud800"``
    escapes, big integers in full, ``NaN``), so ``fanout import`` still shows the culprit;
    anything even that cannot write becomes its ``repr``.
    """
    try:
        return dumps({**record, "event": event.to_dict()}).decode("utf-8") + "\n"
    except Exception:  # noqa: BLE001 - fall through to the lenient encodings
        pass
    try:
        return json.dumps({**record, "event": event.to_dict()}, default=repr) + "\n"
    except Exception:  # noqa: BLE001
        pass
    return json.dumps({**record, "event_repr": _safe_repr(event)}) + "\n"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(value).__name__}>"
