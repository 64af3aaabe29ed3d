"""Timeline pages: a cursor that walks the whole history once, in order, with a byte cap."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner

from fanout.cli import main


def _post_history(collector) -> list[str]:
    """3 anonymous events, the identify, 1,200 events of the person; the expected order."""
    batch = [{"event_id": f"anon{i}", "name": "browse", "anonymous_id": "anon-1",
              "timestamp": f"2024-01-01T00:00:0{i}.000Z"} for i in range(3)]
    batch.append({"kind": "identify", "event_id": "id", "person_id": "ada",
                  "anonymous_id": "anon-1", "timestamp": "2024-01-01T00:00:05.000Z"})
    assert collector.post({"batch": batch}).json()["accepted"] == 4
    expected = [e["event_id"] for e in batch]
    for start in range(0, 1200, 400):
        chunk = [{"event_id": f"p{i:04d}", "name": "work", "person_id": "ada",
                  "properties": {"pad": "x" * (i % 50)},
                  # Ten events share each timestamp: arrival order breaks the ties.
                  "timestamp": f"2024-02-01T00:{i // 600:02d}:{(i // 10) % 60:02d}.000Z"}
                 for i in range(start, start + 400)]
        assert collector.post({"batch": chunk}).json()["accepted"] == 400
        expected += [e["event_id"] for e in chunk]
    return expected


def test_pages_walk_the_whole_timeline_once_in_order(collector):
    expected = _post_history(collector)
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params = {"limit": 333, **({"cursor": cursor} if cursor else {})}
        page = collector.timeline("ada", **params)
        assert page["anonymous_ids"] == ["anon-1"]
        assert 1 <= len(page["events"]) <= 333
        seen += [e["event_id"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A late event stamped before the current position does not shift later pages.
        if pages == 1:
            late = {"event_id": "late", "name": "x", "person_id": "ada",
                    "timestamp": "2024-01-01T00:00:00.000Z"}
            assert collector.post({"batch": [late]}).json()["accepted"] == 1
    assert seen == expected and pages == 4  # 1,204 events in pages of 333


def test_a_page_stops_at_the_byte_cap(collector):
    expected = _post_history(collector)
    seen: list[str] = []
    cursor = None
    http = httpx.Client(headers={"Authorization": f"Bearer {collector.read_key}"})
    while True:
        params = {"limit": 10_000, "max_bytes": 4096, **({"cursor": cursor} if cursor else {})}
        page = http.get(f"{collector.url}/v1/persons/ada/events", params=params).json()
        sizes = [len(json.dumps(e, separators=(",", ":")).encode()) for e in page["events"]]
        assert sum(sizes) <= 4096 or len(sizes) == 1
        seen += [e["event_id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    http.close()
    assert seen == expected


def test_bad_cursors_and_limits_are_400(collector):
    url = f"{collector.url}/v1/persons/ada/events"
    headers = {"Authorization": f"Bearer {collector.read_key}"}
    for params in ({"cursor": "not-a-cursor"}, {"cursor": "x" * 500}, {"limit": "ten"},
                   {"max_bytes": "1e9"}):
        assert httpx.get(url, params=params, headers=headers).status_code == 400, params


def test_the_cli_timeline_reads_every_page(start_collector, tmp_path):
    db = tmp_path / "t.db"
    collector = start_collector(db=db)
    expected = _post_history(collector)
    result = CliRunner().invoke(main, ["collector", "timeline", "ada", "--project", "tests",
                                       "--page-size", "100", "--json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["event_id"] for line in result.stdout.splitlines()] == expected
