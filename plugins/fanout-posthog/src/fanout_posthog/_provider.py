"""``PostHogProvider``: sends one fanout batch to PostHog's ``/batch/`` endpoint.

The wire format is posthog-python's v0 capture protocol (``posthog/request.py``,
``batch_post``)::

    POST {host}/batch/
    {"batch": [...], "historical_migration": false, "sent_at": "...", "api_key": "phc_..."}

The channel owns batching and retries; this class only translates, splits a batch into
its live and historical parts, and classifies PostHog's answer with
:func:`fanout.http.raise_for_status` (429/5xx/network retryable with ``Retry-After``,
413 split, any other 4xx permanent).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Sequence
from typing import Any, Final

from fanout import Event, PermanentError, RetryableError
from fanout.http import USER_AGENT, HttpSender, encode_json, raise_for_status

from .__about__ import __version__
from ._mapping import MessageBuilder

__all__ = ["PostHogProvider", "BATCH_PATH", "LIB_NAME"]

BATCH_PATH: Final = "/batch/"
#: ``$lib`` on every event: PostHog shows which library sent it.
LIB_NAME: Final = "fanout-posthog"
#: Bodies at least this large are gzipped (when gzip is on): below it the header costs
#: about what compression saves.
GZIP_MIN_BYTES: Final = 1024


class PostHogProvider:
    """Delivers batches to one PostHog project. Used from one channel worker at a time."""

    name = "posthog"

    def __init__(
        self,
        *,
        api_key: str,
        host: str,
        gzip: bool = True,
        historical_after: float = 48 * 3600.0,
        timeout: float = 10.0,
    ) -> None:
        self._api_key = api_key
        self.host = host.rstrip("/")
        self.url = self.host + BATCH_PATH
        self.gzip = gzip
        self.historical_after = historical_after
        self._builder = MessageBuilder(lib=LIB_NAME, lib_version=__version__)
        self._http = HttpSender(
            timeout=timeout,
            gzip_min_bytes=GZIP_MIN_BYTES if gzip else None,
            headers={"User-Agent": f"{LIB_NAME}/{__version__} {USER_AGENT}"},
        )

    def __repr__(self) -> str:
        # The API key is deliberately absent.
        return f"<PostHogProvider host={self.host!r} gzip={self.gzip}>"

    # -- Provider protocol ---------------------------------------------------------------

    def send(self, batch: Sequence[Event]) -> None:
        """Send ``batch``: live events, then historical ones, one request each.

        PostHog's ``historical_migration`` flag is per request, so a batch mixing fresh and
        old events takes two requests. When the first succeeds and the second fails, the
        failure names only the second part's events as ``pending`` (and any part refused
        for good as ``rejected``), so the channel retries just those and a retry never
        posts an event twice.
        """
        cutoff = time.time() - self.historical_after
        live: list[int] = []
        old: list[int] = []
        for i, event in enumerate(batch):
            (old if event.timestamp.timestamp() < cutoff else live).append(i)
        parts = [(p, historical) for p, historical in ((live, False), (old, True)) if p]
        rejected: dict[int, str] = {}
        status: int | None = None
        for n, (indices, historical) in enumerate(parts):
            try:
                self._post([batch[i] for i in indices], historical=historical)
            except RetryableError as exc:
                if n == 0:
                    raise  # nothing of the batch was taken
                raise RetryableError(
                    str(exc),
                    retry_after=exc.retry_after,
                    status_code=exc.status_code,
                    pending=[i for part, _ in parts[n:] for i in part],
                    rejected=rejected,
                ) from exc
            except PermanentError as exc:
                if type(exc) is not PermanentError or len(parts) == 1:
                    raise  # BatchTooLarge, or the only part: the channel handles the batch
                rejected.update((i, str(exc)) for i in indices)
                status = exc.status_code
        if rejected:
            raise PermanentError(
                f"PostHog refused {len(rejected)} of {len(batch)} event(s)",
                rejected=rejected,
                status_code=status,
            )

    def close(self) -> None:
        self._http.close()

    def after_fork(self) -> None:
        self._http.after_fork()

    # -- wire ----------------------------------------------------------------------------

    def body(self, events: Sequence[Event], *, historical: bool) -> dict[str, Any]:
        """The JSON body posthog-python's ``batch_post`` would send for ``events``."""
        build = self._builder.message
        return {
            "batch": [build(e) for e in events],
            "historical_migration": historical,
            "sent_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "api_key": self._api_key,
        }

    def _post(self, events: Sequence[Event], *, historical: bool) -> None:
        payload = encode_json(self.body(events, historical=historical))
        response = self._http.post(self.url, payload)
        raise_for_status(response, what="PostHog")
