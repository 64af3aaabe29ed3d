"""The one-call body RudderStackProvider.encode writes is the message-by-message body."""

from __future__ import annotations

from fanout_rudderstack._message import to_message
from fanout_rudderstack._provider import MAX_MESSAGE_BYTES, RudderStackProvider
from fanout_segment import message
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
        bound = message.MESSAGE_GROWTH * event.size + MESSAGE_OVERHEAD
        assert len(encode_json(to_message(event))) <= bound


def test_a_page_message_past_twice_its_event_is_still_checked() -> None:
    """A page view in a request carries the request's URL in ``properties`` and in
    ``context.page``, and its query twice more as ``search``: such a message above
    RudderStack's 4 MiB is rejected alone, never sent in a one-call body."""
    url = "https://shop.example/p?q=" + "x" * 1_100_000
    page = Event("page", anonymous_id="a1", properties={"path": "/p"}, context={"url": url})
    assert 2 * page.size + MESSAGE_OVERHEAD <= MAX_MESSAGE_BYTES
    assert len(encode_json(to_message(page))) > MAX_MESSAGE_BYTES
    small = Event("track", person_id="u1", name="small")
    provider = RudderStackProvider("wk", "https://dp.example")
    body, rejected = provider.encode([small, page])
    assert list(rejected) == [1] and "byte limit" in rejected[1]
    assert b'"small"' in body and b"xxxx" not in body
