"""Server keys: ``sk_`` + 256 random bits, shown once, stored only as a SHA-256 hash.

A fast hash is the right tool here (unlike passwords): the keys are long random strings, so
there is nothing to brute-force, and the hash is computed on every request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

from .protocol import KEY_PREFIX

__all__ = ["KeyInfo", "generate_key", "hash_key", "bearer_key"]


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the key itself."""

    id: int
    label: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def bearer_key(authorization: str | None) -> str | None:
    """The key from an ``Authorization: Bearer sk_...`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if not hmac.compare_digest(scheme.lower(), "bearer"):
        return None
    value = value.strip()
    return value if value.startswith(KEY_PREFIX) and len(value) < 200 else None
