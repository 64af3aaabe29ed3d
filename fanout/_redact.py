"""Masking secret values in text: one implementation for the client and every plugin.

Settings declared ``secret=True`` (API keys, write keys, tokens) must never reach logs,
dead letters, ``on_error`` or exception text, even when a server or proxy echoes them back
in an error body. Backends that take a key as HTTP basic auth with an empty password
echo it base64-encoded, so that form is masked too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TypeVar

from ._exceptions import DeliveryError, PermanentError, RetryableError

__all__ = ["Redactor"]

E = TypeVar("E", bound=DeliveryError)
MASK = "***"


class Redactor:
    """Masks each secret, and its ``base64("secret:")`` basic-auth form, in text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            forms.add(base64.b64encode(f"{secret}:".encode()).decode("ascii"))
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted(forms, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"<Redactor {len(self._secrets)} forms>"

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def extend(self, secrets: Iterable[str | None]) -> Redactor:
        """A redactor that also masks ``secrets``."""
        return Redactor([*self._secrets, *secrets])

    def error(self, exc: E) -> E:
        """``exc`` with its message and per-event reasons masked (in place; returned)."""
        if not self._secrets:
            return exc
        exc.args = (self(str(exc)),)
        if isinstance(exc, (PermanentError, RetryableError)) and exc.rejected:
            exc.rejected = {i: self(r) for i, r in exc.rejected.items()}
        return exc
