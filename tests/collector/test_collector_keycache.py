"""The key cache saves a hand-off per batch, never a check: a key revoked or limited while
remembered stores nothing, and the cache holds no key and stays bounded."""

from __future__ import annotations

from fanout.collector.keycache import KeyCache
from fanout.collector.keys import KeyInfo


def _events(n: int, prefix: str) -> dict[str, object]:
    return {"batch": [{"event_id": f"{prefix}{i}", "name": "x", "person_id": "p",
                       "timestamp": "2024-05-01T10:00:00.000Z"} for i in range(n)]}


def test_a_key_revoked_while_remembered_stores_nothing(collector):
    first = collector.post(_events(3, "a"))  # looked up, then remembered
    assert first.status_code == 200 and first.json()["accepted"] == 3
    second = collector.post(_events(2, "b"))  # the remembered key, checked again
    assert second.status_code == 200 and second.json()["accepted"] == 2
    (info,) = [k for k in collector.store.list_keys() if k.scopes == ("ingest",)]
    assert collector.store.revoke_key(info.id)
    denied = collector.post(_events(4, "c"))
    assert denied.status_code == 401 and collector.key not in denied.text
    # Forgotten after the refusal: refused again, on the lookup before the body.
    assert collector.post(b"not json").status_code == 401
    assert collector.store.count_events() == 5
    assert sorted(collector.store.event_ids()) == ["a0", "a1", "a2", "b0", "b1"]


def test_a_key_limited_while_remembered_stores_nothing(start_collector):
    collector = start_collector(rate_limit=100, burst=100)
    assert collector.post(_events(1, "a")).json()["accepted"] == 1  # remembered
    over = collector.post(_events(150, "b"))  # checked again, then 150 events in debt
    assert over.status_code == 200 and over.json()["accepted"] == 150
    limited = collector.post(_events(5, "c"))  # remembered: refused before decoding
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert collector.post(b"not json").status_code == 429  # forgotten: before the body
    assert collector.store.count_events() == 151


def _info(key_id: int) -> KeyInfo:
    return KeyInfo(key_id, "l", "2024-01-01", None, 1, "p", ("ingest",))


def test_entries_expire_and_the_cache_is_bounded_and_holds_no_key():
    now = [0.0]
    cache = KeyCache(ttl=10, max_keys=3, clock=lambda: now[0])
    cache.put("sk_one", _info(1))
    assert cache.get("sk_one") == _info(1) and cache.get("sk_other") is None
    now[0] = 9.9
    assert cache.get("sk_one") == _info(1)
    now[0] = 10.0
    assert cache.get("sk_one") is None
    cache.put("sk_one", _info(1))
    cache.drop("sk_one")
    assert cache.get("sk_one") is None
    for i in range(3):
        cache.put(f"sk_{i}", _info(i))
    cache.put("sk_3", _info(3))  # full: starts over
    assert [cache.get(f"sk_{i}") for i in range(4)] == [None, None, None, _info(3)]
    assert "sk_3" not in repr(vars(cache))  # hashes, not keys
