"""``Client``: validates each call, runs the processors and fans the event out.

The client owns no delivery logic of its own: each enabled provider gets a
:class:`~fanout._channel.Channel`, and the client only puts the same immutable event on
each of them. ``flush`` and ``shutdown`` spend one deadline across all channels together.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from . import _config, _lifecycle
from ._channel import Channel, ErrorCallback
from ._config import ClientOptions, resolve_delivery, resolve_settings
from ._deadletter import DeadLetters
from ._events import Event, build_event
from ._exceptions import ConfigError, FanoutError, InvalidEvent, PluginError
from ._plugins import Registry, load_registry
from ._report import FlushReport
from .processors import IPMode, Processor, ip_processor
from .provider import ALL_KINDS, BatchLimits, Provider, ProviderConfig, ProviderSpec

__all__ = ["Client", "ClientState"]

logger = logging.getLogger("fanout")

_DELIVERY_KWARGS = (
    "batch_size",
    "flush_interval",
    "queue_size",
    "queue_bytes",
    "overflow",
    "block_timeout",
    "max_retries",
    "request_timeout",
    "sync",
)


class ClientState(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class Client:
    """Sends every call to every enabled provider; never raises for delivery problems.

    Configuration comes from keyword arguments first, then the environment (see
    ``docs/configuration.md``). ``providers`` takes provider names and/or ready
    :class:`~fanout.Provider` objects (each needs a ``name`` attribute).

    Only ``InvalidEvent`` (bad input: nothing is queued anywhere) is raised by the tracking
    methods. Failed deliveries become statistics (:meth:`stats`), dead letters and
    ``on_error(failure)`` calls on the provider's worker thread.
    """

    def __init__(
        self,
        *,
        providers: Sequence[str | Provider] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        delivery: Mapping[str, Mapping[str, Any]] | None = None,
        processors: Sequence[str | Processor] | None = None,
        on_error: ErrorCallback | None = None,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        allow_plugins: Sequence[str] | None = None,
        disable_plugins: Sequence[str] | None = None,
        ip: IPMode | None = None,
        sync: bool | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        queue_size: int | None = None,
        queue_bytes: int | None = None,
        overflow: str | None = None,
        block_timeout: float | None = None,
        max_retries: int | None = None,
        request_timeout: float | None = None,
        shutdown_timeout: float | None = None,
        dead_letter_dir: str | None = None,
        max_event_bytes: int | None = None,
        environ: Mapping[str, str] | None = None,
        register_atexit: bool = True,
    ) -> None:
        env = _config.environ() if environ is None else environ
        named = [p for p in providers or () if isinstance(p, str)]
        instances = [p for p in providers or () if not isinstance(p, str)]
        self._options = ClientOptions.resolve(
            env,
            {
                "providers": tuple(named) if providers is not None else None,
                "plugins": allow_plugins,
                "disable_plugins": disable_plugins,
                "ip": ip,
                "shutdown_timeout": shutdown_timeout,
                "dead_letter_dir": dead_letter_dir,
                "max_event_bytes": max_event_bytes,
            },
        )
        self.registry: Registry = load_registry(
            load_entry_points=load_entry_points,
            allow=self._options.plugins,
            deny=self._options.disable_plugins,
            extra_plugins=plugins,
        )
        self._max_event_bytes = self._options.max_event_bytes
        self._secrets: list[str] = []
        global_kwargs = {
            k: v
            for k, v in {
                "batch_size": batch_size,
                "flush_interval": flush_interval,
                "queue_size": queue_size,
                "queue_bytes": queue_bytes,
                "overflow": overflow,
                "block_timeout": block_timeout,
                "max_retries": max_retries,
                "request_timeout": request_timeout,
                "sync": sync,
            }.items()
            if v is not None
        }
        dead_letters = (
            DeadLetters(self._options.dead_letter_dir)
            if self._options.dead_letter_dir is not None
            else None
        )
        self._channels: list[Channel] = []
        # (name, provider, limits, kinds): registered providers carry their declaration;
        # provider objects passed in may carry `limits` / `kinds` attributes.
        built: list[tuple[str, Provider, BatchLimits, frozenset[str]]] = []
        names = self._select_providers(env, explicit=providers is not None, instances=instances)
        settings = settings or {}
        delivery = delivery or {}
        try:
            for name in names:
                spec = self.registry.spec(name)
                values = resolve_settings(spec, env, settings.get(name))
                self._secrets += [
                    str(values[s.field]) for s in spec.settings if s.secret and values.get(s.field)
                ]
                opts = resolve_delivery(name, env, global_kwargs, delivery.get(name, {}))
                provider = self._build(spec, values, opts.request_timeout)
                built.append((name, provider, spec.limits, spec.kinds))
            for inst in instances:
                limits = getattr(inst, "limits", BatchLimits())
                kinds = frozenset(getattr(inst, "kinds", ALL_KINDS))
                built.append((_instance_name(inst), inst, limits, kinds))
            seen: set[str] = set()
            for name, provider, limits, kinds in built:
                if name in seen:
                    raise ConfigError(f"provider {name!r} is enabled twice", variable="providers")
                seen.add(name)
                self._channels.append(
                    Channel(
                        name,
                        provider,
                        options=resolve_delivery(name, env, global_kwargs, delivery.get(name, {})),
                        limits=limits,
                        kinds=kinds,
                        dead_letters=dead_letters,
                        on_error=on_error,
                        redact=self.redact,
                    )
                )
        except FanoutError:
            for _, provider, _, _ in built:
                _close_quietly(provider)
            raise
        self._processors = self._select_processors(processors)
        self._state = ClientState.OPEN
        self._shutdown_lock = threading.Lock()
        self._final_report: FlushReport | None = None
        if register_atexit:
            _lifecycle.register_client(self)
        logger.debug("fanout client ready: providers %s", ", ".join(self.providers))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Client:
        """A client configured by the environment alone (``kwargs`` still take precedence)."""
        return cls(environ=environ, **kwargs)

    # -- construction helpers -----------------------------------------------------------

    def _select_providers(
        self, env: Mapping[str, str], *, explicit: bool, instances: list[Provider]
    ) -> list[str]:
        chosen = self._options.providers
        if chosen is not None:
            variable = "providers" if explicit else "FANOUT_PROVIDERS"
            unknown = [n for n in chosen if n not in self.registry.providers]
            if unknown:
                installed = ", ".join(sorted(self.registry.providers))
                broken = [p.name for p in self.registry.plugins if p.error]
                hint = f"; plugins that failed to load: {', '.join(broken)}" if broken else ""
                raise ConfigError(
                    f"{variable} names unknown provider(s) {', '.join(unknown)} "
                    f"(installed: {installed}){hint}",
                    variable=variable,
                )
            return list(dict.fromkeys(chosen))
        if instances:
            return []
        auto = [
            spec.name
            for spec in self.registry.providers.values()
            if spec.auto_enable
            and spec.name not in self.registry.conflicts
            and not _config.missing_settings(spec, env)
        ]
        return auto or ["null"]

    def _build(self, spec: ProviderSpec, values: dict[str, Any], timeout: float) -> Provider:
        try:
            provider = spec.factory(ProviderConfig(spec.name, values, timeout))
        except FanoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - report which plugin failed, then stop
            raise PluginError(
                f"provider {spec.name!r} (plugin {spec.plugin}) failed to start: "
                f"{type(exc).__name__}: {self.redact(str(exc))}",
                plugin=spec.plugin,
            ) from None
        if not callable(getattr(provider, "send", None)):
            raise PluginError(f"provider {spec.name!r} has no send()", plugin=spec.plugin)
        return provider

    def _select_processors(self, processors: Sequence[str | Processor] | None) -> list[Processor]:
        chain: list[Processor] = []
        builtin = ip_processor(self._options.ip)  # type: ignore[arg-type]
        if builtin is not None:
            chain.append(builtin)
        names: Sequence[str | Processor] = (
            self._options.processors if processors is None else processors
        )
        for item in names:
            if callable(item):
                chain.append(item)
                continue
            try:
                chain.append(self.registry.processors[item])
            except KeyError:
                known = ", ".join(sorted(self.registry.processors)) or "none"
                raise ConfigError(
                    f"unknown processor {item!r} (registered: {known})",
                    variable="FANOUT_PROCESSORS",
                ) from None
        return chain

    def redact(self, text: str) -> str:
        """``text`` with every configured secret value masked (logs, dead letters, errors)."""
        for secret in self._secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    # -- properties ----------------------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """Names of the enabled providers, in fan-out order."""
        return [c.name for c in self._channels]

    @property
    def state(self) -> ClientState:
        return self._state

    def __repr__(self) -> str:
        return f"<fanout.Client providers={self.providers} state={self._state.value}>"

    # -- tracking ------------------------------------------------------------------------

    def track(
        self,
        name: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Record that ``name`` happened; returns the event id. Raises only ``InvalidEvent``."""
        event = build_event(
            "track",
            name=name,
            person_id=person_id,
            anonymous_id=anonymous_id,
            properties=properties,
            event_id=event_id,
            timestamp=timestamp,
            context=context,
            max_bytes=self._max_event_bytes,
        )
        self._dispatch(event)
        return event.event_id

    def identify(
        self,
        person_id: str,
        *,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Say who ``person_id`` is; with ``anonymous_id``, link that visitor to them."""
        if person_id is None:
            raise InvalidEvent("identify needs a person_id", path="person_id")
        event = build_event(
            "identify",
            person_id=person_id,
            anonymous_id=anonymous_id,
            traits=traits,
            event_id=event_id,
            timestamp=timestamp,
            context=context,
            max_bytes=self._max_event_bytes,
        )
        self._dispatch(event)
        return event.event_id

    def page(
        self,
        url_or_path: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        title: str | None = None,
        referrer: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Record a page view (server-rendered pages, redirects, API docs...)."""
        if not isinstance(url_or_path, str) or not url_or_path.strip():
            raise InvalidEvent("page needs a non-empty URL or path", path="url_or_path")
        props: dict[str, Any] = dict(properties or {})
        if url_or_path.startswith(("http://", "https://")):
            props["url"] = url_or_path
            props["path"] = urlsplit(url_or_path).path or "/"
        else:
            props["path"] = url_or_path
        if title is not None:
            props["title"] = title
        if referrer is not None:
            props["referrer"] = referrer
        event = build_event(
            "page",
            name=name,
            person_id=person_id,
            anonymous_id=anonymous_id,
            properties=props,
            event_id=event_id,
            timestamp=timestamp,
            context=context,
            max_bytes=self._max_event_bytes,
        )
        self._dispatch(event)
        return event.event_id

    def alias(
        self,
        person_id: str,
        previous_id: str,
        *,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Declare that ``previous_id`` (an old or anonymous id) is now ``person_id``."""
        if person_id is None:
            raise InvalidEvent("alias needs a person_id", path="person_id")
        event = build_event(
            "alias",
            person_id=person_id,
            previous_id=previous_id,
            event_id=event_id,
            timestamp=timestamp,
            context=context,
            max_bytes=self._max_event_bytes,
        )
        self._dispatch(event)
        return event.event_id

    def group(
        self,
        group_type: str,
        group_id: str,
        *,
        person_id: str | None = None,
        anonymous_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: Any = None,
        context: Mapping[str, Any] | None = None,
    ) -> str:
        """Put the person in a group (``company``, ``team``...) and set the group's traits."""
        event = build_event(
            "group",
            person_id=person_id,
            anonymous_id=anonymous_id,
            group_type=group_type,
            group_id=group_id,
            traits=traits,
            event_id=event_id,
            timestamp=timestamp,
            context=context,
            max_bytes=self._max_event_bytes,
        )
        self._dispatch(event)
        return event.event_id

    def send(self, event: Event) -> str:
        """Fan out an already built :class:`Event` (imports, replays of dead letters)."""
        if not isinstance(event, Event):
            raise InvalidEvent("send() takes a fanout.Event")
        self._dispatch(event)
        return event.event_id

    def _dispatch(self, event: Event) -> None:
        # Sentry-style boundary: nothing below may raise into the caller.
        try:
            for processor in self._processors:
                try:
                    result: object = processor(event)  # user code: checked below
                except Exception:  # noqa: BLE001 - a broken processor must not lose the event
                    logger.exception("processor %r raised; event passed on unchanged", processor)
                    continue
                if result is None:  # the processor filtered the event out on purpose
                    return
                if not isinstance(result, Event):
                    logger.error("processor %r returned %r, not an Event", processor, type(result))
                    continue
                event = result
            for channel in self._channels:
                channel.emit(event)
        except Exception:  # noqa: BLE001
            logger.exception("internal error while dispatching an event")

    # -- delivery control ----------------------------------------------------------------

    def stats(self) -> FlushReport:
        """Counts per provider since start (delivered, failed, dropped by reason, pending)."""
        return FlushReport({c.name: c.report() for c in self._channels})

    def flush(self, timeout: float | None = None) -> FlushReport:
        """Deliver everything queued so far, waiting at most ``timeout`` seconds in all.

        ``None`` means ``FANOUT_SHUTDOWN_TIMEOUT``. Returns what each provider delivered,
        failed, dropped and left pending; it never raises for delivery problems.
        """
        deadline = time.monotonic() + self._timeout(timeout)
        targets = [(c, c.request_flush()) for c in self._channels]
        done = True
        try:
            for channel, target in targets:
                done = channel.wait(target, deadline) and done
        finally:
            for channel, _ in targets:
                channel.end_flush()
        return FlushReport({c.name: c.report() for c in self._channels}, timed_out=not done)

    def shutdown(self, timeout: float | None = None) -> FlushReport:
        """Flush within ``timeout`` (one deadline for all providers), then close.

        What is still queued at the deadline is dead-lettered and counted as dropped
        (``shutdown_timeout``). Later calls are counted as dropped (``closed``), not raised.
        """
        with self._shutdown_lock:
            if self._final_report is not None:
                return self._final_report
            deadline = time.monotonic() + self._timeout(timeout)
            targets = [(c, c.request_flush()) for c in self._channels]
            for channel in self._channels:
                channel.begin_shutdown()
            done = True
            for channel, target in targets:
                done = channel.wait(target, deadline) and done
            for channel in self._channels:
                channel.finish_shutdown(deadline)
            self._state = ClientState.CLOSED
            self._final_report = FlushReport(
                {c.name: c.report() for c in self._channels}, timed_out=not done
            )
            return self._final_report

    close = shutdown

    def _shutdown_at_exit(self) -> None:
        """The exit hook's call (:mod:`fanout._lifecycle`): shut down, say what was lost."""
        if self._state is ClientState.OPEN:
            report = self.shutdown()
            if not report.ok:
                logger.warning("fanout: at exit, not everything was delivered: %r", report)

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self._options.shutdown_timeout
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        return float(timeout)

    def __enter__(self) -> Client:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this fanout.Client is shut down; create a new one")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


Client.__module__ = "fanout"


def _instance_name(provider: Provider) -> str:
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"provider object {type(provider).__name__} needs a 'name' attribute",
            variable="providers",
        )
    return name


def _close_quietly(provider: Provider) -> None:
    try:
        provider.close()
    except Exception:  # noqa: BLE001
        logger.debug("closing a provider after a failed start raised", exc_info=True)
