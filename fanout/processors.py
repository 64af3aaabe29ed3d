"""Processors: plain callables run in order on every event before it is fanned out.

A processor takes an :class:`~fanout.Event` and returns it, a changed copy
(``event.replace(...)``), or ``None`` to drop the event for every provider. They run on the
caller's thread, so they should be cheap; an exception in one is logged and the event goes
on unchanged (a broken enrichment must not lose data or raise into business code).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias

from ._events import Event, with_masked_context

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

    # The middleware hands every event of a request (and of repeat requests) the same
    # context object: remember the last one masked. One tuple, swapped atomically, so
    # threads never see half of it; a strong reference keeps the id from being reused.
    last: tuple[object, Mapping[str, Any] | None] = (None, None)

    def process_ip(event: Event) -> Event:
        nonlocal last
        context = event.context
        if not context:
            return event
        seen, remembered = last
        if seen is context:
            return event if remembered is None else with_masked_context(event, remembered)
        if not any(key in context for key in IP_KEYS):
            return event
        changed = dict(context)
        for key in IP_KEYS:
            if key not in changed:
                continue
            value = changed.pop(key)
            if mode == "anonymize" and isinstance(value, str):
                masked = anonymize_ip(value)
                if masked is not None:
                    changed[key] = masked
        if changed == context:
            last = (context, None)
            return event  # already anonymised: spare the copy and its validation
        # Only removals and masked (never longer) ASCII addresses: no new validation needed.
        result = with_masked_context(event, changed)
        last = (context, result.context)
        return result

    process_ip.__name__ = f"ip_{mode}"
    return process_ip
