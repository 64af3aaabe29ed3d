"""fanout's one JSON encoder: orjson where installed, the standard library otherwise, and the
same JSON values either way for every value an event can hold (the same bytes too, but for
how some floats are spelled: ``1e-7`` against ``1e-07``)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import pickle
import random
import struct
import subprocess
import sys
import uuid
from decimal import Decimal

import pytest

from fanout import _json
from fanout._events import ReadOnlyDict, build_event
from fanout.http import encode_json

PROPERTIES = {
    "plan": "pro",
    "amount": 4999,
    "ratio": 0.1,
    "big_float": 1e16,
    "tiny": 5e-324,
    "negative": -12,
    "flag": True,
    "nothing": None,
    "text": 'quote " backslash \\ newline \n tab \t control \x01 line-sep \u2028 euro € emoji 🎉',
    "nested": {"list": [1, [2, {"deep": "x"}]], "empty": {}, "empty_list": []},
    "when": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    "price": Decimal("19.99"),
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def sample_events():
    return [
        build_event("track", name="checkout.finished", person_id="u1", properties=PROPERTIES),
        build_event("identify", person_id="u1", anonymous_id="a1", traits={"email": "ä@x.io"}),
        build_event("group", person_id="u1", group_type="company", group_id="acme"),
        build_event("alias", person_id="u1", previous_id="a1", context={"ip": "10.0.0.1"}),
        build_event("page", anonymous_id="a2", properties={"path": "/"}),
    ]


def test_orjson_is_the_encoder_on_cpython():
    if sys.implementation.name == "cpython":
        assert _json.FAST


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.kind)
def test_both_encoders_write_the_same_bytes(event):
    fast = _json.dumps(event.to_dict())
    assert fast == _json.dumps_stdlib(event.to_dict())
    assert fast == event.to_json()
    assert json.loads(fast) == json.loads(json.dumps(event.to_dict()))


def test_floats_read_back_exactly_from_both_encoders_though_spelled_differently():
    rng = random.Random(7)
    floats = [1e-7, 1e-5, -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2]
    floats += [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20000)]
    floats = [f for f in floats if math.isfinite(f)]
    spelled_differently = 0
    for f in floats:
        fast, reference = _json.dumps(f), _json.dumps_stdlib(f)
        assert json.loads(fast) == json.loads(reference) == f
        assert math.copysign(1, json.loads(fast)) == math.copysign(1, f)
        spelled_differently += fast != reference
    assert _json.dumps(1e-7) in (b"1e-7", b"1e-07")  # orjson's spelling, or the reference's
    assert spelled_differently < len(floats) // 10


def test_compact_utf8_without_escaping_non_ascii():
    out = _json.dumps({"a": "€", "b": [1, 2]})
    assert out == '{"a":"€","b":[1,2]}'.encode()
    assert encode_json({"a": "€"}) == _json.dumps({"a": "€"})


def test_integers_beyond_64_bits_fall_back_exactly():
    # Events refuse them (test_validate.py); a plugin's own payload may still hold one.
    big = 2**70 + 1
    assert json.loads(_json.dumps({"big": big, "neg": -big})) == {"big": big, "neg": -big}
    e = build_event("track", name="x", person_id="u", properties={"max": 2**63 - 1})
    assert json.loads(e.to_json())["properties"] == {"max": 2**63 - 1}


def test_lone_surrogate_is_a_unicode_error_as_with_the_standard_library():
    with pytest.raises(UnicodeEncodeError):
        _json.dumps({"a": "\ud800"})


def test_event_mappings_are_read_only_dicts_that_encode_as_objects():
    e = sample_events()[0]
    assert type(e.properties) is ReadOnlyDict
    assert json.loads(_json.dumps({"p": e.properties}))["p"]["plan"] == "pro"


def test_to_dict_is_a_changeable_copy():
    e = sample_events()[0]
    d = e.to_dict()
    d["properties"]["plan"] = "free"
    d["traits"]["x"] = 1
    assert e.properties["plan"] == "pro" and dict(e.traits) == {}


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.__setitem__("x", 1),
        lambda d: d.__delitem__("plan"),
        lambda d: d.pop("plan"),
        lambda d: d.popitem(),
        lambda d: d.clear(),
        lambda d: d.setdefault("x", 1),
        lambda d: d.update(x=1),
        lambda d: d.__ior__({"x": 1}),
    ],
)
def test_read_only_dict_refuses_every_change(change):
    props = sample_events()[0].properties
    before = dict(props)
    with pytest.raises(TypeError, match="read-only"):
        change(props)
    assert dict(props) == before


def test_read_only_dict_survives_pickle_and_copy():
    props = sample_events()[0].properties
    for clone in (pickle.loads(pickle.dumps(props)), copy.copy(props), copy.deepcopy(props)):
        assert type(clone) is ReadOnlyDict and clone == props
    plain = props.copy()
    plain["x"] = 1
    assert type(plain) is dict and "x" not in props


def test_without_orjson_the_output_is_the_same(tmp_path):
    """A real interpreter where orjson cannot be imported (as on PyPy): the console provider
    writes the same lines through the standard library."""
    script = f"""
import sys
sys.modules["orjson"] = None  # import orjson now raises ImportError
import sys, datetime as dt
sys.path.insert(0, {str(tmp_path)!r})
from fanout import _json
assert not _json.FAST
from fanout.providers.console import ConsoleProvider
from test_json_events import sample_events
p = ConsoleProvider({str(tmp_path / "stdlib.jsonl")!r})
p.send(sample_events())
p.close()
"""
    # The same events, built in both interpreters from one module.
    (tmp_path / "test_json_events.py").write_text(
        "from fanout._events import build_event\n"
        "import datetime as dt\n"
        "def sample_events():\n"
        "    t = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)\n"
        "    return [build_event('track', name='n€', person_id='u', event_id='e1', timestamp=t,\n"
        "                        properties={'a': [1, 2.5, None, {'b': 'é'}], 'big': 2**63-1}),\n"
        "            build_event('group', person_id='u', group_type='c', group_id='g',\n"
        "                        event_id='e2', timestamp=t, traits={'n': 'x'})]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    sys.path.insert(0, str(tmp_path))
    try:
        from test_json_events import sample_events as shared_events
    finally:
        sys.path.remove(str(tmp_path))
    from fanout.providers.console import ConsoleProvider

    p = ConsoleProvider(str(tmp_path / "fast.jsonl"))
    p.send(shared_events())
    p.close()
    fast = (tmp_path / "fast.jsonl").read_bytes()
    assert fast == (tmp_path / "stdlib.jsonl").read_bytes()
    assert len(fast.splitlines()) == 2
