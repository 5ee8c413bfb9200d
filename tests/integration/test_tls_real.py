"""Node processes against a real Consul agent serving HTTPS with a throw-away CA (openssl).

The agent requires client certificates on its HTTPS port (``verify_incoming_https``):

* a node with ``--consul-scheme https``, the CA file and a client cert/key works (elects,
  owns the workload) and ``/health`` is 200;
* a node without the CA (verification is on by default) fails the TLS handshake: a clear
  error in its log and on ``/health``, and nothing written under its prefix;
* a node with the CA but no client certificate is refused by the agent, equally visibly.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.testing.processes import NodeProcess, wait_for
from voltha_gevent.testing.secure import TlsAgent

pytestmark = [
    pytest.mark.consul,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test CA"),
]


@pytest.fixture(scope="module")
def tls_agent(consul_bin: str) -> Iterator[TlsAgent]:
    with TlsAgent(consul_bin, verify_incoming=True) as agent:
        yield agent


@pytest.fixture
def secure_api(tls_agent: TlsAgent) -> ConsulAPI:
    pki = tls_agent.pki
    return ConsulAPI(make_client(ClientSettings(
        host=tls_agent.host, port=tls_agent.https_port, scheme="https", verify=str(pki.ca_cert),
        cert=(str(pki.client_cert), str(pki.client_key)))))


def _node(agent: TlsAgent, tmp: Path, name: str, prefix: str, **settings: str) -> NodeProcess:
    env = {"VOLTHA_CONSUL_SCHEME": "https", **settings}
    return NodeProcess(name, agent.https_addr, tmp, prefix=prefix, settings=env).start()


def _health(node: NodeProcess) -> tuple[int, dict]:
    try:
        code, body = node.get("/health")
    except OSError:
        return 0, {}
    return code, body if isinstance(body, dict) else {}


def test_node_over_https_with_ca_and_client_cert_works(tls_agent: TlsAgent, secure_api: ConsulAPI,
                                                      tmp_path: Path) -> None:
    prefix = f"tls/{uuid.uuid4().hex[:8]}"
    pki = tls_agent.pki
    for i in range(1, 6):
        secure_api.put(f"{prefix}/workload/dg{i}", "v")
    node = _node(tls_agent, tmp_path, "t1", prefix, VOLTHA_CONSUL_CA_FILE=str(pki.ca_cert),
                 VOLTHA_CONSUL_CERT_FILE=str(pki.client_cert), VOLTHA_CONSUL_KEY_FILE=str(pki.client_key))
    try:
        ok = wait_for(lambda: (node.status() or {}).get("owned") == [f"dg{i}" for i in range(1, 6)], 15)
        assert ok, node.log_tail()
        assert _health(node)[0] == 200
        assert (node.status() or {})["is_leader"]
    finally:
        node.stop()
        secure_api.delete(prefix, recurse=True)


@pytest.mark.parametrize("case", ["no-ca", "no-client-cert"])
def test_node_without_trust_fails_clearly_and_writes_nothing(tls_agent: TlsAgent, secure_api: ConsulAPI,
                                                            tmp_path: Path, case: str) -> None:
    prefix = f"tls/{uuid.uuid4().hex[:8]}"
    pki = tls_agent.pki
    if case == "no-ca":  # a valid client cert, but the agent's certificate cannot be verified
        settings = {"VOLTHA_CONSUL_CERT_FILE": str(pki.client_cert),
                    "VOLTHA_CONSUL_KEY_FILE": str(pki.client_key)}
        expected = "certificate verify failed"  # and "tls handshake failed"
    else:  # trusts the agent, but presents no certificate to an agent that wants one
        settings = {"VOLTHA_CONSUL_CA_FILE": str(pki.ca_cert)}
        expected = "tls handshake failed"
    node = _node(tls_agent, tmp_path, "bad", prefix, **settings)
    try:
        def failing() -> bool:
            code, body = _health(node)
            return code == 503 and expected in str(body.get("last_consul_error") or "").lower()

        assert wait_for(failing, 15), node.log_tail()
        assert secure_api.keys(prefix + "/")[1] == []
        log = node.log_path.read_text(errors="replace").lower()
        assert expected in log
        assert "consul-tls-failed" in log
    finally:
        node.stop()
