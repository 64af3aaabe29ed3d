"""Delivery counts as OpenTelemetry metrics, read through the SDK's in-memory reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from _helpers import ScriptedProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from fanout import PermanentError
from fanout.integrations import otel
from fanout.testing import InMemoryProvider


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict, object]]]:
    out: dict[str, list[tuple[dict, object]]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "fanout"
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    value = getattr(p, "value", None)
                    if value is None:  # histogram
                        value = p.count
                    out.setdefault(metric.name, []).append((dict(p.attributes), value))
    return out


def test_counters_gauges_and_request_durations(make_client):
    reader = InMemoryMetricReader()
    observer = otel.observer(MeterProvider(metric_readers=[reader]))
    ok = InMemoryProvider("ok")
    refusing = ScriptedProvider("refusing", [PermanentError("bad key", status_code=401)])
    client = make_client(providers=[ok, refusing], observer=observer, batch_size=100)
    for i in range(10):
        client.track("x", person_id="u", properties={"i": i})
    client.track("only-ok", person_id="u", providers=["ok"])
    client.flush(5)
    points = _points(reader)
    assert points["fanout.events.delivered"] == [({"fanout.provider": "ok"}, 11)]
    assert points["fanout.events.failed"] == [
        ({"fanout.provider": "refusing", "error.type": "permanent_error"}, 10)
    ]
    assert points["fanout.events.skipped"] == [
        ({"fanout.provider": "refusing", "fanout.reason": "routed"}, 1)
    ]
    durations = dict(
        (tuple(sorted(a.items())), n) for a, n in points["fanout.request.duration"]
    )
    assert durations == {
        (("fanout.outcome", "ok"), ("fanout.provider", "ok")): 1,
        (("fanout.outcome", "permanent"), ("fanout.provider", "refusing")): 1,
    }
    queued = {a["fanout.provider"]: v for a, v in points["fanout.queue.events"]}
    assert queued["ok"] == 0 and queued["refusing"] == 0
    assert {a["fanout.provider"] for a, _ in points["fanout.queue.bytes"]} >= {"ok", "refusing"}


def test_nothing_is_imported_or_observed_without_the_extra(tmp_path):
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        import fanout
        c = fanout.Client(providers=["null"], load_entry_points=False, environ={})
        c.track("x", person_id="u")
        c.shutdown(1)
        print(any(ch.observer is not None for ch in c._channels),
              any(m.startswith("opentelemetry") for m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_fanout_metrics_otel_without_the_extra_is_a_config_error():
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        import fanout
        try:
            fanout.Client(providers=["null"], load_entry_points=False,
                          environ={"FANOUT_METRICS": "otel"})
        except fanout.ConfigError as exc:
            print(exc.variable)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "FANOUT_METRICS", out.stderr
