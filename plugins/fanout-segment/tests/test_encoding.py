"""encode_batch's one-call shortcut writes exactly what its message-by-message path writes."""

from __future__ import annotations

from fanout_segment import message
from fanout_segment._provider import MAX_MESSAGE_BYTES, SegmentProvider
from fanout_segment.message import MESSAGE_OVERHEAD, encode_batch, to_message

from fanout import Event
from fanout.http import encode_json


def _events() -> list[Event]:
    url = "https://shop.example/p?" + "q=é%20x&" * 40
    return [
        Event("track", person_id="u1", name="paid", properties={"n": 1, "s": "é\n"}),
        Event("track", anonymous_id="a1", name="x", context={"url": url, "ip": "1.2.3.4"}),
        Event("identify", person_id="u1", anonymous_id="a1", traits={"t": [1, None]}),
        Event("page", person_id="u1", name="Home", properties={"url": url}),
        Event("page", anonymous_id="a1", properties={"path": "/p"}, context={"url": url}),
        Event("alias", person_id="u1", previous_id="a1"),
        Event("group", person_id="u1", group_type="co", group_id="c1", traits={"x": 1}),
    ]


def test_the_shortcut_body_is_encode_batchs_body() -> None:
    provider = SegmentProvider("wk")
    events = _events()
    body, rejected = provider.encode(events)
    assert rejected == {}
    trailer = {"sentAt": "t", "writeKey": "wk"}
    reference, none = encode_batch(
        events, build=to_message, vendor="Segment", max_message_bytes=MAX_MESSAGE_BYTES,
        trailer=trailer,
    )
    assert none == {}
    ours, _, tail = body.partition(b',"sentAt":')
    theirs, _, _ = reference.partition(b',"sentAt":')
    assert ours == theirs and tail.endswith(b',"writeKey":"wk"}')
    # The bound the shortcut relies on: no message is longer than growth * size + overhead.
    for event in events:
        bound = message.MESSAGE_GROWTH * event.size + MESSAGE_OVERHEAD
        assert len(encode_json(to_message(event))) <= bound


def test_a_large_event_takes_the_checked_path() -> None:
    big = Event("track", person_id="u1", name="big", properties={"blob": "x" * 40_000})
    small = Event("track", person_id="u1", name="small")
    body, rejected = SegmentProvider("wk").encode([small, big])
    assert list(rejected) == [1] and b'"small"' in body and b'"big"' not in body


def test_a_page_message_past_twice_its_event_is_still_checked() -> None:
    """A page view in a request repeats the request's URL in ``properties`` and in
    ``context.page``, and its query twice more as ``search``: nearly four times the event.
    Such a message above Segment's 32 KB is rejected alone, never sent in a one-call body."""
    url = "https://shop.example/p?q=" + "x" * 9000
    page = Event("page", anonymous_id="a1", properties={"path": "/p"}, context={"url": url})
    assert 2 * page.size + MESSAGE_OVERHEAD <= MAX_MESSAGE_BYTES
    assert len(encode_json(to_message(page))) > MAX_MESSAGE_BYTES
    small = Event("track", person_id="u1", name="small")
    body, rejected = SegmentProvider("wk").encode([small, page])
    assert list(rejected) == [1] and "32768-byte limit" in rejected[1]
    assert b'"small"' in body and b"xxxx" not in body
