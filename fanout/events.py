"""Standard events: the ones every product tracks from the server, with one schema.

Each helper tracks one event with a fixed name and fixed property keys, so every backend
(and every team) sees ``checkout.finished`` with ``amount`` in minor units and an ISO
currency code, whoever wrote the call. Money is an ``int`` in the currency's minor unit
(cents: 1999 means 19.99 USD), never a float, so sums in a backend are exact.

Every helper takes the client first (``None``, the default, means the default client), then
keyword arguments; ``properties`` adds extra keys (the standard keys win on a clash), and
``event_id`` makes the call idempotent (pass the Stripe event id from a webhook). The
values are checked here and the event is validated like any other: bad input raises
:class:`fanout.InvalidEvent` and nothing is sent. The names and keys are listed in
``docs/events.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from ._client import Client
from ._default import get_default_client
from ._exceptions import InvalidEvent

__all__ = [
    "CHECKOUT_FINISHED",
    "CHECKOUT_STARTED",
    "Interval",
    "PAYMENT_FAILED",
    "REFUNDED",
    "SIGNED_UP",
    "SUBSCRIPTION_CANCELLED",
    "SUBSCRIPTION_CREATED",
    "SUBSCRIPTION_RENEWED",
    "checkout_finished",
    "checkout_started",
    "payment_failed",
    "refunded",
    "signed_up",
    "subscription_cancelled",
    "subscription_created",
    "subscription_renewed",
]

SIGNED_UP: Final = "user.signed_up"
CHECKOUT_STARTED: Final = "checkout.started"
CHECKOUT_FINISHED: Final = "checkout.finished"
SUBSCRIPTION_CREATED: Final = "subscription.created"
SUBSCRIPTION_RENEWED: Final = "subscription.renewed"
SUBSCRIPTION_CANCELLED: Final = "subscription.cancelled"
PAYMENT_FAILED: Final = "payment.failed"
REFUNDED: Final = "payment.refunded"

#: Billing interval of a plan; ``one_time`` for a purchase that does not renew.
Interval = Literal["day", "week", "month", "year", "one_time"]
_INTERVALS: Final = frozenset({"day", "week", "month", "year", "one_time"})
_CURRENCY: Final = re.compile(r"^[A-Za-z]{3}$")


def _amount(value: Any, field: str = "amount") -> int:
    if type(value) is not int or value < 0:
        raise InvalidEvent(
            f"{field} must be a non-negative int in the currency's minor unit (cents), "
            f"not {value!r}",
            path=f"properties.{field}",
        )
    return value


def _currency(value: Any) -> str:
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise InvalidEvent(
            f"currency must be a 3-letter ISO 4217 code such as 'usd', not {value!r}",
            path="properties.currency",
        )
    return value.upper()


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{field} must be a non-empty string", path=f"properties.{field}")
    return value


def _optional_text(value: Any, field: str) -> str | None:
    """An optional text field: ``None`` stays unset, anything else is checked by ``_text``."""
    return None if value is None else _text(value, field)


def _interval(value: Any) -> str:
    if value not in _INTERVALS:
        raise InvalidEvent(
            f"interval must be one of {', '.join(sorted(_INTERVALS))}, not {value!r}",
            path="properties.interval",
        )
    return str(value)


def _track(
    client: Client | None,
    name: str,
    standard: dict[str, Any],
    *,
    person_id: str | None,
    anonymous_id: str | None,
    properties: Mapping[str, Any] | None,
    event_id: str | None,
    timestamp: Any,
    context: Mapping[str, Any] | None,
) -> str:
    props = {**(properties or {}), **{k: v for k, v in standard.items() if v is not None}}
    return (client or get_default_client()).track(
        name,
        person_id=person_id,
        anonymous_id=anonymous_id,
        properties=props,
        event_id=event_id,
        timestamp=timestamp,
        context=context,
    )


def signed_up(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    anonymous_id: str | None = None,
    method: str | None = None,
    plan: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``user.signed_up``: an account was created. ``method`` is how (``email``,
    ``google``...). Pair it with ``identify(person_id, anonymous_id=...)`` to link the
    visitor's earlier events."""
    standard = {
        "method": _optional_text(method, "method"),
        "plan": _optional_text(plan, "plan"),
    }
    return _track(client, SIGNED_UP, standard, person_id=person_id, anonymous_id=anonymous_id,
                  properties=properties, event_id=event_id, timestamp=timestamp, context=context)


