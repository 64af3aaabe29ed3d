"""The plugin as installed: entry-point discovery, settings, and isolation from failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fanout_posthog
import pytest
from posthog_support import API_KEY

import fanout


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter with only ``env`` (plus PATH) set: no test process state."""
    full = {"PATH": os.environ.get("PATH", ""), **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60
    )


def test_entry_point_enables_posthog_from_the_environment():
    code = (
        "import json, fanout\n"
        "c = fanout.Client(register_atexit=False)\n"
        "spec = c.registry.spec('posthog')\n"
        "print(json.dumps({'providers': c.providers, 'plugin': spec.plugin,\n"
        "  'url': c._channels[c.providers.index('posthog')].provider.url,\n"
        "  'capabilities': sorted(spec.capabilities), 'repr': repr(c),\n"
        "  'provider': repr(c._channels[c.providers.index('posthog')].provider)}))\n"
        "c.shutdown(timeout=1)\n"
    )
    done = run_python(code, {"POSTHOG_API_KEY": API_KEY, "POSTHOG_HOST": "https://eu.posthog.com"})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "posthog" in out["providers"]
    assert out["plugin"] == "posthog"  # came through the entry point, not an import
    assert out["url"] == "https://eu.i.posthog.com/batch/"  # app host → ingestion host
    assert out["capabilities"] == ["deduplication", "groups", "historical_import", "identity_merge"]
    assert API_KEY not in done.stdout + done.stderr


def test_an_unimportable_sdk_fails_only_when_posthog_is_enabled():
    """Declaring the provider needs no SDK; enabling it does, and says which plugin failed."""
    code = (
        "import sys, json\n"
        "sys.modules['posthog'] = None  # the SDK cannot be imported\n"
        "import fanout\n"
        "c = fanout.Client(register_atexit=False, providers=['null'])\n"
        "info = {p.name: p.error for p in c.registry.plugins}\n"
        "try:\n"
        "    fanout.Client(register_atexit=False, providers=['posthog'])\n"
        "    outcome = 'started'\n"
        "except fanout.PluginError as exc:\n"
        "    outcome = f'{exc.plugin}: {exc}'\n"
        "print(json.dumps({'providers': c.providers, 'posthog_error': info.get('posthog'),\n"
        "  'installed': sorted(c.registry.providers), 'outcome': outcome}))\n"
        "c.shutdown(timeout=1)\n"
    )
    done = run_python(code, {"POSTHOG_API_KEY": API_KEY})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["providers"] == ["null"]
    assert out["posthog_error"] is None
    assert "posthog" in out["installed"] and "null" in out["installed"]
    assert out["outcome"].startswith("posthog: ")
    assert "fanout_posthog._provider:from_config" in out["outcome"]
    assert "ModuleNotFoundError" in out["outcome"] or "ImportError" in out["outcome"]
    assert API_KEY not in done.stdout + done.stderr


def test_constants_copied_from_the_sdk_match_it():
    """The declaration hard-codes what it used to import from posthog-python."""
    from fanout_posthog import _declaration
    from posthog.consumer import MAX_MSG_SIZE
    from posthog.request import DEFAULT_HOST

    assert _declaration.MAX_MSG_SIZE == MAX_MSG_SIZE
    assert _declaration.DEFAULT_HOST == DEFAULT_HOST
    assert fanout_posthog.LIMITS.max_event_bytes == MAX_MSG_SIZE
    host = {s.field: s for s in fanout_posthog.SETTINGS}["host"]
    assert host.default == DEFAULT_HOST


def test_lazy_public_names_resolve():
    """Names that live in SDK-importing modules still come from the package (PEP 562)."""
    from fanout_posthog import _mapping, _provider

    assert fanout_posthog.PostHogProvider is _provider.PostHogProvider
    assert fanout_posthog.from_config is _provider.from_config
    assert fanout_posthog.posthog_uuid is _mapping.posthog_uuid
    assert set(fanout_posthog.__all__) <= set(dir(fanout_posthog))
    with pytest.raises(AttributeError):
        fanout_posthog.no_such_name  # noqa: B018


def client(**settings: object) -> fanout.Client:
    return fanout.Client(
        providers=["posthog"],
        settings={"posthog": settings},
        environ={},
        register_atexit=False,
        load_entry_points=False,
        plugins=[fanout_posthog],
    )


def test_missing_key_names_the_variables():
    with pytest.raises(fanout.ConfigError) as info:
        client()
    assert info.value.variable == "FANOUT_POSTHOG_API_KEY"
    assert "POSTHOG_API_KEY" in str(info.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("host", "us.i.posthog.com"), ("historical_after", "24"), ("gzip", "maybe")],
)
def test_malformed_settings_are_config_errors(setting: str, value: str):
    env = {"POSTHOG_API_KEY": API_KEY, f"FANOUT_POSTHOG_{setting.upper()}": value}
    with pytest.raises(fanout.ConfigError) as info:
        fanout.Client(
            providers=["posthog"], environ=env, register_atexit=False,
            load_entry_points=False, plugins=[fanout_posthog],
        )
    assert info.value.variable == f"FANOUT_POSTHOG_{setting.upper()}"
    assert API_KEY not in str(info.value)


def test_settings_given_as_keywords_are_parsed_too():
    c = client(api_key=API_KEY, host="https://us.posthog.com/", gzip="false",
               historical_after="never")
    try:
        provider = c._channels[0].provider
        assert isinstance(provider, fanout_posthog.PostHogProvider)
        assert provider.url == "https://us.i.posthog.com/batch/"
        assert provider.gzip is False
        assert provider.historical_after == float("inf")
        assert API_KEY not in repr(provider) and API_KEY not in repr(c)
    finally:
        c.shutdown(timeout=1)
