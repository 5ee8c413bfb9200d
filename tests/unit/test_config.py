"""Config: precedence (defaults < file < environment < flags), validation naming the setting,
secrets masked, the token file, and the shipped example file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from voltha_gevent.config import Config, from_environ, read_config_file
from voltha_gevent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "voltha.toml"


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "voltha.toml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- precedence


def test_defaults_without_file_environment_or_flags(monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    config = Config.load(environ={})
    assert config.consul == "localhost:8500"
    assert config.prefix == "service/voltha"
    assert (config.rest_bind, config.rest_port) == ("127.0.0.1", 8880)
    assert (config.soak, config.session_ttl, config.lock_delay, config.stop_timeout) == (5.0, 10, 4.0, 4.0)
    assert config.instance_id  # the host name


def test_file_beats_defaults_environment_beats_file_flags_beat_environment(tmp_path):
    path = _toml(tmp_path, 'soak = 2.0\nprefix = "from/file"\nrest_port = 9001\ncapacity = 3\n')
    environ = {"VOLTHA_SOAK": "3.5", "VOLTHA_PREFIX": "from/env"}
    config = Config.load(flags={"soak": "4", "capacity": None}, environ=environ, config_file=path)
    assert config.soak == 4.0  # flag > env > file
    assert config.prefix == "from/env"  # env > file
    assert config.rest_port == 9001  # file > default
    assert config.capacity == 3.0  # a flag left at None does not count
    assert config.session_ttl == 10  # default


def test_voltha_config_variable_names_the_file_and_a_voltha_table_is_read(tmp_path):
    path = _toml(tmp_path, '[voltha]\ninstance_id = "node-7"\nconsul_verify = false\n')
    config = Config.load(environ={"VOLTHA_CONFIG": path})
    assert (config.instance_id, config.consul_verify) == ("node-7", False)


def test_explicit_config_file_wins_over_voltha_config(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text('prefix = "a"\n')
    b = tmp_path / "b.toml"
    b.write_text('prefix = "b"\n')
    assert Config.load(environ={"VOLTHA_CONFIG": str(a)}, config_file=str(b)).prefix == "b"


def test_consul_http_addr_is_the_default_address_and_voltha_consul_wins(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://consul.local:8501")
    assert Config.load(environ={}).consul == "consul.local:8501"
    assert Config.load(environ={"VOLTHA_CONSUL": "127.0.0.1:9500"}).consul == "127.0.0.1:9500"


def test_environment_values_are_converted_to_the_field_types():
    environ = {"VOLTHA_REST_PORT": "0", "VOLTHA_CONSUL_VERIFY": "no", "VOLTHA_CHECK_TTL": "0",
               "VOLTHA_SESSION_TTL": "15", "VOLTHA_EXTERNAL_HOST": "10.0.0.9", "VOLTHA_OTHER": "x",
               "UNRELATED": "1"}
    config = Config.load(environ=environ)
    assert (config.rest_port, config.consul_verify, config.check_ttl) == (0, False, 0.0)
    assert config.session_ttl == 15 and isinstance(config.session_ttl, int)
    assert config.advertised_host == "10.0.0.9"
    assert "other" not in from_environ(environ) and "unrelated" not in from_environ(environ)


def test_advertised_host_defaults_to_the_internal_host():
    config = Config.load(environ={"VOLTHA_INTERNAL_HOST": "10.1.1.1"})
    assert config.advertised_host == "10.1.1.1"


# --------------------------------------------------------------------------- validation


BAD_SETTINGS = [
    ("instance_id", "has space"),
    ("instance_id", "x" * 129),
    ("consul", "no-port"),
    ("consul", "host:notaport"),
    ("consul", "host:70000"),
    ("consul", "bad host!:8500"),
    ("consul_scheme", "ftp"),
    ("prefix", "/leading/slash"),
    ("prefix", "trailing/"),
    ("rest_port", "65536"),
    ("rest_port", "-1"),
    ("rest_port", "eighty"),
    ("session_ttl", "9"),
    ("session_ttl", "86401"),
    ("session_ttl", "10.5"),
    ("lock_delay", "61"),
    ("lock_delay", "-1"),
    ("check_ttl", "0.5"),
    ("check_ttl", "20"),
    ("soak", "-1"),
    ("max_soak_delay", "-1"),
    ("worker_soak", "-0.1"),
    ("stop_timeout", "-1"),
    ("handover_timeout", "-5"),
    ("watch_wait", "0.5"),
    ("watch_wait", "601"),
    ("capacity", "0"),
    ("capacity", "-2"),
    ("seed_workload", "-1"),
    ("log_format", "xml"),
    ("log_level", "trace"),
    ("consul_verify", "maybe"),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_each_bad_setting_is_rejected_naming_the_setting(name, value):
    with pytest.raises(ConfigError) as info:
        Config.load(environ={"VOLTHA_" + name.upper(): value})
    assert info.value.setting == name
    assert str(info.value).startswith(f"invalid setting {name}: ")


def test_max_soak_delay_below_the_soak_is_rejected():
    with pytest.raises(ConfigError) as info:
        Config.load(environ={"VOLTHA_SOAK": "10", "VOLTHA_MAX_SOAK_DELAY": "5"})
    assert info.value.setting == "max_soak_delay"


def test_a_client_certificate_needs_its_key():
    with pytest.raises(ConfigError) as info:
        Config.load(environ={"VOLTHA_CONSUL_CERT_FILE": "/tmp/cert.pem"})
    assert info.value.setting == "consul_cert_file"


def test_a_bad_flag_is_named_like_a_bad_variable():
    with pytest.raises(ConfigError) as info:
        Config.load(flags={"rest_port": "x"}, environ={})
    assert info.value.setting == "rest_port"
    assert str(info.value) == "invalid setting rest_port: cannot read 'x' as int"


def test_unknown_setting_in_the_file_is_named(tmp_path):
    path = _toml(tmp_path, "sock = 3\n")
    with pytest.raises(ConfigError) as info:
        Config.load(environ={}, config_file=path)
    assert info.value.setting == "sock" and "unknown setting" in str(info.value)


def test_unreadable_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        Config.load(environ={}, config_file=str(tmp_path / "missing.toml"))
    assert info.value.setting == "config"
    with pytest.raises(ConfigError) as info:
        Config.load(environ={}, config_file=_toml(tmp_path, "soak = = 1\n"))
    assert info.value.setting == "config" and "not valid TOML" in str(info.value)
    with pytest.raises(ConfigError, match="must be a table"):
        read_config_file(_toml(tmp_path, 'voltha = "x"\n'))


# --------------------------------------------------------------------------- secrets


def test_token_only_from_environment_and_masked_in_public_dict():
    config = Config.load(environ={"VOLTHA_CONSUL_TOKEN": "s3cr3t-token"})
    assert config.token() == "s3cr3t-token"
    assert config.client_settings().token == "s3cr3t-token"
    public = config.public_dict()
    assert public["consul_token"] == "***"
    assert "s3cr3t-token" not in repr(public)
    assert set(public) == {f.name for f in dataclasses.fields(Config)}


def test_public_dict_shows_no_mask_when_there_is_no_token():
    assert Config.load(environ={}).public_dict()["consul_token"] is None


def test_token_in_the_file_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        Config.load(environ={}, config_file=_toml(tmp_path, 'consul_token = "s3cr3t"\n'))
    assert info.value.setting == "consul_token" and "s3cr3t" not in str(info.value)


def test_token_file_is_read_trimmed_and_the_variable_wins(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  file-token\n")
    config = Config.load(environ={"VOLTHA_CONSUL_TOKEN_FILE": str(token_file)})
    assert config.token() == "file-token"
    assert config.public_dict()["consul_token_file"] == str(token_file)
    both = Config.load(environ={"VOLTHA_CONSUL_TOKEN_FILE": str(token_file), "VOLTHA_CONSUL_TOKEN": "env"})
    assert both.token() == "env"


def test_an_empty_token_file_is_an_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as info:
        Config.load(environ={"VOLTHA_CONSUL_TOKEN_FILE": str(empty)}).client_settings()
    assert info.value.setting == "consul_token_file"
    assert str(info.value) == f"invalid setting consul_token_file: {empty} is empty"


def test_missing_token_file_names_the_setting(tmp_path):
    config = Config.load(environ={"VOLTHA_CONSUL_TOKEN_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as info:
        config.client_settings()
    assert info.value.setting == "consul_token_file"


def test_tls_settings_reach_the_client_settings():
    config = Config.load(environ={"VOLTHA_CONSUL": "consul.example:8501", "VOLTHA_CONSUL_SCHEME": "https",
                                  "VOLTHA_CONSUL_CA_FILE": "/ca.pem", "VOLTHA_CONSUL_CERT_FILE": "/c.pem",
                                  "VOLTHA_CONSUL_KEY_FILE": "/k.pem"})
    settings = config.client_settings()
    assert (settings.host, settings.port, settings.scheme) == ("consul.example", 8501, "https")
    assert settings.verify == "/ca.pem" and settings.cert == ("/c.pem", "/k.pem")
    unverified = Config.load(environ={"VOLTHA_CONSUL_VERIFY": "false", "VOLTHA_CONSUL_CA_FILE": "/ca.pem"})
    assert unverified.client_settings().verify is False


# --------------------------------------------------------------------------- the example file


def test_example_file_loads_to_the_defaults_and_documents_every_setting(monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    loaded = Config.load(environ={}, config_file=str(EXAMPLE))
    assert loaded == Config.load(environ={})
    text = EXAMPLE.read_text()
    for f in dataclasses.fields(Config):
        if f.name == "consul_token":
            assert "VOLTHA_CONSUL_TOKEN" in text
        else:
            assert f"\n{f.name} = " in text or f"\n# {f.name} = " in text, f.name


def test_an_https_consul_http_addr_gives_the_https_scheme(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "https://consul.local:8501")
    config = Config.load(environ={})
    assert (config.consul, config.consul_scheme) == ("consul.local:8501", "https")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "consul.local:8500")
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    assert Config.load(environ={}).consul_scheme == "https"
    monkeypatch.delenv("CONSUL_HTTP_SSL")
    assert Config.load(environ={"VOLTHA_CONSUL_SCHEME": "http"}).consul_scheme == "http"


def test_the_defaults_satisfy_the_fencing_budget():
    budget = Config().budget()
    assert budget.holds()
    assert budget.fenced_by <= budget.takeover
    assert (budget.trust, budget.lease) == (3.0, 2.0)


def test_a_stop_timeout_that_outlives_the_lease_is_refused_naming_the_settings_and_the_formula():
    with pytest.raises(ConfigError) as caught:
        Config.load(flags={"stop_timeout": "10"}, environ={})
    message = str(caught.value)
    assert "stop_timeout" in message and "lock_delay" in message and "check_ttl" in message
    assert "stop_timeout (10) + margin (0.5) = 12.5 must be <= trust" in message
    assert "\n" not in message


def test_the_budget_without_a_check_is_the_session_ttl():
    config = Config.load(flags={"check_ttl": "0", "stop_timeout": "3", "lock_delay": "1"}, environ={})
    assert config.budget().trust == 10
    with pytest.raises(ConfigError):
        Config.load(flags={"check_ttl": "0", "stop_timeout": "3", "lock_delay": "0"}, environ={})


def test_fractional_durations_are_kept():
    config = Config.load(flags={"check_ttl": "2.5", "lock_delay": "0.5", "stop_timeout": "0.5"}, environ={})
    assert (config.check_ttl, config.lock_delay) == (2.5, 0.5)


def test_the_constructor_validates_like_load_and_converts_raw_values():
    with pytest.raises(ConfigError) as info:
        Config(session_ttl=5)
    assert info.value.setting == "session_ttl"
    with pytest.raises(ConfigError) as info:
        Config(stop_timeout=30)  # breaks the fencing budget
    assert "stop_timeout" in info.value.setting
    raw = Config(session_ttl="15", consul_verify="false", capacity="2")  # type: ignore[arg-type]
    assert (raw.session_ttl, raw.consul_verify, raw.capacity) == (15, False, 2.0)


def test_load_validates_only_the_final_combination(tmp_path):
    # the file alone breaks the budget (2 + 8 + 0.5 > 3 + 4); the environment repairs it
    file = _toml(tmp_path, "stop_timeout = 8\n")
    config = Config.load(environ={"VOLTHA_LOCK_DELAY": "8"}, config_file=file)
    assert (config.stop_timeout, config.lock_delay) == (8.0, 8.0)


def test_configure_logging_and_config_load_flags_are_public_and_documented():
    import voltha_gevent
    from voltha_gevent.logs import configure_logging

    assert voltha_gevent.configure_logging is configure_logging
    embedding = (Path(__file__).parents[2] / "docs" / "embedding.md").read_text()
    assert "voltha_gevent.configure_logging(config.log_format, config.log_level)" in embedding
    assert "`Config.load(flags=None, environ=None, config_file=None)`: `flags` maps" in embedding
    config = Config.load(flags={"session-ttl": "20", "soak": None}, environ={})
    assert (config.session_ttl, config.soak) == (20, 5.0)
    with pytest.raises(ConfigError, match="unknown setting"):
        Config.load(flags={"no_such": 1}, environ={})
