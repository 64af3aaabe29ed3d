"""Installed vendor plugins cost nothing to a process that does not enable them.

Each plugin's entry point holds only its declaration; its vendor SDK is imported when its
provider is enabled. Checked in fresh interpreters, with the plugins really installed
(``pip install -e plugins/...``, as dev.py and CI do), loaded through their entry points.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Plugin package → the vendor SDK modules it must not import unless enabled.
VENDORS = {
    "fanout_posthog": "posthog",
    "fanout_mixpanel": "mixpanel",
    "fanout_segment": "segment.analytics",
}

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in VENDORS),
    reason="needs fanout-posthog, fanout-mixpanel and fanout-segment installed (dev.py does)",
)

PROBE = textwrap.dedent(
    """
    import json, sys
    import fanout
    client = fanout.Client(register_atexit=False)
    sdks = {sdks!r}
    print(json.dumps({{
        "providers": client.providers,
        "declared": sorted(client.registry.providers),
        "imported": [m for m in sdks if m in sys.modules],
        "settings": {{n: [s.field for s in client.registry.spec(n).settings]
                     for n in ("posthog", "mixpanel", "segment")}},
    }}))
    client.shutdown(timeout=1)
    """
)


def _probe(**env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FANOUT_", "POSTHOG_"))}
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(sdks=sorted(VENDORS.values()))],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


COLLECTOR = {
    "FANOUT_COLLECTOR_URL": "http://127.0.0.1:9",
    "FANOUT_COLLECTOR_KEY": "sk_lazy_test",
}


def test_declaring_the_vendor_providers_imports_no_vendor_sdk() -> None:
    out = _probe(FANOUT_PROVIDERS="collector", **COLLECTOR)
    assert out["providers"] == ["collector"]
    assert {"posthog", "mixpanel", "segment"} <= set(out["declared"])  # type: ignore[arg-type]
    assert out["settings"] == {
        "posthog": ["api_key", "host", "gzip", "historical_after"],
        "mixpanel": ["token", "api_secret", "api_host"],
        "segment": ["write_key", "host"],
    }
    assert out["imported"] == []


def test_enabling_posthog_imports_its_sdk_and_only_its() -> None:
    out = _probe(FANOUT_PROVIDERS="collector,posthog", POSTHOG_API_KEY="phc_lazy", **COLLECTOR)
    assert out["providers"] == ["collector", "posthog"]
    assert out["imported"] == ["posthog"]
