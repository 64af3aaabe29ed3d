"""JSON on the way out: the one encoder behind every body and line fanout writes.

Encoding is most of what the console and collector workers do per event, and a worker's
CPU is taken from the application's own threads (they share the GIL), so it is paid on
the request path too. orjson, a core dependency on CPython, encodes a typical event in
0.2 µs against 2-3 µs for the standard library. The standard library takes over where
orjson is not installed (PyPy) and for what orjson refuses outright (an integer beyond 64
bits: validation keeps them out of events, but a plugin's own payload may hold one). The
two write the same text but for some floats: both write the shortest form that reads back
as the same float, orjson as ``1e-7`` or ``0.00001`` where the standard library writes
``1e-07`` or ``1e-05``.

This module only encodes. orjson would read an integer beyond 64 bits as a float without
a word, so the collector, which must store what it was sent, decodes with orjson only
bodies without such a number (:func:`fanout.collector.ingest.decode_body`).

An :class:`~fanout.Event`'s mappings are read-only dict subclasses, which both encoders
write directly. Any other mapping a plugin passes in (a ``MappingProxyType``, say) becomes a
dict through ``default=dict``, a call into C.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by a subprocess test without orjson
    _orjson_dumps = None
else:
    _orjson_dumps = orjson.dumps

__all__ = ["dumps", "dumps_stdlib", "dumps_strict", "FAST"]

#: Whether orjson is in use (the benchmarks print it beside their figures).
FAST = _orjson_dumps is not None

_STDLIB = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=dict
)


def dumps_stdlib(obj: Any) -> bytes:
    """Compact UTF-8 JSON by the standard library (the fallback, and the reference)."""
    return _STDLIB.encode(obj).encode("utf-8")


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON: no spaces, non-ASCII as UTF-8, keys in insertion order.

    Raises ``UnicodeEncodeError`` for a string holding a lone surrogate, and ``TypeError``
    or ``ValueError`` for what JSON cannot hold (values fanout validated never do).
    """
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(obj, default=dict)
        except TypeError:
            pass  # an int beyond 64 bits, or a lone surrogate: let the reference decide
    return dumps_stdlib(obj)


#: :func:`dumps` without the fallback: validation's check that ``obj`` encodes as it is.
#: Raises (``TypeError`` under orjson, ``UnicodeEncodeError`` or ``ValueError`` under the
#: standard library) for a lone surrogate, a non-finite float or an integer beyond 64 bits,
#: anywhere in ``obj``. orjson's own function where installed: one C call on the hot path.
dumps_strict: Callable[[Any], bytes] = (
    _orjson_dumps if _orjson_dumps is not None else dumps_stdlib
)
