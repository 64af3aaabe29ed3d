"""Plugin loading through real entry points, in subprocesses, with one plugin broken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import fanout
from fanout._plugins import load_registry

GOOD = """
import fanout
from fanout.testing import InMemoryProvider

@fanout.hookimpl
def register_providers(register):
    register("good", lambda config: InMemoryProvider("good"),
             settings=[fanout.Setting("token", required=True, secret=True, aliases=("GOOD_TOKEN",))])
"""
BROKEN_IMPORT = "import this_sdk_is_not_installed\n"
BROKEN_HOOK = """
import fanout

@fanout.hookimpl
def register_providers(register):
    raise RuntimeError("hook bug")
"""


def install_fake_distribution(site, dist, module, source):
    """A real installed distribution as pip leaves it: module + dist-info + entry_points.txt."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[fanout]\n{module.removeprefix('fanout_')} = {module}\n"
    )


@pytest.fixture
def site(tmp_path):
    install_fake_distribution(tmp_path, "fanout-good", "fanout_good", GOOD)
    install_fake_distribution(tmp_path, "fanout-broken", "fanout_broken", BROKEN_IMPORT)
    install_fake_distribution(tmp_path, "fanout-badhook", "fanout_badhook", BROKEN_HOOK)
    return tmp_path


def run(site, code, **env):
    full = {**os.environ, "PYTHONPATH": str(site), **env}
    full.pop("FANOUT_PROVIDERS", None) if "FANOUT_PROVIDERS" not in env else None
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


REPORT = """
import json, fanout
c = fanout.Client(register_atexit=False)
infos = {p.name: [p.loaded, p.error] for p in c.registry.plugins}
c.track("x", person_id="u")
print(json.dumps({"providers": c.providers, "plugins": infos, "delivered": c.flush(5)[c.providers[0]].delivered}))
"""


def test_broken_plugins_do_not_break_the_others(site):
    proc = run(site, REPORT, GOOD_TOKEN="t0k3n")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["providers"] == ["good"]
    assert out["delivered"] == 1
    assert out["plugins"]["good"] == [True, None]
    assert out["plugins"]["broken"][0] is False
    assert "this_sdk_is_not_installed" in out["plugins"]["broken"][1]
    assert "hook bug" in out["plugins"]["badhook"][1]
    assert "failed to load" in proc.stderr  # reported clearly, as a warning


def test_allow_and_deny_lists(site):
    proc = run(site, REPORT, GOOD_TOKEN="t", FANOUT_PLUGINS="good")
    out = json.loads(proc.stdout)
    assert "disabled" in out["plugins"]["broken"][1]
    assert "failed to load" not in proc.stderr
    proc = run(site, REPORT, GOOD_TOKEN="t", FANOUT_DISABLE_PLUGINS="good,broken")
    out = json.loads(proc.stdout)
    assert out["providers"] == ["null"]


def test_cli_plugins_lists_broken_plugin_and_masks_secret(site):
    proc = subprocess.run(
        [sys.executable, "-m", "fanout.cli", "plugins"],
        env={**os.environ, "PYTHONPATH": str(site), "GOOD_TOKEN": "t0k3n-SECRET"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "broken" in proc.stdout and "NOT LOADED" in proc.stdout
    assert "good" in proc.stdout and "enabled" in proc.stdout
    assert "t0k3n-SECRET" not in proc.stdout + proc.stderr
    assert "****" in proc.stdout


def test_duplicate_provider_name_is_an_error_naming_both():
    class A:
        @fanout.hookimpl
        def register_providers(self, register):
            register("dup", lambda c: None)

    class B(A):
        pass

    registry = load_registry(load_entry_points=False, extra_plugins=[A(), B()])
    assert len(registry.conflicts["dup"]) == 2
    with pytest.raises(fanout.PluginError, match="several plugins"):
        registry.spec("dup")


def test_invalid_provider_name_is_reported_not_raised():
    class Bad:
        @fanout.hookimpl
        def register_providers(self, register):
            register("Not A Name", lambda c: None)

    registry = load_registry(load_entry_points=False, extra_plugins=[Bad()])
    assert "Not A Name" not in registry.providers
    assert any(p.error and "provider name" in p.error for p in registry.plugins)


def test_factory_failure_is_plugin_error_naming_provider(make_client):
    class P:
        @fanout.hookimpl
        def register_providers(self, register):
            def factory(config):
                raise OSError("cannot open")

            register("flaky", factory)

    with pytest.raises(fanout.PluginError, match="flaky"):
        make_client(plugins=[P()], providers=["flaky"])


def test_plugin_passed_in_process_and_installed_as_entry_point_loads_once(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("GOOD_TOKEN", "t")
    import fanout_good

    registry = load_registry(extra_plugins=[fanout_good])
    assert "good" in registry.providers and "good" not in registry.conflicts
