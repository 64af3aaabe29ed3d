"""Which events a provider takes: per-provider patterns and per-call choices.

Teams send only revenue events to one tool, or keep identify calls away from another
(Segment's ``integrations`` option is the idiom users know). Patterns are globs on event
names (``checkout.*``) plus ``kind:<kind>`` for whole kinds (``kind:identify``), which also
covers kinds that carry no name. Routed-away events are counted as skipped (``routed``),
never dropped silently.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from ._events import KINDS, Event
from ._exceptions import ConfigError
from .provider import env_token

__all__ = ["EventFilter", "compile_filter"]

_KIND_PREFIX = "kind:"


class EventFilter:
    """``filter(event)`` is True when the event may go to the provider."""

    __slots__ = ("_include", "_exclude")

    def __init__(
        self, include: Sequence[str] | None, exclude: Sequence[str] | None, provider: str
    ) -> None:
        self._include = _compile(include, provider, "EVENTS") if include else None
        self._exclude = _compile(exclude, provider, "EXCLUDE_EVENTS") if exclude else None

    def __call__(self, event: Event) -> bool:
        if self._include is not None and not _matches(self._include, event):
            return False
        return not (self._exclude is not None and _matches(self._exclude, event))


def compile_filter(
    include: Sequence[str] | None, exclude: Sequence[str] | None, provider: str
) -> EventFilter | None:
    """A filter, or ``None`` when every event passes (the hot path then checks nothing)."""
    if not include and not exclude:
        return None
    return EventFilter(include, exclude, provider)


def _compile(
    patterns: Sequence[str], provider: str, what: str
) -> tuple[frozenset[str], re.Pattern[str] | None]:
    kinds = set()
    names = []
    for pattern in patterns:
        if pattern.startswith(_KIND_PREFIX):
            kind = pattern[len(_KIND_PREFIX) :]
            if kind not in KINDS:
                raise ConfigError(
                    f"unknown kind {kind!r} in the {what} patterns of provider {provider!r} "
                    f"(kinds: {', '.join(sorted(KINDS))})",
                    variable=f"FANOUT_{env_token(provider)}_{what}",
                    provider=provider,
                )
            kinds.add(kind)
        else:
            names.append(fnmatch.translate(pattern))
    regex = re.compile("|".join(names)) if names else None
    return frozenset(kinds), regex


def _matches(compiled: tuple[frozenset[str], re.Pattern[str] | None], event: Event) -> bool:
    kinds, regex = compiled
    if event.kind in kinds:
        return True
    return regex is not None and event.name is not None and regex.match(event.name) is not None
