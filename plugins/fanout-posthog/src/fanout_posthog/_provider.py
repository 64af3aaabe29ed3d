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

from fanout import Event, PermanentError
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
#: Ids of events already accepted from a batch whose other part failed; bounded so that a
#: batch the channel gave up on cannot make it grow without end.
_MAX_ACCEPTED: Final = 100_000


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
        self._accepted: set[str] = set()

    def __repr__(self) -> str:
        # The API key is deliberately absent.
        return f"<PostHogProvider host={self.host!r} gzip={self.gzip}>"

    # -- Provider protocol ---------------------------------------------------------------

    def send(self, batch: Sequence[Event]) -> None:
        """Send ``batch``: live events, then historical ones, one request each.

        PostHog's ``historical_migration`` flag is per request, so a batch mixing fresh and
        old events takes two requests. When the first succeeds and the second fails, the
        first part's ids are remembered and skipped when the channel sends the batch again
        (a retry, or the halves of a split), so a retry never posts an event twice; a
        permanent refusal of one part rejects only that part's events.
        """
        cutoff = time.time() - self.historical_after
        live: list[int] = []
        old: list[int] = []
        accepted = self._accepted
        for i, event in enumerate(batch):
            if accepted and event.event_id in accepted:
                continue
            (old if event.timestamp.timestamp() < cutoff else live).append(i)
        parts = [(p, historical) for p, historical in ((live, False), (old, True)) if p]
        rejected: dict[int, str] = {}
        status: int | None = None
        for n, (indices, historical) in enumerate(parts):
            try:
                self._post([batch[i] for i in indices], historical=historical)
            except PermanentError as exc:
                if type(exc) is not PermanentError or len(parts) == 1:
                    raise  # BatchTooLarge, or the only part: the channel handles the batch
                rejected.update((i, str(exc)) for i in indices)
                status = exc.status_code
            else:
                if n + 1 < len(parts):
                    if len(accepted) > _MAX_ACCEPTED:
                        accepted.clear()
                    accepted.update(batch[i].event_id for i in indices)
        if accepted:
            accepted.difference_update(e.event_id for e in batch)
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
        self._accepted = set()

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
