"""ACL denials are reported wherever they happen, the token never leaks into reprs or settings dumps."""

from __future__ import annotations

import json

import pytest
import structlog

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.config import Config
from voltha_gevent.consul_api import ACLPermissionDenied, ClientError, ConsulAPI, make_client, translate
from voltha_gevent.errors import PermissionDenied, TransactionFailed
from voltha_gevent.retrying import Retrying
from voltha_gevent.txn import TxnOp

SECRET = "5e1f3c9a-0000-4000-8000-00000000beef"


def _denied_client(fake):
    client = fake.client()
    fake.fail_next(1, lambda: ACLPermissionDenied("Permission denied"))
    return client


def test_denial_names_call_and_key_and_reaches_the_hook(fake):
    seen: list[PermissionDenied] = []
    api = ConsulAPI(_denied_client(fake), on_denied=seen.append)
    with pytest.raises(PermissionDenied) as info:
        api.put("svc/members/n1", "x")
    assert "Permission denied" in str(info.value) and "svc/members/n1" in str(info.value)
    assert seen == [info.value]


def test_retrying_counts_a_hooked_denial_once_and_logs_it():
    retry = Retrying()
    error = PermissionDenied("Permission denied (KV.put k)")
    with structlog.testing.capture_logs() as logs:
        retry.note_denied(error)
        retry._note_failure(error, "kv-put", 1)
    assert retry.stats.permission_denied == 1
    assert retry.stats.last_error == str(error)
    assert [e["event"] for e in logs] == ["consul-permission-denied"]


def test_retrying_backs_off_at_the_slowest_step_on_denial(fake):
    retry = Retrying()
    assert retry.backoff.step(1) < 0.06  # the first step, jittered
    assert 5.0 <= retry.backoff.step(1, slowest=True) <= 5.5


def test_txn_refused_by_acls_is_permission_denied_not_a_rollback():
    body = {"Errors": [{"OpIndex": i, "What": "Permission denied"} for i in (0, 1)]}
    assert isinstance(translate(ClientError("409 " + json.dumps(body))), PermissionDenied)
    mixed = {"Errors": [{"OpIndex": 0, "What": 'failed session check for key "x"'},
                        {"OpIndex": 1, "What": "Permission denied"}]}
    assert isinstance(translate(ClientError("409 " + json.dumps(mixed))), TransactionFailed)


def test_txn_denial_reaches_the_hook(fake):
    seen: list[PermissionDenied] = []
    api = ConsulAPI(_denied_client(fake), on_denied=seen.append)
    with pytest.raises(PermissionDenied):
        api.txn([TxnOp.set("k", "v")])
    assert len(seen) == 1


def test_coordinator_wires_the_hook_to_its_retry_stats(fake):
    from voltha_gevent.coordinator import Coordinator

    config = Config.load(environ={}, flags={"instance_id": "n1", "prefix": "svc"})
    coordinator = Coordinator(config, client_factory=lambda timeout: fake.client())
    fake.fail_next(1, lambda: ACLPermissionDenied("Permission denied"))
    with pytest.raises(PermissionDenied):
        coordinator.api.get("svc/leader")
    assert coordinator.retry.stats.permission_denied == 1
    assert "svc/leader" in (coordinator.retry.stats.last_error or "")


def test_token_is_not_in_settings_repr_nor_public_dict(monkeypatch):
    config = Config.load(environ={"VOLTHA_CONSUL_TOKEN": SECRET}, flags={"instance_id": "n1"})
    settings = config.client_settings()
    assert settings.token == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in json.dumps(config.public_dict())


def test_token_file_is_read_and_stripped(tmp_path):
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    config = Config.load(environ={"VOLTHA_CONSUL_TOKEN_FILE": str(path)}, flags={"instance_id": "n1"})
    assert config.client_settings().token == SECRET


def test_settings_win_over_consul_http_env(monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.9.9.9:1")
    client = make_client(ClientSettings(host="127.0.0.1", port=8501, scheme="https", token=SECRET,
                                        verify="/ca.pem", cert=("/c.pem", "/k.pem")))
    assert client.token == SECRET
    assert client.http.base_uri == "https://127.0.0.1:8501"
    assert client.http.verify == "/ca.pem" and client.http.cert == ("/c.pem", "/k.pem")


def test_token_never_in_a_toml_file(tmp_path):
    path = tmp_path / "voltha.toml"
    path.write_text(f'consul_token = "{SECRET}"\n')
    from voltha_gevent.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        Config.load(environ={}, config_file=str(path))
    assert SECRET not in str(info.value)


def test_tls_failure_is_its_own_error_and_logged_as_such():
    import requests

    from voltha_gevent.errors import ConsulTLSError, ConsulUnavailable

    error = translate(requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"))
    assert isinstance(error, ConsulTLSError) and isinstance(error, ConsulUnavailable)
    assert "TLS handshake failed" in str(error) and "consul_ca_file" in str(error)
    retry = Retrying()
    with structlog.testing.capture_logs() as logs:
        retry._note_failure(error, "create-session", 3)
    assert [e["event"] for e in logs] == ["consul-tls-failed"]
    assert retry.stats.last_error == str(error)
