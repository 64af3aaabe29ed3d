"""Projects and server keys: ``sk_`` + 256 random bits, shown once, stored as a SHA-256 hash.

A key belongs to one project and carries scopes: ``ingest`` (``POST /v1/batch`` only, the
key deployed on every app server) or ``read`` (the timeline endpoints only). A database
made before projects existed is migrated with its keys as ``ingest`` + ``read`` keys of the
``default`` project, so nothing that worked stops working.

A fast hash is the right tool here (unlike passwords): the keys are long random strings, so
there is nothing to brute-force, and the hash is computed on every request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from typing import Final

from .protocol import KEY_PREFIX

__all__ = [
    "DEFAULT_PROJECT",
    "INGEST",
    "READ",
    "SCOPES",
    "KeyInfo",
    "Project",
    "bearer_key",
    "check_project_name",
    "generate_key",
    "hash_key",
]

INGEST: Final = "ingest"
READ: Final = "read"
SCOPES: Final = (INGEST, READ)
#: The project that migrated keys and events belong to; ``keys create`` uses it by default.
DEFAULT_PROJECT: Final = "default"
_PROJECT_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


@dataclasses.dataclass(frozen=True)
class Project:
    id: int
    name: str
    created_at: str


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """A key as listed: never the key itself."""

    id: int
    label: str
    created_at: str
    revoked_at: str | None
    project_id: int
    project: str
    scopes: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def scopes_text(scopes: tuple[str, ...]) -> str:
    """How scopes are stored: ``"ingest"``, ``"read"`` or ``"ingest,read"``."""
    return ",".join(s for s in SCOPES if s in scopes)


def parse_scopes(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.split(",") if s in SCOPES)


def check_project_name(name: str) -> str:
    """Project names are short slugs (they appear in logs and CLI output)."""
    if not _PROJECT_NAME.fullmatch(name):
        raise ValueError(
            "a project name is 1-63 characters of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


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
