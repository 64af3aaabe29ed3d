"""Configuration: the one place that reads ``os.environ``.

Every variable fanout reads is declared here as an :class:`EnvVar` constant, so the docs,
``fanout check`` and ``fanout plugins`` list them straight from the source. Precedence, most
specific first: a per-provider keyword argument, ``FANOUT_<PROVIDER>_<KNOB>``, a global
keyword argument, ``FANOUT_<KNOB>``, the default. A malformed value is a :class:`ConfigError`
naming the variable, never a silent fallback, and never quoting the value (it may be secret).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

from ._events import DEFAULT_MAX_EVENT_BYTES
from ._exceptions import ConfigError
from .provider import ProviderSpec, Setting, env_token

__all__ = [
    "ENV_VARS",
    "ClientOptions",
    "Delivery",
    "EnvVar",
    "Overflow",
    "resolve_settings",
    "missing_settings",
]

T = TypeVar("T")
Overflow = Literal["drop_new", "block"]


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected one of 1, 0, true, false, yes, no, on, off")


def parse_positive_int(value: str) -> int:
    n = int(value.strip().replace("_", ""))
    if n <= 0:
        raise ValueError("expected a positive integer")
    return n


def parse_non_negative_int(value: str) -> int:
    n = int(value.strip().replace("_", ""))
    if n < 0:
        raise ValueError("expected an integer >= 0")
    return n


def parse_positive_float(value: str) -> float:
    x = float(value.strip())
    if not x > 0 or x == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return x


def parse_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = value.strip().lower()
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return v

    return parse


@dataclasses.dataclass(frozen=True)
class EnvVar(Generic[T]):
    """A documented environment variable: its name, default, parser and meaning."""

    name: str
    default: T
    parse: Callable[[str], T]
    help: str
    #: Whether FANOUT_<PROVIDER>_<suffix> may override it per provider.
    per_provider: bool = False

    @property
    def suffix(self) -> str:
        return self.name.removeprefix("FANOUT_")

    def read(self, env: Mapping[str, str], provider: str | None = None) -> T | None:
        """The parsed value from ``env`` (per-provider first), or ``None`` when unset."""
        names = [self.name]
        if provider is not None and self.per_provider:
            names.insert(0, f"FANOUT_{env_token(provider)}_{self.suffix}")
        for name in names:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                return self.parse(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"{name} is malformed: {exc}", variable=name, provider=provider
                ) from None
        return None


FANOUT_PROVIDERS: Final = EnvVar(
    "FANOUT_PROVIDERS",
    None,
    parse_list,
    "Comma-separated providers to enable. Unset: every installed provider whose required "
    "settings are present, or `null` when none is.",
)
FANOUT_PLUGINS: Final = EnvVar(
    "FANOUT_PLUGINS",
    None,
    parse_list,
    "Allow-list of entry-point plugins to load (names in the `fanout` group). Unset: all.",
)
FANOUT_DISABLE_PLUGINS: Final = EnvVar[tuple[str, ...]](
    "FANOUT_DISABLE_PLUGINS", (), parse_list, "Entry-point plugins never to load."
)
FANOUT_PROCESSORS: Final = EnvVar[tuple[str, ...]](
    "FANOUT_PROCESSORS",
    (),
    parse_list,
    "Registered processors to run, in order, after the built-in IP processor.",
)
FANOUT_IP: Final = EnvVar(
    "FANOUT_IP",
    "anonymize",
    _choice("keep", "anonymize", "drop"),
    "What to do with `context.ip`: keep it, anonymize it (zero the last IPv4 octet or the "
    "last 80 bits of IPv6), or drop it.",
)
#: Events per request when neither FANOUT_BATCH_SIZE nor the provider says otherwise.
DEFAULT_BATCH_SIZE: Final = 100
FANOUT_BATCH_SIZE: Final = EnvVar[int | None](
    "FANOUT_BATCH_SIZE",
    None,
    parse_positive_int,
    "Most events per request (capped by the provider's own limit). Unset: the provider's "
    "preferred size (`BatchLimits.preferred_events`), else 100.",
    per_provider=True,
)
FANOUT_FLUSH_INTERVAL: Final = EnvVar(
    "FANOUT_FLUSH_INTERVAL",
    1.0,
    parse_positive_float,
    "Seconds a partial batch may wait before it is sent.",
    per_provider=True,
)
FANOUT_QUEUE_SIZE: Final = EnvVar(
    "FANOUT_QUEUE_SIZE",
    200_000,
    parse_positive_int,
    "Most events waiting in one provider's queue.",
    per_provider=True,
)
FANOUT_QUEUE_BYTES: Final = EnvVar(
    "FANOUT_QUEUE_BYTES",
    256 * 1024 * 1024,
    parse_positive_int,
    "Most bytes of memory (estimated per event, within 2x) held by one provider's queue.",
    per_provider=True,
)
FANOUT_OVERFLOW: Final = EnvVar(
    "FANOUT_OVERFLOW",
    "drop_new",
    _choice("drop_new", "block"),
    "When a queue is full: `drop_new` drops the new event and counts it; `block` makes the "
    "caller wait up to FANOUT_BLOCK_TIMEOUT for room, then drops and counts it.",
    per_provider=True,
)
FANOUT_BLOCK_TIMEOUT: Final = EnvVar(
    "FANOUT_BLOCK_TIMEOUT",
    1.0,
    parse_positive_float,
    "Seconds a caller may wait for room in a full queue under `FANOUT_OVERFLOW=block`.",
    per_provider=True,
)
FANOUT_MAX_RETRIES: Final = EnvVar[int | None](
    "FANOUT_MAX_RETRIES",
    None,
    parse_non_negative_int,
    "Most retries of one batch before it is dead-lettered. Unset: no count, only "
    "FANOUT_RETRY_TIMEOUT bounds them (rate-limit answers, 429, never count).",
    per_provider=True,
)
FANOUT_RETRY_TIMEOUT: Final = EnvVar(
    "FANOUT_RETRY_TIMEOUT",
    600.0,
    parse_positive_float,
    "Seconds one batch is retried (backoff with full jitter, at least 0.5 s apart, "
    "Retry-After honoured up to 60 s) before it is dead-lettered: an ordinary deploy or "
    "outage of a backend costs nothing.",
    per_provider=True,
)
FANOUT_REQUEST_TIMEOUT: Final = EnvVar(
    "FANOUT_REQUEST_TIMEOUT",
    10.0,
    parse_positive_float,
    "Seconds one request to a backend may take.",
    per_provider=True,
)
FANOUT_SYNC: Final = EnvVar(
    "FANOUT_SYNC",
    False,
    parse_bool,
    "Send each call in the caller's thread before it returns (serverless), still isolated "
    "per provider.",
    per_provider=True,
)
FANOUT_DEFER_CONTEXT: Final = EnvVar(
    "FANOUT_DEFER_CONTEXT",
    True,
    parse_bool,
    "Read a request's context (what fanout's middleware give its events) on the client's "
    "deferred stage, off the request's thread. `0` reads it on the request's thread: the "
    "request pays for the reading, the process spends a little less CPU in all.",
)
FANOUT_SYNC_TIMEOUT: Final = EnvVar(
    "FANOUT_SYNC_TIMEOUT",
    3.0,
    parse_positive_float,
    "Sync mode: seconds one call may spend delivering to all sync providers together (in "
    "parallel); what did not make it is dead-lettered and counted (`sync_timeout`).",
)
FANOUT_EVENTS: Final = EnvVar[tuple[str, ...] | None](
    "FANOUT_EVENTS",
    None,
    parse_list,
    "Only these events reach the provider (usually set per provider, "
    "`FANOUT_<P>_EVENTS`): glob patterns on event names (`checkout.*,subscription.*`) "
    "and `kind:<kind>` for whole kinds (`kind:identify`). Others are skipped (`routed`).",
    per_provider=True,
)
FANOUT_EXCLUDE_EVENTS: Final = EnvVar[tuple[str, ...] | None](
    "FANOUT_EXCLUDE_EVENTS",
    None,
    parse_list,
    "These events never reach the provider (`FANOUT_<P>_EXCLUDE_EVENTS`), same patterns as "
    "FANOUT_EVENTS; skipped and counted (`routed`).",
    per_provider=True,
)
FANOUT_METRICS: Final = EnvVar(
    "FANOUT_METRICS",
    "auto",
    _choice("auto", "otel", "off"),
    "Delivery counts as OpenTelemetry metrics: `auto` when `opentelemetry-api` is installed "
    "(the `otel` extra), `otel` to insist (a ConfigError without it), `off`.",
)
FANOUT_SHUTDOWN_TIMEOUT: Final = EnvVar(
    "FANOUT_SHUTDOWN_TIMEOUT",
    5.0,
    parse_positive_float,
    "Seconds the exit hook spends delivering what is still queued, across all providers.",
)
FANOUT_DELIVERY: Final = EnvVar(
    "FANOUT_DELIVERY",
    "thread",
    _choice("thread", "process"),
    "Where providers run: `thread` (worker threads in the app process) or `process` (one "
    "delivery process beside the app; the app pays one hand-off per event whatever the "
    "number of providers). See docs/performance.md.",
)
FANOUT_DEAD_LETTER_DIR: Final = EnvVar(
    "FANOUT_DEAD_LETTER_DIR",
    None,
    Path,
    "Directory for dead-letter files (`<provider>.jsonl`). Unset: no files; failures are "
    "still counted and passed to `on_error`.",
)
FANOUT_MAX_EVENT_BYTES: Final = EnvVar(
    "FANOUT_MAX_EVENT_BYTES",
    DEFAULT_MAX_EVENT_BYTES,
    parse_positive_int,
    "Largest accepted event (encoded bytes, escapes included); larger calls raise InvalidEvent.",
)

# -- durable spool (fanout/_spool.py; docs/spool.md) ------------- spool: begin
FANOUT_SPOOL_DIR: Final = EnvVar(
    "FANOUT_SPOOL_DIR",
    None,
    Path,
    "Directory for the durable spool: each provider's queue is also written to disk (per "
    "process) and a new process delivers what dead ones left. Unset: memory queues only.",
)
FANOUT_SPOOL_SYNC: Final = EnvVar(
    "FANOUT_SPOOL_SYNC",
    False,
    parse_bool,
    "With a spool, make each call return only once its event is on disk (fdatasync), "
    "instead of within the 50 ms group-commit window.",
)
FANOUT_SPOOL_MAX_BYTES: Final = EnvVar(
    "FANOUT_SPOOL_MAX_BYTES",
    1024 * 1024 * 1024,
    parse_positive_int,
    "Most bytes (approximate encoded size) one provider's spool holds; past it new events "
    "are dropped and counted (`queue_full`).",
)
FANOUT_SPOOL_MAX_AGE: Final = EnvVar(
    "FANOUT_SPOOL_MAX_AGE",
    7 * 24 * 3600.0,
    parse_positive_float,
    "Seconds a spooled event may wait; older events in a dead process's spool are dropped "
    "and counted (`expired`) instead of delivered.",
)
# ---------------------------------------------------------------- spool: end

#: Every variable the core reads, in documentation order.
ENV_VARS: Final[tuple[EnvVar[Any], ...]] = (
    FANOUT_PROVIDERS,
    FANOUT_PLUGINS,
    FANOUT_DISABLE_PLUGINS,
    FANOUT_PROCESSORS,
    FANOUT_IP,
    FANOUT_SYNC,
    FANOUT_SYNC_TIMEOUT,
    FANOUT_DEFER_CONTEXT,
    FANOUT_DELIVERY,
    FANOUT_BATCH_SIZE,
    FANOUT_FLUSH_INTERVAL,
    FANOUT_QUEUE_SIZE,
    FANOUT_QUEUE_BYTES,
    FANOUT_OVERFLOW,
    FANOUT_BLOCK_TIMEOUT,
    FANOUT_MAX_RETRIES,
    FANOUT_RETRY_TIMEOUT,
    FANOUT_REQUEST_TIMEOUT,
    FANOUT_EVENTS,
    FANOUT_EXCLUDE_EVENTS,
    FANOUT_METRICS,
    FANOUT_SHUTDOWN_TIMEOUT,
    FANOUT_DEAD_LETTER_DIR,
    FANOUT_MAX_EVENT_BYTES,
    FANOUT_SPOOL_DIR,  # spool
    FANOUT_SPOOL_SYNC,  # spool
    FANOUT_SPOOL_MAX_BYTES,  # spool
    FANOUT_SPOOL_MAX_AGE,  # spool
)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The knobs of one channel, resolved for one provider: the one list of them.

    Each field with a ``FANOUT_<FIELD>`` variable in :data:`ENV_VARS` (``per_provider``) is
    read from the environment, globally and as ``FANOUT_<PROVIDER>_<FIELD>``; keyword
    arguments to ``Client`` and its per-provider ``delivery=`` mapping use the same names.
    """

    batch_size: int | None = FANOUT_BATCH_SIZE.default
    flush_interval: float = FANOUT_FLUSH_INTERVAL.default
    queue_size: int = FANOUT_QUEUE_SIZE.default
    queue_bytes: int = FANOUT_QUEUE_BYTES.default
    overflow: Overflow = "drop_new"
    block_timeout: float = FANOUT_BLOCK_TIMEOUT.default
    max_retries: int | None = FANOUT_MAX_RETRIES.default
    retry_timeout: float = FANOUT_RETRY_TIMEOUT.default
    request_timeout: float = FANOUT_REQUEST_TIMEOUT.default
    sync: bool = False
    events: tuple[str, ...] | None = None
    exclude_events: tuple[str, ...] | None = None
    #: Backoff before retry n is uniform in ``[retry_base, min(retry_cap, retry_base * 2**n)]``.
    retry_base: float = 0.5
    retry_cap: float = 30.0

    @classmethod
    def resolve(
        cls,
        provider: str,
        env: Mapping[str, str],
        global_kwargs: Mapping[str, Any],
        provider_kwargs: Mapping[str, Any],
    ) -> Delivery:
        """Most specific first: per-provider kwarg, per-provider env, kwarg, env, default."""
        unknown = (set(global_kwargs) | set(provider_kwargs)) - DELIVERY_FIELDS
        if unknown:
            raise ConfigError(
                f"unknown delivery setting(s) {', '.join(sorted(unknown))}",
                variable=sorted(unknown)[0],
                provider=provider,
            )
        values: dict[str, Any] = {}
        for field in DELIVERY_FIELDS:
            var = DELIVERY_VARS.get(field)
            if provider_kwargs.get(field) is not None:
                values[field] = provider_kwargs[field]
                continue
            if var is not None:
                per = f"FANOUT_{env_token(provider)}_{var.suffix}"
                if env.get(per, "").strip():
                    values[field] = _read_one(var, per, env, provider)
                    continue
            if global_kwargs.get(field) is not None:
                values[field] = global_kwargs[field]
                continue
            if var is not None:
                value = var.read(env)
                if value is not None:
                    values[field] = value
        for field in ("events", "exclude_events"):
            if isinstance(values.get(field), (list, set, frozenset)):
                values[field] = tuple(values[field])
        options = cls(**values)
        _check_delivery(options, provider)
        return options


