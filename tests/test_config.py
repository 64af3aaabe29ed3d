"""Configuration from the environment, provider selection, and secrets staying secret."""

from __future__ import annotations

import logging

import pytest

import fanout
from fanout import ConfigError, Setting
from fanout.testing import InMemoryProvider

SECRET = "sk_live_SUPERSECRET_1234567890"


class KeyedProvider(InMemoryProvider):
    def __init__(self, config):
        super().__init__(config.name)
        self.config = config

    def send(self, batch):
        raise fanout.PermanentError(
            f"401 for key {self.config.settings['api_key']}", status_code=401
        )


class KeyedPlugin:
    @fanout.hookimpl
    def register_providers(self, register):
        register(
            "keyed",
            KeyedProvider,
            settings=[
                Setting("api_key", required=True, secret=True, aliases=("KEYED_API_KEY",)),
                Setting("region", default="us", parse=self._region),
                Setting("batch", parse=int),
            ],
        )

    @staticmethod
    def _region(value):
        if value not in ("us", "eu"):
            raise ValueError("expected us or eu")
        return value


def client(make_client, env, **kw):
    return make_client(environ=env, plugins=[KeyedPlugin()], **kw)


def test_unset_providers_means_null(make_client):
    assert client(make_client, {}).providers == ["null"]


def test_configured_provider_is_enabled_automatically(make_client):
    c = client(make_client, {"KEYED_API_KEY": SECRET})
    assert c.providers == ["keyed"]


def test_fanout_prefix_wins_over_vendor_alias(make_client):
    c = client(make_client, {"KEYED_API_KEY": "alias", "FANOUT_KEYED_API_KEY": "primary"})
    assert c._channels[0].provider.config.settings["api_key"] == "primary"


def test_explicit_selection_and_missing_required_setting_names_the_variable(make_client):
    with pytest.raises(ConfigError) as info:
        client(make_client, {"FANOUT_PROVIDERS": "keyed,console"})
    assert info.value.variable == "FANOUT_KEYED_API_KEY"
    assert "KEYED_API_KEY" in str(info.value)


def test_unknown_provider_is_a_config_error(make_client):
    with pytest.raises(ConfigError, match="posthgo") as info:
        client(make_client, {"FANOUT_PROVIDERS": "posthgo"})
    assert info.value.variable == "FANOUT_PROVIDERS"


def test_malformed_setting_names_variable(make_client):
    with pytest.raises(ConfigError) as info:
        client(make_client, {"KEYED_API_KEY": SECRET, "FANOUT_KEYED_REGION": "mars"})
    assert info.value.variable == "FANOUT_KEYED_REGION"
    assert "expected us or eu" in str(info.value)


def test_malformed_secret_setting_never_echoes_value(make_client):
    class P:
        @fanout.hookimpl
        def register_providers(self, register):
            register(
                "sec",
                InMemoryProvider,
                settings=[Setting("key", secret=True, required=True, parse=int)],
            )

    with pytest.raises(ConfigError) as info:
        make_client(environ={"FANOUT_SEC_KEY": SECRET}, plugins=[P()])
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FANOUT_BATCH_SIZE", "0"),
        ("FANOUT_FLUSH_INTERVAL", "soon"),
        ("FANOUT_OVERFLOW", "drop_oldest"),
        ("FANOUT_SYNC", "maybe"),
        ("FANOUT_KEYED_MAX_RETRIES", "-1"),
        ("FANOUT_IP", "hash"),
        ("FANOUT_SHUTDOWN_TIMEOUT", "-3"),
    ],
)
def test_malformed_delivery_knobs(make_client, var, value):
    with pytest.raises(ConfigError) as info:
        client(make_client, {"KEYED_API_KEY": SECRET, var: value})
    assert info.value.variable == var


def test_delivery_knobs_global_and_per_provider(make_client):
    c = client(
        make_client,
        {
            "KEYED_API_KEY": SECRET,
            "FANOUT_PROVIDERS": "keyed,null",
            "FANOUT_BATCH_SIZE": "7",
            "FANOUT_KEYED_BATCH_SIZE": "3",
            "FANOUT_KEYED_OVERFLOW": "block",
        },
    )
    keyed, null = c._channels
    assert (keyed.options.batch_size, keyed.options.overflow) == (3, "block")
    assert (null.options.batch_size, null.options.overflow) == (7, "drop_new")
    # keyword arguments beat the environment at the same level
    c2 = client(make_client, {"KEYED_API_KEY": SECRET, "FANOUT_BATCH_SIZE": "7"}, batch_size=9)
    assert c2._channels[0].options.batch_size == 9


def test_secrets_never_in_reprs_logs_errors_or_dead_letters(make_client, caplog, tmp_path):
    failures = []
    with caplog.at_level(logging.DEBUG, logger="fanout"):
        c = client(
            make_client,
            {"KEYED_API_KEY": SECRET, "FANOUT_DEAD_LETTER_DIR": str(tmp_path)},
            on_error=failures.append,
            flush_interval=0.05,
        )
        c.track("x", person_id="u")
        c.flush(timeout=5)
    channel = c._channels[0]
    texts = [
        repr(c),
        repr(channel.provider.config),
        caplog.text,
        failures[0].error,
        (tmp_path / "keyed.jsonl").read_text(),
        repr(c.stats()),
    ]
    assert failures and "***" in failures[0].error
    for text in texts:
        assert SECRET not in text


def test_every_core_variable_is_documented():
    from pathlib import Path

    from fanout._config import ENV_VARS

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    missing = [v.name for v in ENV_VARS if f"`{v.name}`" not in doc]
    assert missing == []


def test_module_functions_have_the_client_methods_signatures():
    """One source: fanout.track & co. take exactly what Client.track & co. take."""
    import inspect

    for name in ("track", "identify", "page", "alias", "group"):
        method = inspect.signature(getattr(fanout.Client, name))
        function = inspect.signature(getattr(fanout, name))
        assert list(function.parameters) == list(method.parameters)[1:], name
        assert function.return_annotation == method.return_annotation


def test_falling_back_to_null_warns_once_naming_what_is_needed(caplog):
    client = fanout.Client(
        load_entry_points=False,
        register_atexit=False,
        environ={"FANOUT_COLECTOR_URL": "http://127.0.0.1:1"},
    )
    try:
        assert client.providers == ["null"]
    finally:
        client.shutdown(1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "collector needs FANOUT_COLLECTOR_URL, FANOUT_COLLECTOR_KEY" in warnings[0]
    assert "FANOUT_COLECTOR_URL is set; did you mean FANOUT_COLLECTOR_URL?" in warnings[0]
