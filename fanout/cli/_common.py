"""Helpers shared by the subcommands: building a client with errors as clean exits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from .._client import Client
from .._exceptions import ConfigError, InvalidEvent, PluginError
from ..provider import ProviderSpec, Setting


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn fanout's user-facing errors into ``fanout: error: ...`` and exit status 2."""
    try:
        yield
    except (ConfigError, PluginError, InvalidEvent) as exc:
        raise click.UsageError(str(exc)) from None


def build_client(providers: tuple[str, ...] = (), **kwargs: Any) -> Client:
    with user_errors():
        return Client(providers=list(providers) or None, **kwargs)


def parse_pairs(pairs: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` options; values that parse as JSON (numbers, true, {"a":1}) are JSON."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out[key] = value
    return out


def setting_source(spec: ProviderSpec, setting: Setting, env: Any) -> str | None:
    for name in setting.env_names(spec.name):
        if str(env.get(name, "")).strip():
            return name
    return None


def mask(value: str) -> str:
    """Secrets are never shown, not even partly."""
    return "****" if value else ""