#: Delivery field → its variable: every per-provider variable names a Delivery field.
DELIVERY_VARS: Final[dict[str, EnvVar[Any]]] = {
    var.suffix.lower(): var for var in ENV_VARS if var.per_provider
}
DELIVERY_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Delivery))
assert set(DELIVERY_VARS) <= DELIVERY_FIELDS, "a per-provider variable without a field"


def _read_one(var: EnvVar[Any], name: str, env: Mapping[str, str], provider: str) -> Any:
    try:
        return var.parse(env[name])
    except ValueError as exc:
        raise ConfigError(f"{name} is malformed: {exc}", variable=name, provider=provider) from None


def _check_delivery(options: Delivery, provider: str) -> None:
    """Keyword arguments skip the env parsers, so check them the same way here."""
    checks: list[tuple[str, bool]] = [
        (
            "batch_size",
            options.batch_size is None
            or (isinstance(options.batch_size, int) and options.batch_size > 0),
        ),
        ("queue_size", isinstance(options.queue_size, int) and options.queue_size > 0),
        ("queue_bytes", isinstance(options.queue_bytes, int) and options.queue_bytes > 0),
        (
            "max_retries",
            options.max_retries is None
            or (isinstance(options.max_retries, int) and options.max_retries >= 0),
        ),
        ("retry_timeout", _positive(options.retry_timeout)),
        ("flush_interval", _positive(options.flush_interval)),
        ("block_timeout", _positive(options.block_timeout)),
        ("request_timeout", _positive(options.request_timeout)),
        ("overflow", options.overflow in ("drop_new", "block")),
        ("sync", isinstance(options.sync, bool)),
        ("events", _patterns(options.events)),
        ("exclude_events", _patterns(options.exclude_events)),
    ]
    for field, ok in checks:
        if not ok:
            raise ConfigError(
                f"{field} for provider {provider!r} is malformed", variable=field, provider=provider
            )


