"""Real Consul dev agents with ACLs (default deny) or TLS, for security tests.

Guarantees, on top of :class:`~voltha_gevent.testing.agents.DevAgent`'s:

* :class:`AclAgent` starts with ``acl { enabled = true, default_policy = "deny" }`` and a
  fresh random management token (``agent.management_token``), which is also the agent's own
  token; readiness is checked with that token, since anonymous reads see nothing.
* :class:`TlsAgent` serves HTTPS on ``agent.https_port`` with a certificate signed by a
  throw-away CA made by :func:`make_test_pki` (``openssl``, in the agent's directory); the
  plain HTTP port stays open on loopback for readiness checks only.
* Nothing here touches anything but 127.0.0.1 and the agent's own temporary directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agents import DevAgent, free_port

#: Validity of the test certificates, in days.
CERT_DAYS = 2


def acl_hcl(management_token: str) -> str:
    """The agent config of an ACL-enabled, default-deny Consul 1.8 agent."""
    return (
        'acl { enabled = true default_policy = "deny" down_policy = "extend-cache" '
        f'tokens {{ master = "{management_token}" agent = "{management_token}" }} }}'
    )


class AclAgent(DevAgent):
    """A dev agent with ACLs on, default deny; ``management_token`` can do anything."""

    def __init__(self, binary: str | None = None, **kw: Any) -> None:
        self.management_token = str(uuid.uuid4())
        extra = (*kw.pop("extra_args", ()), "-hcl", acl_hcl(self.management_token))
        super().__init__(binary, extra_args=extra, **kw)

    def _node_healthy(self) -> bool:
        request = urllib.request.Request(
            f"http://{self.http_addr}/v1/health/node/{self.node}",
            headers={"X-Consul-Token": self.management_token},
        )
        try:
            with urllib.request.urlopen(request, timeout=2.0) as answer:  # noqa: S310 - loopback only
                checks = json.loads(answer.read().decode("utf-8") or "null")
        except (OSError, ValueError):
            return False
        return any(c.get("CheckID") == "serfHealth" and c.get("Status") == "passing" for c in checks or [])


@dataclass(frozen=True)
class TestPKI:
    """Paths of a throw-away CA and of server and client certificates it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_test_pki(directory: Path, *, host: str = "127.0.0.1") -> TestPKI:
    """A self-signed CA plus a server cert for ``host``/localhost and a client cert (openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(CERT_DAYS),
        "-subj", "/CN=voltha-test-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, ext in (
        ("server", "server.dc1.consul",
         f"subjectAltName=IP:{host},DNS:localhost,DNS:server.dc1.consul\n"
         "extendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "voltha-client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        run("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", str(CERT_DAYS),
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return TestPKI(d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key",
                   d / "client.pem", d / "client.key")  # fmt: skip


def tls_hcl(pki: TestPKI, https_port: int, *, verify_incoming: bool) -> str:
    """Agent config for HTTPS on ``https_port`` with ``pki``'s server certificate."""
    incoming = "true" if verify_incoming else "false"
    return (
        f'ports {{ https = {https_port} }} '
        f'ca_file = "{pki.ca_cert}" cert_file = "{pki.server_cert}" key_file = "{pki.server_key}" '
        f'verify_incoming = false verify_incoming_https = {incoming} verify_outgoing = false'
    )


class TlsAgent(DevAgent):
    """A dev agent that also serves HTTPS on ``https_port`` with a throw-away CA's certificate.

    With ``verify_incoming`` HTTPS clients must present a certificate signed by that CA.
    """

    def __init__(self, binary: str | None = None, *, verify_incoming: bool = False, **kw: Any) -> None:
        self.https_port = free_port(kw.get("host", "127.0.0.1"))
        self._pki_dir = Path(tempfile.mkdtemp(prefix="voltha-consul-pki-"))
        self.pki = make_test_pki(self._pki_dir, host=kw.get("host", "127.0.0.1"))
        extra = (*kw.pop("extra_args", ()), "-hcl", tls_hcl(self.pki, self.https_port,
                                                             verify_incoming=verify_incoming))
        super().__init__(binary, extra_args=extra, **kw)

    @property
    def https_addr(self) -> str:
        return f"{self.host}:{self.https_port}"

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self._pki_dir, ignore_errors=True)


__all__ = ["AclAgent", "TestPKI", "TlsAgent", "acl_hcl", "make_test_pki", "tls_hcl"]