def checkout_started(
    client: Client | None = None,
    /,
    *,
    checkout_id: str,
    amount: int,
    currency: str,
    plan: str | None = None,
    interval: Interval | None = None,
    person_id: str | None = None,
    anonymous_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``checkout.started``: a checkout session was opened (not yet paid)."""
    standard = {
        "checkout_id": _text(checkout_id, "checkout_id"),
        "amount": _amount(amount),
        "currency": _currency(currency),
        "plan": _optional_text(plan, "plan"),
        "interval": None if interval is None else _interval(interval),
    }
    return _track(client, CHECKOUT_STARTED, standard, person_id=person_id,
                  anonymous_id=anonymous_id, properties=properties, event_id=event_id,
                  timestamp=timestamp, context=context)


def checkout_finished(
    client: Client | None = None,
    /,
    *,
    checkout_id: str,
    amount: int,
    currency: str,
    plan: str,
    interval: Interval,
    person_id: str | None = None,
    anonymous_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``checkout.finished``: the customer paid. From a payment webhook, pass the provider's
    event id (``evt_...``) as ``event_id`` so a redelivered webhook counts once."""
    standard = {
        "checkout_id": _text(checkout_id, "checkout_id"),
        "amount": _amount(amount),
        "currency": _currency(currency),
        "plan": _text(plan, "plan"),
        "interval": _interval(interval),
    }
    return _track(client, CHECKOUT_FINISHED, standard, person_id=person_id,
                  anonymous_id=anonymous_id, properties=properties, event_id=event_id,
                  timestamp=timestamp, context=context)


def _subscription(
    client: Client | None,
    name: str,
    *,
    subscription_id: str,
    plan: str,
    interval: str | None,
    amount: int | None,
    currency: str | None,
    extra: dict[str, Any],
    person_id: str,
    properties: Mapping[str, Any] | None,
    event_id: str | None,
    timestamp: Any,
    context: Mapping[str, Any] | None,
) -> str:
    if (amount is None) != (currency is None):
        raise InvalidEvent("amount and currency go together", path="properties.currency")
    standard = {
        "subscription_id": _text(subscription_id, "subscription_id"),
        "plan": _text(plan, "plan"),
        "interval": None if interval is None else _interval(interval),
        "amount": None if amount is None else _amount(amount),
        "currency": None if currency is None else _currency(currency),
        **extra,
    }
    return _track(client, name, standard, person_id=person_id, anonymous_id=None,
                  properties=properties, event_id=event_id, timestamp=timestamp,
                  context=context)


def subscription_created(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    subscription_id: str,
    plan: str,
    interval: Interval,
    amount: int,
    currency: str,
    trial_days: int | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``subscription.created``: a recurring plan started (``trial_days`` if on trial)."""
    if trial_days is not None and (type(trial_days) is not int or trial_days < 0):
        raise InvalidEvent("trial_days must be a non-negative int", path="properties.trial_days")
    return _subscription(client, SUBSCRIPTION_CREATED, subscription_id=subscription_id,
                         plan=plan, interval=interval, amount=amount, currency=currency,
                         extra={"trial_days": trial_days}, person_id=person_id,
                         properties=properties, event_id=event_id, timestamp=timestamp,
                         context=context)


def subscription_renewed(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    subscription_id: str,
    plan: str,
    interval: Interval,
    amount: int,
    currency: str,
    period: int | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``subscription.renewed``: a billing period was paid (``period``: 2 for the first
    renewal). Typically tracked by a cron job or an ``invoice.paid`` webhook."""
    if period is not None and (type(period) is not int or period < 1):
        raise InvalidEvent("period must be a positive int", path="properties.period")
    return _subscription(client, SUBSCRIPTION_RENEWED, subscription_id=subscription_id,
                         plan=plan, interval=interval, amount=amount, currency=currency,
                         extra={"period": period}, person_id=person_id,
                         properties=properties, event_id=event_id, timestamp=timestamp,
                         context=context)


def subscription_cancelled(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    subscription_id: str,
    plan: str,
    reason: str | None = None,
    at_period_end: bool = True,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``subscription.cancelled``: ``at_period_end`` is False for an immediate cancellation."""
    if not isinstance(at_period_end, bool):
        raise InvalidEvent("at_period_end must be a bool", path="properties.at_period_end")
    extra = {
        "reason": _optional_text(reason, "reason"),
        "at_period_end": at_period_end,
    }
    return _subscription(client, SUBSCRIPTION_CANCELLED, subscription_id=subscription_id,
                         plan=plan, interval=None, amount=None, currency=None, extra=extra,
                         person_id=person_id, properties=properties, event_id=event_id,
                         timestamp=timestamp, context=context)


def payment_failed(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    payment_id: str,
    amount: int,
    currency: str,
    reason: str | None = None,
    attempt: int | None = None,
    subscription_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``payment.failed``: a charge was declined (``reason``: the processor's decline code)."""
    if attempt is not None and (type(attempt) is not int or attempt < 1):
        raise InvalidEvent("attempt must be a positive int", path="properties.attempt")
    standard = {
        "payment_id": _text(payment_id, "payment_id"),
        "amount": _amount(amount),
        "currency": _currency(currency),
        "reason": _optional_text(reason, "reason"),
        "attempt": attempt,
        "subscription_id": _optional_text(subscription_id, "subscription_id"),
    }
    return _track(client, PAYMENT_FAILED, standard, person_id=person_id, anonymous_id=None,
                  properties=properties, event_id=event_id, timestamp=timestamp,
                  context=context)


def refunded(
    client: Client | None = None,
    /,
    *,
    person_id: str,
    payment_id: str,
    amount: int,
    currency: str,
    reason: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    timestamp: Any = None,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``payment.refunded``: ``amount`` (minor units) was given back; may be partial."""
    standard = {
        "payment_id": _text(payment_id, "payment_id"),
        "amount": _amount(amount),
        "currency": _currency(currency),
        "reason": _optional_text(reason, "reason"),
    }
    return _track(client, REFUNDED, standard, person_id=person_id, anonymous_id=None,
                  properties=properties, event_id=event_id, timestamp=timestamp,
                  context=context)