def _patterns(value: object) -> bool:
    return value is None or (
        isinstance(value, tuple) and all(isinstance(p, str) and p for p in value)
    )


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < float("inf")


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """Client-wide settings (not per provider)."""

    providers: tuple[str, ...] | None
    plugins: tuple[str, ...] | None
    disable_plugins: tuple[str, ...]
    processors: tuple[str, ...]
    ip: str
    shutdown_timeout: float
    sync_timeout: float
    metrics: str
    dead_letter_dir: Path | None
    max_event_bytes: int
    #: ``thread`` or ``process`` (``FANOUT_DELIVERY``; fanout/_relay.py).
    delivery_mode: str = "thread"
    #: ``FANOUT_DEFER_CONTEXT`` (fanout/_deferred.py).
    defer_context: bool = True

    @classmethod
    def resolve(cls, env: Mapping[str, str], kwargs: Mapping[str, Any]) -> ClientOptions:
        def pick(field: str, var: EnvVar[Any]) -> Any:
            if kwargs.get(field) is not None:
                return kwargs[field]
            value = var.read(env)
            return var.default if value is None else value

        options = cls(
            providers=pick("providers", FANOUT_PROVIDERS),
            plugins=pick("plugins", FANOUT_PLUGINS),
            disable_plugins=tuple(pick("disable_plugins", FANOUT_DISABLE_PLUGINS)),
            processors=tuple(pick("processor_names", FANOUT_PROCESSORS)),
            ip=pick("ip", FANOUT_IP),
            shutdown_timeout=pick("shutdown_timeout", FANOUT_SHUTDOWN_TIMEOUT),
            sync_timeout=pick("sync_timeout", FANOUT_SYNC_TIMEOUT),
            metrics=pick("metrics", FANOUT_METRICS),
            dead_letter_dir=_path_or_none(pick("dead_letter_dir", FANOUT_DEAD_LETTER_DIR)),
            max_event_bytes=pick("max_event_bytes", FANOUT_MAX_EVENT_BYTES),
            delivery_mode=pick("delivery_mode", FANOUT_DELIVERY),
            defer_context=pick("defer_context", FANOUT_DEFER_CONTEXT),
        )
        if options.ip not in ("keep", "anonymize", "drop"):
            raise ConfigError("ip must be keep, anonymize or drop", variable="FANOUT_IP")
        if options.delivery_mode not in ("thread", "process"):
            raise ConfigError("delivery_mode must be thread or process", variable="delivery_mode")
        if not _positive(options.shutdown_timeout):
            raise ConfigError("shutdown_timeout must be positive", variable="shutdown_timeout")
        if not _positive(options.sync_timeout):
            raise ConfigError("sync_timeout must be positive", variable="sync_timeout")
        if not isinstance(options.defer_context, bool):
            raise ConfigError("defer_context must be true or false", variable="defer_context")
        return options


