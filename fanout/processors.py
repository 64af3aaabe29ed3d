"""Processors: plain callables run in order on every event before it is fanned out.

A processor takes an :class:`~fanout.Event` and returns it, a changed copy
(``event.replace(...)``), or ``None`` to drop the event for every provider. They run on the
caller's thread, so they should be cheap; an exception in one is logged and the event goes
on unchanged (a broken enrichment must not lose data or raise into business code).

Because they see every event whole on the caller's thread, a client with processors of
the application's reads a request's context there too; without them, the client reads it
off the request's thread and applies the built-in IP processor then (fanout/_deferred.py).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Literal, TypeAlias

from ._events import CheckedDict, Event, with_masked_context

__all__ = ["Processor", "IPMode", "ip_processor", "anonymize_ip"]

#: ``(event) -> event | None``. Return ``None`` to drop the event.
Processor: TypeAlias = Callable[[Event], "Event | None"]

IPMode = Literal["keep", "anonymize", "drop"]

#: Keys of ``context`` treated as IP addresses.
IP_KEYS = ("ip",)

# A dotted-quad IPv4 address exactly as ``ipaddress`` accepts it (no leading zeros).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")


def anonymize_ip(value: str) -> str | None:
    """Zero the last octet of an IPv4 address, or the last 80 bits of an IPv6 one.

    That is what Google Analytics' IP anonymisation does, and it keeps a city-level
    location while no longer identifying a subscriber. Returns ``None`` when ``value`` is
    not an IP address (it is then dropped rather than passed on unexamined).

    A plain IPv4 address, the usual case on every request a middleware tracks, is masked
    as text: ``ipaddress`` costs several microseconds per call.
    """
    value = value.strip()
    if _IPV4.fullmatch(value):
        return value[: value.rindex(".")] + ".0"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if ip.version == 4:
        return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFF00))
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return str(ipaddress.IPv4Address(int(mapped) & 0xFFFFFF00))
    return str(ipaddress.IPv6Address(int(ip) & ~((1 << 80) - 1)))


def ip_processor(mode: IPMode) -> Processor | None:
    """The built-in processor for ``FANOUT_IP``: ``None`` when there is nothing to do."""
    if mode == "keep":
        return None

    def process_ip(event: Event) -> Event:
        context = event.context
        if not context:
            return event
        # The middleware hand every event of a request, and of a visitor's next requests,
        # the same context object (a CheckedDict): its masked form is kept on it, for the
        # next event that carries it, as long as it lives (concurrent visitors' requests
        # interleave, so one last-masked context would miss at each switch). Another
        # mapping is new for each event, and masked each time.
        checked = context if type(context) is CheckedDict else None
        if checked is not None:
            kept = checked.masked
            if kept is not None and kept[0] == mode:
                masked = kept[1]
                return event if masked is None else with_masked_context(event, masked)
        for key in IP_KEYS:
            if key in context:
                break
        else:
            return event
        changed = dict(context)
        for key in IP_KEYS:
            if key not in changed:
                continue
            value = changed.pop(key)
            if mode == "anonymize" and isinstance(value, str):
                masked_ip = anonymize_ip(value)
                if masked_ip is not None:
                    changed[key] = masked_ip
        # Only removals and masked (never longer) ASCII addresses: no new validation needed.
        result = event if changed == context else with_masked_context(event, changed)
        if checked is not None:  # two threads may both mask it: either keeps the same
            checked.masked = (mode, None if result is event else result.context)
        return result  # unchanged when already anonymised: spares the copy's validation

    process_ip.__name__ = f"ip_{mode}"
    return process_ip
