"""Ingest keys recently found valid, so a batch from one needs one worker-thread hand-off,
not two.

Looking a key up is a store call (a query, a SHA-256), so it runs in a worker thread: a
hand-off there and back per request, on top of the one that decodes and stores the batch,
and the event loop's part of a hand-off is a good share of its CPU per request. A key
found valid (and not rate-limited) is remembered here, by its hash, for :data:`TTL`
seconds; a request with a remembered key reads its body at once and the key is checked
again, with the rate limit, in the same worker-thread call that decodes the batch, before
anything is decoded. So a key revoked meanwhile (by this server's store or by the CLI in
another process) still stores nothing: its next batch is refused with 401, only after its
body was read. A refused key is forgotten, so its following requests are refused before
their bodies again.

The cache holds hashes and key listings (never a key) and at most :data:`MAX_KEYS` of
them; only keys that were valid get in, so unknown keys cannot fill it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from .keys import KeyInfo, hash_key

__all__ = ["MAX_KEYS", "TTL", "KeyCache"]

#: Seconds a key stays remembered after it was last looked up in the store.
TTL: Final = 10.0
#: Remembered keys at most; a full cache starts over (keys are few: one per deployment).
MAX_KEYS: Final = 4096


class KeyCache:
    """``get(key)``: the remembered listing of ``key`` or ``None``; ``put``, ``drop``."""

    def __init__(self, ttl: float = TTL, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        self._clock = clock
        self._keys: dict[str, tuple[KeyInfo, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> KeyInfo | None:
        found = self._keys.get(hash_key(key))
        if found is None:
            return None
        info, expires = found
        return info if self._clock() < expires else None

    def put(self, key: str, info: KeyInfo) -> None:
        digest = hash_key(key)
        with self._lock:
            if len(self._keys) >= self._max_keys and digest not in self._keys:
                self._keys.clear()
            self._keys[digest] = (info, self._clock() + self._ttl)

    def drop(self, key: str) -> None:
        with self._lock:
            self._keys.pop(hash_key(key), None)
