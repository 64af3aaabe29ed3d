"""Named instances and routing, against real HTTP fronts speaking the collector protocol."""

from __future__ import annotations

import pytest
from test_faults import Front

import fanout
from fanout.provider import Setting


def _env(**fronts: Front) -> dict[str, str]:
    env: dict[str, str] = {}
    for token, front in fronts.items():
        env[f"FANOUT_{token}_URL"] = front.url
        env[f"FANOUT_{token}_KEY"] = f"sk_{token.lower()}"
    return env


def test_two_instances_of_one_provider_each_get_their_own_channel():
    with Front(lambda n: None) as us, Front(lambda n: None) as eu:
        env = {"FANOUT_PROVIDERS": "collector,collector:eu", **_env(COLLECTOR=us, COLLECTOR_EU=eu)}
        env["FANOUT_COLLECTOR_EU_BATCH_SIZE"] = "7"
        client = fanout.Client(environ=env, load_entry_points=False, register_atexit=False)
        assert client.providers == ["collector", "collector:eu"]
        ids = [client.track("x", person_id="u", properties={"i": i}) for i in range(20)]
        report = client.shutdown(10)
    assert set(us.accepted) == set(eu.accepted) == set(ids)
    assert us.duplicates == eu.duplicates == 0
    assert report["collector"].delivered == report["collector:eu"].delivered == 20
    assert report["collector:eu"].batches == 3  # its own FANOUT_COLLECTOR_EU_BATCH_SIZE


def test_vendor_alias_variables_belong_to_the_unnamed_instance_only():
    setting = Setting("api_key", aliases=("POSTHOG_API_KEY",), required=True, secret=True)
    assert setting.env_names("posthog") == ("FANOUT_POSTHOG_API_KEY", "POSTHOG_API_KEY")
    assert setting.env_names("posthog:eu") == ("FANOUT_POSTHOG_EU_API_KEY",)


def test_an_instance_missing_its_own_settings_names_its_variable():
    env = {"FANOUT_PROVIDERS": "collector:eu", "FANOUT_COLLECTOR_URL": "http://127.0.0.1:1"}
    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(environ=env, load_entry_points=False, register_atexit=False)
    assert info.value.variable == "FANOUT_COLLECTOR_EU_URL"


def test_per_provider_event_patterns_route_and_count_skips():
    with Front(lambda n: None) as all_, Front(lambda n: None) as revenue:
        env = {
            "FANOUT_PROVIDERS": "collector,collector:revenue",
            **_env(COLLECTOR=all_, COLLECTOR_REVENUE=revenue),
            "FANOUT_COLLECTOR_REVENUE_EVENTS": "checkout.*,subscription.*,kind:identify",
            "FANOUT_COLLECTOR_EXCLUDE_EVENTS": "internal.*",
        }
        client = fanout.Client(environ=env, load_entry_points=False, register_atexit=False)
        paid = client.track("checkout.finished", person_id="u")
        renewed = client.track("subscription.renewed", person_id="u")
        viewed = client.track("page.viewed", person_id="u")
        debug = client.track("internal.debug", person_id="u")
        who = client.identify("u", traits={"plan": "pro"})
        report = client.shutdown(10)
    assert set(revenue.accepted) == {paid, renewed, who}
    assert set(all_.accepted) == {paid, renewed, viewed, who}
    assert debug not in all_.accepted
    r, a = report["collector:revenue"], report["collector"]
    assert (r.delivered, r.skipped, r.losses) == (3, 2, {"routed": 2})
    assert (a.delivered, a.skipped, a.losses) == (4, 1, {"routed": 1})


def test_per_call_routing_only_and_exclude(make_client):
    from fanout.testing import InMemoryProvider

    a, b, c = InMemoryProvider("a"), InMemoryProvider("b"), InMemoryProvider("c")
    client = make_client(providers=[a, b, c], sync=True)
    client.track("only-a", person_id="u", providers=["a"])
    client.track("not-b", person_id="u", exclude=["b"])
    client.identify("u", providers=["b", "c"], exclude=["c"])
    assert a.names() == ["only-a", "not-b"]
    assert b.of_kind("identify") and b.names() == [None]
    assert c.names() == ["not-b"]
    stats = client.stats()
    assert {n: stats[n].losses.get("routed", 0) for n in "abc"} == {"a": 1, "b": 2, "c": 2}


def test_unknown_provider_names_in_a_call_are_invalid_and_nothing_is_sent(make_client, memory):
    client = make_client(providers=[memory], sync=True)
    with pytest.raises(fanout.InvalidEvent) as info:
        client.track("x", person_id="u", providers=["posthgo"])
    assert info.value.path == "providers" and "posthgo" in str(info.value)
    with pytest.raises(fanout.InvalidEvent):
        client.track("x", person_id="u", exclude="memory")  # a string, not a list
    assert memory.events == []


def test_bad_kind_in_patterns_is_a_config_error_naming_the_variable():
    env = {"FANOUT_PROVIDERS": "null", "FANOUT_NULL_EVENTS": "kind:purchase"}
    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(environ=env, load_entry_points=False, register_atexit=False)
    assert info.value.variable == "FANOUT_NULL_EVENTS"
