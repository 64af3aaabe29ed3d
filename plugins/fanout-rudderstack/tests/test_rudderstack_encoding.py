"""The one-call body RudderStackProvider.encode writes is the message-by-message body."""

from __future__ import annotations

from fanout_rudderstack._message import to_message
from fanout_rudderstack._provider import MAX_MESSAGE_BYTES
from fanout_segment.message import MESSAGE_OVERHEAD, encode_batch

from fanout import Event
from fanout.http import encode_json


def test_one_call_body_and_the_bound_it_relies_on() -> None:
    url = "https://shop.example/p?" + "q=é%20x&" * 40
    events = [
        Event("track", person_id="u1", name="paid", properties={"n": 1, "s": "é\n"}),
        Event("identify", person_id="u1", anonymous_id="a1", traits={"t": [1, None]}),
        Event("page", anonymous_id="a1", name="Home", context={"url": url, "ip": "1.2.3.4"}),
        Event("group", person_id="u1", group_type="co", group_id="c1", traits={"x": 1}),
    ]
    common = {"build": to_message, "vendor": "R", "max_message_bytes": MAX_MESSAGE_BYTES}
    trailer = {"sentAt": "t"}
    one_call, none = encode_batch(events, trailer=trailer, overhead=MESSAGE_OVERHEAD, **common)
    checked, none_either = encode_batch(events, trailer=trailer, **common)
    assert none == none_either == {}
    assert one_call == checked
    for event in events:
        assert len(encode_json(to_message(event))) <= 2 * event.size + MESSAGE_OVERHEAD
