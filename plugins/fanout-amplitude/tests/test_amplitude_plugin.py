"""The installed plugin as fanout sees it: entry point, declaration, lazy SDK import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from amplitude_support import API_KEY


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert API_KEY not in out.stdout + out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_declared_through_the_entry_point_without_importing_the_sdk() -> None:
    info = _run(
        f"""
        import json, sys
        import fanout
        env = {{"AMPLITUDE_API_KEY": {API_KEY!r}, "FANOUT_PROVIDERS": "console"}}
        client = fanout.Client(environ=env, register_atexit=False)
        spec = client.registry.providers["amplitude"]
        print(json.dumps({{
            "sdk_imported": "amplitude" in sys.modules,
            "kinds": sorted(spec.kinds),
            "secret": [s.field for s in spec.settings if s.secret],
            "providers": client.providers,
        }}))
        client.shutdown(timeout=1)
        """
    )
    assert info == {
        "sdk_imported": False,
        "kinds": ["group", "identify", "page", "track"],
        "secret": ["api_key"],
        "providers": ["console"],
    }


def test_enabled_from_its_vendor_variable() -> None:
    info = _run(
        f"""
        import json, sys
        import fanout
        client = fanout.Client(environ={{"AMPLITUDE_API_KEY": {API_KEY!r}}}, register_atexit=False)
        print(json.dumps({{"providers": client.providers,
                          "sdk_imported": "amplitude" in sys.modules,
                          "repr": repr(client)}}))
        client.shutdown(timeout=1)
        """
    )
    assert info["providers"] == ["amplitude"] and info["sdk_imported"] is True