def _path_or_none(value: Any) -> Path | None:
    return None if value is None else Path(value)


def environ() -> Mapping[str, str]:
    """The process environment; the only read of ``os.environ`` in fanout."""
    return os.environ


# -- provider settings -------------------------------------------------------------------


def _raw_setting(
    spec: ProviderSpec, setting: Setting, env: Mapping[str, str]
) -> tuple[str, str] | None:
    for name in setting.env_names(spec.name):
        raw = env.get(name)
        if raw is not None and raw.strip() != "":
            return name, raw
    return None


def missing_settings(
    spec: ProviderSpec, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> list[Setting]:
    """Required settings of ``spec`` that neither ``overrides`` nor the environment give."""
    overrides = overrides or {}
    return [
        s
        for s in spec.required_settings()
        if overrides.get(s.field) is None
        and s.default is None
        and _raw_setting(spec, s, env) is None
    ]


def resolve_settings(
    spec: ProviderSpec, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every declared setting of ``spec``, parsed; ``ConfigError`` names what is wrong."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - {s.field for s in spec.settings}
    if unknown:
        raise ConfigError(
            f"provider {spec.name!r} has no setting(s) {', '.join(sorted(unknown))}",
            variable=sorted(unknown)[0],
            provider=spec.name,
        )
    values: dict[str, Any] = {}
    for setting in spec.settings:
        if overrides.get(setting.field) is not None:
            values[setting.field] = overrides[setting.field]
            continue
        found = _raw_setting(spec, setting, env)
        if found is None:
            if setting.default is not None:
                found = (setting.env_names(spec.name)[0], setting.default)
            elif setting.required:
                names = " or ".join(setting.env_names(spec.name))
                raise ConfigError(
                    f"provider {spec.name!r} is enabled but {names} is not set",
                    variable=setting.env_names(spec.name)[0],
                    provider=spec.name,
                )
            else:
                values[setting.field] = None
                continue
        name, raw = found
        try:
            values[setting.field] = setting.parse(raw.strip())
        except ValueError as exc:
            detail = "" if setting.secret else f": {exc}"
            raise ConfigError(
                f"{name} (provider {spec.name!r}) is malformed{detail}",
                variable=name,
                provider=spec.name,
            ) from None
    return values
