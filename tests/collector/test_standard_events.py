"""``fanout.events``: fixed names and keys, checked values, delivered to the collector."""

from __future__ import annotations

import pytest

from fanout import InvalidEvent, events
from fanout.testing import capture_events


def test_each_helper_tracks_its_name_and_keys():
    with capture_events() as captured:
        events.signed_up(person_id="u1", anonymous_id="a1", method="email", plan="pro")
        events.checkout_started(checkout_id="cs_1", amount=2900, currency="usd",
                                anonymous_id="a1")
        events.checkout_finished(person_id="u1", checkout_id="cs_1", amount=2900,
                                 currency="usd", plan="pro", interval="month",
                                 event_id="evt_1", properties={"coupon": "X", "amount": -1})
        events.subscription_created(person_id="u1", subscription_id="sub_1", plan="pro",
                                    interval="month", amount=2900, currency="EUR",
                                    trial_days=14)
        events.subscription_renewed(person_id="u1", subscription_id="sub_1", plan="pro",
                                    interval="year", amount=29000, currency="eur", period=2)
        events.subscription_cancelled(person_id="u1", subscription_id="sub_1", plan="pro",
                                      reason="too expensive", at_period_end=False)
        events.payment_failed(person_id="u1", payment_id="pi_1", amount=2900, currency="usd",
                              reason="card_declined", attempt=2)
        events.refunded(person_id="u1", payment_id="pi_1", amount=500, currency="usd")
    got = [(e.name, dict(e.properties)) for e in captured.events]
    assert got == [
        ("user.signed_up", {"method": "email", "plan": "pro"}),
        ("checkout.started", {"checkout_id": "cs_1", "amount": 2900, "currency": "USD"}),
        ("checkout.finished", {"coupon": "X", "amount": 2900, "checkout_id": "cs_1",
                               "currency": "USD", "plan": "pro", "interval": "month"}),
        ("subscription.created", {"subscription_id": "sub_1", "plan": "pro",
                                  "interval": "month", "amount": 2900, "currency": "EUR",
                                  "trial_days": 14}),
        ("subscription.renewed", {"subscription_id": "sub_1", "plan": "pro",
                                  "interval": "year", "amount": 29000, "currency": "EUR",
                                  "period": 2}),
        ("subscription.cancelled", {"subscription_id": "sub_1", "plan": "pro",
                                    "reason": "too expensive", "at_period_end": False}),
        ("payment.failed", {"payment_id": "pi_1", "amount": 2900, "currency": "USD",
                            "reason": "card_declined", "attempt": 2}),
        ("payment.refunded", {"payment_id": "pi_1", "amount": 500, "currency": "USD"}),
    ]
    assert captured.events[2].event_id == "evt_1"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"amount": 19.99}, "properties.amount"),  # money is never a float
        ({"amount": True}, "properties.amount"),
        ({"amount": -5}, "properties.amount"),
        ({"currency": "dollars"}, "properties.currency"),
        ({"interval": "fortnight"}, "properties.interval"),
        ({"plan": ""}, "properties.plan"),
        ({"person_id": None}, "person_id"),
    ],
)
def test_bad_values_raise_invalid_event_and_send_nothing(kwargs, path):
    good = {"person_id": "u1", "checkout_id": "cs_1", "amount": 100, "currency": "usd",
            "plan": "pro", "interval": "month"}
    with capture_events() as captured:
        with pytest.raises(InvalidEvent) as info:
            events.checkout_finished(**{**good, **kwargs})
        assert info.value.path == path
    assert captured.events == []


def test_standard_events_reach_the_collector_with_the_documented_schema(collector, clients):
    client = clients(collector.url, collector.key)
    events.checkout_finished(client, person_id="u9", checkout_id="cs_9", amount=1999,
                             currency="gbp", plan="team", interval="year", event_id="evt_9")
    events.checkout_finished(client, person_id="u9", checkout_id="cs_9", amount=1999,
                             currency="gbp", plan="team", interval="year", event_id="evt_9")
    assert client.flush(10).ok
    (stored,) = collector.timeline("u9")["events"]
    assert stored["name"] == "checkout.finished" and stored["event_id"] == "evt_9"
    assert stored["properties"] == {"checkout_id": "cs_9", "amount": 1999, "currency": "GBP",
                                    "plan": "team", "interval": "year"}
