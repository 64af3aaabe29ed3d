"""Registration, settings and discovery: what `fanout plugins` / `fanout check` rely on."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import fanout_segment
import pytest
from pytest_httpserver import HTTPServer
from segment_support import WRITE_KEY

import fanout
from fanout.provider import ALL_KINDS, Capability
from fanout.testing import recorded, server_url


def _client(environ: dict[str, str], **kwargs: object) -> fanout.Client:
    options: dict[str, object] = {
        "environ": environ,
        "register_atexit": False,
        "load_entry_points": False,
        "plugins": [fanout_segment],
    }
    options.update(kwargs)
    return fanout.Client(**options)  # type: ignore[arg-type]


def test_declaration() -> None:
    client = _client({}, providers=["null"])
    try:
        spec = client.registry.spec("segment")
    finally:
        client.shutdown(timeout=1)
    assert spec.kinds == ALL_KINDS
    assert {Capability.HISTORICAL_IMPORT, Capability.GROUPS} <= spec.capabilities
    assert (spec.limits.max_events, spec.limits.max_event_bytes) == (2500, 32 * 1024)
    assert spec.limits.max_bytes <= 500_000
    settings = {s.field: s for s in spec.settings}
    assert settings["write_key"].secret and settings["write_key"].required
    assert settings["write_key"].env_names("segment") == (
        "FANOUT_SEGMENT_WRITE_KEY",
        "SEGMENT_WRITE_KEY",
    )
    assert settings["host"].env_names("segment") == ("FANOUT_SEGMENT_HOST", "SEGMENT_HOST")
    assert settings["host"].default == "https://api.segment.io"


def _delivered_to(server: HTTPServer, client: fanout.Client) -> int:
    try:
        client.track("Probe", person_id="u1")
        client.flush(timeout=10)
    finally:
        client.shutdown(timeout=2)
    return len(recorded(server, "/v1/batch"))


def test_vendor_variables_enable_and_configure_it(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_json({})
    # The trailing slash the SDK tolerates is tolerated too.
    env = {"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_HOST": server_url(httpserver) + "/"}
    client = _client(env)  # FANOUT_PROVIDERS unset: every fully configured provider
    assert client.providers == ["segment"]
    assert _delivered_to(httpserver, client) == 1


def test_fanout_variable_wins_over_vendor_alias(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v1/batch").respond_with_json({})
    env = {
        "FANOUT_SEGMENT_HOST": server_url(httpserver),
        "SEGMENT_HOST": "http://127.0.0.1:9",  # discard port: nothing listens
        "FANOUT_SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_WRITE_KEY": "the-other-key",
    }
    assert _delivered_to(httpserver, _client(env)) == 1
    (request,) = recorded(httpserver, "/v1/batch")
    assert request.json()["writeKey"] == WRITE_KEY


def test_missing_write_key_names_the_variables() -> None:
    with pytest.raises(fanout.ConfigError) as info:
        _client({}, providers=["segment"])
    assert info.value.variable == "FANOUT_SEGMENT_WRITE_KEY"
    assert "SEGMENT_WRITE_KEY" in str(info.value)


def test_malformed_host_is_a_config_error() -> None:
    with pytest.raises(fanout.ConfigError) as info:
        _client({"SEGMENT_WRITE_KEY": WRITE_KEY, "SEGMENT_HOST": "api.segment.io"})
    assert info.value.variable == "SEGMENT_HOST"
    assert WRITE_KEY not in str(info.value)


def test_entry_point_discovery_in_a_fresh_interpreter() -> None:
    """The installed distribution is found through the `fanout` group alone."""
    code = textwrap.dedent(
        """
        import json, fanout
        client = fanout.Client(environ={"SEGMENT_WRITE_KEY": "k"}, register_atexit=False)
        info = [p for p in client.registry.plugins if "segment" in p.providers]
        print(json.dumps({
            "providers": client.providers,
            "plugins": [(p.name, p.distribution, p.loaded, p.error) for p in info],
        }))
        client.shutdown(timeout=1)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "segment" in out["providers"]
    assert out["plugins"] == [["segment", "fanout-segment", True, None]]


def test_core_does_not_know_the_plugin() -> None:
    """Nothing in fanout/ names this plugin: discovery is by entry point only."""
    from pathlib import Path

    core = Path(fanout.__file__).parent
    offenders = [
        str(p) for p in core.rglob("*.py") if "fanout_segment" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_provider_runs_without_the_sdk(httpserver: HTTPServer) -> None:
    """The SDK is the reference the parity tests compare with, not a run-time need: with
    segment-analytics-python unimportable the provider still starts and delivers."""
    httpserver.expect_request("/v1/batch").respond_with_json({})
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["segment"] = None  # as if segment-analytics-python were not installed
        import fanout
        env = {{"SEGMENT_WRITE_KEY": {WRITE_KEY!r}, "SEGMENT_HOST": {server_url(httpserver)!r}}}
        client = fanout.Client(environ=env, providers=["segment"], register_atexit=False)
        client.track("Probe", person_id="u1")
        report = client.flush(timeout=10)
        client.shutdown(timeout=2)
        print(json.dumps({{"delivered": report["segment"].delivered,
                          "sdk": [m for m in sys.modules if m.startswith("segment.")]}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"delivered": 1, "sdk": []}
    assert len(recorded(httpserver, "/v1/batch")) == 1
    assert WRITE_KEY not in result.stdout + result.stderr


def test_what_is_copied_from_the_sdk_matches_it() -> None:
    """The per-message limit and the host clean-up the declaration took from the SDK."""
    from fanout_segment._declaration import MAX_MESSAGE_BYTES, parse_host
    from segment.analytics.consumer import MAX_MSG_SIZE  # type: ignore[import-untyped]
    from segment.analytics.utils import remove_trailing_slash  # type: ignore[import-untyped]

    assert MAX_MESSAGE_BYTES == MAX_MSG_SIZE == fanout_segment.LIMITS.max_event_bytes
    for host in ("https://api.segment.io", "https://api.segment.io/", "http://h:1//"):
        assert parse_host(host) == remove_trailing_slash(host)


def test_lazy_public_names_resolve() -> None:
    """Names that live in the provider's modules still come from the package (PEP 562)."""
    from fanout_segment import _provider, message

    assert fanout_segment.SegmentProvider is _provider.SegmentProvider
    assert fanout_segment.to_message is message.to_message
    assert set(fanout_segment.__all__) <= set(dir(fanout_segment))
