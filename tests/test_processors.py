from __future__ import annotations

import pytest

import fanout
from fanout import hookimpl
from fanout.processors import anonymize_ip


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"),
        ("::ffff:198.51.100.23", "198.51.100.0"),
        ("not an ip", None),
        # the IPv4 text fast path agrees with ipaddress on its edge cases
        (" 10.0.0.255 ", "10.0.0.0"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.0"),
        ("1.02.3.4", None),
        ("256.1.1.1", None),
        ("1.2.3", None),
        ("1.2.3.4.5", None),
        ("1.2.3.\u0664", None),
    ],
)
def test_anonymize_ip(ip, expected):
    assert anonymize_ip(ip) == expected


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("anonymize", {"ip": "203.0.113.0", "ua": "x"}),
        ("drop", {"ua": "x"}),
        ("keep", {"ip": "203.0.113.77", "ua": "x"}),
    ],
)
def test_ip_modes(make_client, memory, mode, expected):
    c = make_client(providers=[memory], sync=True, environ={"FANOUT_IP": mode})
    c.track("x", person_id="u", context={"ip": "203.0.113.77", "ua": "x"})
    assert dict(memory.events[0].context) == expected


def test_processors_run_in_order_may_drop_and_a_broken_one_is_skipped(make_client, memory, caplog):
    def enrich(e):
        return e.replace(properties={**e.properties, "env": "prod"})

    def drop_internal(e):
        return None if e.name and e.name.startswith("internal.") else e

    def broken(e):
        raise RuntimeError("processor bug")

    class Plugin:
        @hookimpl
        def register_processors(self, register):
            register("enrich", enrich)
            register("drop_internal", drop_internal)

    c = make_client(
        providers=[memory],
        sync=True,
        plugins=[Plugin()],
        environ={"FANOUT_PROCESSORS": "enrich,drop_internal"},
    )
    c.track("public", person_id="u")
    c.track("internal.debug", person_id="u")
    assert memory.names() == ["public"]
    assert memory.events[0].properties["env"] == "prod"

    c2 = make_client(providers=[memory], sync=True, processors=[broken, enrich])
    c2.track("still", person_id="u")
    assert memory.names()[-1] == "still" and "processor bug" in caplog.text


def test_unknown_processor_is_config_error(make_client, memory):
    from fanout import ConfigError

    with pytest.raises(ConfigError, match="FANOUT_PROCESSORS|unknown processor"):
        make_client(providers=[memory], environ={"FANOUT_PROCESSORS": "nope"})


def test_the_ip_processor_keeps_the_event_valid_and_its_size_an_upper_bound(make_client, memory):
    client = make_client(providers=[memory], sync=True, ip="anonymize")
    for ip in ("203.0.113.77", "2001:db8:85a3::8a2e:370:7334", "::ffff:198.51.100.9", "junk"):
        client.track("x", person_id="u", context={"ip": ip, "user_agent": "ua"})
    for event in memory.events:
        again = fanout.Event(*event)  # full validation of what the processor produced
        assert again.context == event.context
        assert event.size >= again.size  # the kept size never under-counts
    assert [e.context.get("ip") for e in memory.events] == [
        "203.0.113.0",
        "2001:db8:85a3::",
        "198.51.100.0",
        None,
    ]


def test_the_ip_processor_remembers_the_last_context_it_masked(make_client, memory):
    """The middleware shares one context object across a request's events."""
    client = make_client(providers=[memory], sync=True, ip="anonymize")
    shared = {"ip": "203.0.113.77", "user_agent": "ua"}
    for _ in range(3):
        client.track("x", person_id="u", context=shared)
    client.track("y", person_id="u", context={"ip": "198.51.100.4"})
    assert [e.context["ip"] for e in memory.events] == [
        "203.0.113.0",
        "203.0.113.0",
        "203.0.113.0",
        "198.51.100.0",
    ]


def test_the_ip_processor_masks_each_middleware_context_once_however_many_interleave(
    make_client, memory, monkeypatch
):
    """Concurrent visitors' requests interleave: each visitor's context (one checked object,
    recalled for its next requests) is masked once, its masked form kept on it, however
    many others come between; a plain mapping, new for each event, is masked each time;
    a context masked by one mode is masked again by another."""
    from fanout import processors
    from fanout._events import checked_context

    masked: list[str] = []
    real = processors.anonymize_ip

    def counted(value: str) -> str | None:
        masked.append(value)
        return real(value)

    monkeypatch.setattr(processors, "anonymize_ip", counted)
    client = make_client(providers=[memory], sync=True, ip="anonymize")
    visitors = [checked_context({"ip": f"198.51.100.{i}", "path": "/p"}) for i in range(3)]
    for _ in range(4):
        for ctx in visitors:
            client.track("x", person_id="u", context=ctx)
    assert len(memory.events) == 12 and len(masked) == 3
    assert [e.context["ip"] for e in memory.events] == ["198.51.100.0"] * 12
    assert all(e.context["path"] == "/p" for e in memory.events)
    for _ in range(2):
        client.track("y", person_id="u", context={"ip": "203.0.113.9"})
    assert len(masked) == 5  # a plain mapping: each time
    many = [checked_context({"ip": f"192.0.2.{i % 250}", "n": i}) for i in range(3000)]
    masked.clear()
    for _ in range(2):
        for ctx in many:
            client.track("z", person_id="u", context=ctx)
    assert len(masked) == len(many)
    assert [e.context["ip"] for e in memory.events[-2:]] == ["192.0.2.0"] * 2
    dropping = make_client(providers=[memory], sync=True, ip="drop")
    dropping.track("d", person_id="u", context=visitors[0])
    dropping.track("d", person_id="u", context=visitors[0])
    assert [dict(e.context) for e in memory.events[-2:]] == [{"path": "/p"}] * 2
    client.track("x", person_id="u", context=visitors[0])  # anonymized again, not dropped
    assert memory.events[-1].context["ip"] == "198.51.100.0" and len(masked) == len(many) + 1
