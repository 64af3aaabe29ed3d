"""The plugin as fanout finds it: entry point, declared settings, limits and capabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import fanout_mixpanel
from mixpanel_support import TOKEN

import fanout
from fanout.provider import Capability

CORE = Path(fanout.__file__).parent


def test_discovered_through_the_entry_point_in_a_fresh_process() -> None:
    """Installed (pip install -e), the plugin is found with no import of it by name; the
    vendor's variable names configure it; the token never appears in what is printed."""
    code = textwrap.dedent(
        f"""
        import json, fanout
        client = fanout.Client(
            environ={{"MIXPANEL_TOKEN": {TOKEN!r},
                      "MIXPANEL_API_HOST": "api-eu.mixpanel.com"}},
            register_atexit=False,
        )
        spec = client.registry.spec("mixpanel")
        info = [p for p in client.registry.plugins if "mixpanel" in p.providers][0]
        provider = client._channels[0].provider if client.providers == ["mixpanel"] else None
        print(json.dumps({{
            "providers": client.providers,
            "plugin": info.name, "distribution": info.distribution,
            "settings": [s.field for s in spec.settings],
            "host": getattr(provider, "api_host", None),
            "repr": repr(provider) + repr(client),
        }}))
        client.shutdown(timeout=1)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert "mixpanel" in info["providers"]
    assert info["plugin"] == "mixpanel" and info["distribution"] == "fanout-mixpanel"
    assert info["settings"] == ["token", "api_secret", "api_host"]
    assert info["host"] == "https://api-eu.mixpanel.com"
    assert TOKEN not in out.stdout + out.stderr


def test_declaration() -> None:
    specs: dict[str, object] = {}

    def register(name: str, factory: object, **kwargs: object) -> None:
        specs[name] = kwargs

    fanout_mixpanel.register_providers(register)
    decl = specs["mixpanel"]
    assert isinstance(decl, dict)
    settings = {s.field: s for s in decl["settings"]}
    assert settings["token"].secret and settings["token"].required
    assert settings["token"].aliases == ("MIXPANEL_TOKEN",)
    assert settings["api_secret"].secret and not settings["api_secret"].required
    assert settings["api_secret"].aliases == ("MIXPANEL_API_SECRET",)
    assert settings["api_host"].default == "https://api.mixpanel.com"
    assert settings["api_host"].aliases == ("MIXPANEL_API_HOST",)
    assert decl["limits"].max_events == 2000
    assert decl["kinds"] == {"identify", "track", "page", "alias", "group"}
    assert decl["capabilities"] >= {
        Capability.HISTORICAL_IMPORT, Capability.IDENTITY_MERGE, Capability.GROUPS,
        Capability.DEDUPLICATION,
    }


def test_core_does_not_know_the_plugin() -> None:
    """The core never imports or names the plugin (it may read Mixpanel's export format:
    ``fanout import --format mixpanel`` is about files, not about this provider)."""
    hits = [
        str(path.relative_to(CORE))
        for path in CORE.rglob("*.py")
        if "fanout_mixpanel" in path.read_text(encoding="utf-8")
    ]
    assert hits == []


def test_insert_id_format() -> None:
    from fanout_mixpanel import insert_id

    uuid7 = "01890a5d-ac96-774b-bcce-b302099a8057"
    assert insert_id(uuid7) == uuid7
    for raw in ("evt_1NG8Du2eZvKYlo2CUI79vXWy", "x" * 37, "a b", "é"):
        derived = insert_id(raw)
        assert len(derived) == 36 and derived.isalnum() and derived == insert_id(raw)
    assert insert_id("evt_1") != insert_id("evt_2")


def test_plugin_needs_no_sdk_at_run_time() -> None:
    """The provider writes Mixpanel's wire format itself (the SDK is the parity tests'
    reference only): with the mixpanel SDK unimportable the plugin declares its provider
    and a client with mixpanel enabled starts."""
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["mixpanel"] = None  # import mixpanel → ImportError
        import fanout
        env = {{"MIXPANEL_TOKEN": {TOKEN!r}}}
        client = fanout.Client(providers=["console"], environ=env, register_atexit=False)
        info = [p for p in client.registry.plugins if p.name == "mixpanel"][0]
        try:
            fanout.Client(providers=["mixpanel"], environ=env, register_atexit=False).shutdown(1)
            outcome = "started"
        except fanout.PluginError as exc:
            outcome = f"{{exc.plugin}}: {{exc}}"
        print(json.dumps({{"providers": client.providers, "loaded": info.loaded,
                          "error": info.error, "outcome": outcome,
                          "declared": "mixpanel" in client.registry.providers}}))
        client.shutdown(timeout=1)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["providers"] == ["console"]
    assert info["loaded"] is True and info["error"] is None and info["declared"] is True
    assert info["outcome"] == "started"
    assert TOKEN not in out.stdout + out.stderr


def test_lazy_public_names_resolve() -> None:
    """Names that live in SDK-importing modules still come from the package (PEP 562)."""
    from fanout_mixpanel import _mapping, _provider

    assert fanout_mixpanel.MixpanelProvider is _provider.MixpanelProvider
    assert fanout_mixpanel.HISTORICAL_AFTER is _provider.HISTORICAL_AFTER
    assert fanout_mixpanel.to_records is _mapping.to_records
    assert set(fanout_mixpanel.__all__) <= set(dir(fanout_mixpanel))


def test_form_value_decodes_to_the_same_bytes() -> None:
    """Whatever the JSON holds, a form decoder (the standard library's, as Mixpanel's) gets
    back exactly the bytes that were encoded."""
    from urllib.parse import parse_qs

    from fanout_mixpanel._provider import form_value

    samples = [
        bytes(range(256)),
        b'[{"event":"a b","properties":{"x":"100% +&=?#","$insert_id":"e-1"}}]',
        "caf\u00e9 \u2603 \U0001f600 \x7f".encode(),
        b"%25 already escaped? %2B",
        b"",
    ]
    for data in samples:
        body = b"data=" + form_value(data) + b"&verbose=1&ip=0"
        assert body.isascii()
        # latin-1 maps each decoded byte to one character: the exact bytes come back.
        decoded = parse_qs(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, encoding="latin-1"
        )
        assert decoded == {"data": [data.decode("latin-1")], "verbose": ["1"], "ip": ["0"]}