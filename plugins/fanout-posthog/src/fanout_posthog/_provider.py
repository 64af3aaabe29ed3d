"""``PostHogProvider``: sends one fanout batch to PostHog's ``/batch/`` endpoint.

The wire format is posthog-python's v0 capture protocol (``posthog/request.py``,
``batch_post``)::

    POST {host}/batch/
    {"batch": [...], "historical_migration": false, "sent_at": "...", "api_key": "phc_..."}

The channel owns batching and retries; this class only translates, splits a batch into
its live and historical parts, and classifies PostHog's answer with
:func:`fanout.http.raise_for_status` (429/5xx/network retryable with ``Retry-After``,
413 split, any other 4xx permanent). When one part of a batch got through and the other
did not, it says so with ``RetryableError(pending=...)`` rather than remembering ids.

This module imports posthog-python (through ``_mapping``); the package's entry point
names :func:`from_config` as a string, so it is imported only when the provider is enabled.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from posthog.request import determine_server_host

from fanout.http import (
    USER_AGENT,
    HttpProvider,
    HttpSender,
    encode_json,
    raise_for_status,
    require_json_reply,
)
from fanout.provider import (
    BatchTooLarge,
    Event,
    PermanentError,
    ProviderConfig,
    RetryableError,
)

from .__about__ import __version__
from ._declaration import DEFAULT_HOST, parse_bool, parse_historical_after, parse_host
from ._mapping import MessageBuilder

__all__ = ["BATCH_PATH", "LIB_NAME", "PostHogProvider", "from_config"]

BATCH_PATH: Final = "/batch/"
#: ``$lib`` on every event: PostHog shows which library sent it.
LIB_NAME: Final = "fanout-posthog"
#: Bodies at least this large are gzipped (when gzip is on): below it the header costs
#: about what compression saves.
GZIP_MIN_BYTES: Final = 1024


class PostHogProvider(HttpProvider):
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
        old events takes two requests. A failure of the only request (or of the first)
        is the whole batch's; once a part has been delivered or refused for good, a failure
        of what follows is reported for that part alone: ``RetryableError(pending=...)``
        retries only its events (a 413 included: the channel splits them on the retry),
        and ``rejected=`` dead-letters the refused part's events.
        """
        cutoff = _dt.datetime.fromtimestamp(time.time() - self.historical_after, _dt.timezone.utc)
        old = [i for i, event in enumerate(batch) if event.timestamp < cutoff]
        if not old:  # the common case: one request, no index lists
            self._post(batch, historical=False)
            return
        stale = set(old)
        live = [i for i in range(len(batch)) if i not in stale]
        parts = [(p, historical) for p, historical in ((live, False), (old, True)) if p]
        rejected: dict[int, str] = {}
        status: int | None = None
        for n, (indices, historical) in enumerate(parts):
            try:
                self._post([batch[i] for i in indices], historical=historical)
            except (RetryableError, BatchTooLarge) as exc:
                if n == 0:
                    raise  # nothing was delivered: the channel handles the whole batch
                raise RetryableError(
                    str(exc),
                    retry_after=exc.retry_after if isinstance(exc, RetryableError) else 0.0,
                    status_code=exc.status_code,
                    pending=indices,
                    rejected=rejected,
                ) from None
            except PermanentError as exc:
                if len(parts) == 1:
                    raise
                rejected.update((i, str(exc)) for i in indices)
                status = exc.status_code
        if rejected:
            raise PermanentError(
                f"PostHog refused {len(rejected)} of {len(batch)} event(s)",
                rejected=rejected,
                status_code=status,
            )

    # -- wire ----------------------------------------------------------------------------

    def body(self, events: Sequence[Event], *, historical: bool) -> dict[str, Any]:
        """The JSON body posthog-python's ``batch_post`` would send for ``events``, ready for
        :func:`~fanout.http.encode_json` (message timestamps may be UTC ``datetime`` s, which
        it writes exactly as ``isoformat()``: see :class:`MessageBuilder`)."""
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
        require_json_reply(response, what="PostHog")  # {"status": 1} / {"status": "Ok"}


def ingestion_host(host: str) -> str:
    """PostHog's app hosts become their ingestion hosts (``https://us.posthog.com`` →
    ``https://us.i.posthog.com``), with the SDK's own helper; other hosts are kept."""
    return str(determine_server_host(host)).rstrip("/")


def _coerce(value: Any, parse: Callable[[str], Any]) -> Any:
    """Settings passed as ``Client(settings=...)`` arrive unparsed when they are strings."""
    return parse(value) if isinstance(value, str) else value


def from_config(config: ProviderConfig) -> PostHogProvider:
    """The provider factory: resolved settings in, a ready provider out."""
    gzip = _coerce(config.get("gzip", True), parse_bool)
    historical = config.get("historical_after", "48")
    if isinstance(historical, (int, float)) and not isinstance(historical, bool):
        historical = str(historical)  # hours, validated the same way as the environment's
    return PostHogProvider(
        api_key=config.require_str("api_key"),
        host=ingestion_host(_coerce(config.get("host") or DEFAULT_HOST, parse_host)),
        gzip=bool(gzip),
        historical_after=_coerce(historical, parse_historical_after) * 3600.0,
        timeout=config.timeout,
    )
