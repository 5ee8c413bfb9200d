"""Node processes against a real ACL-enabled Consul (default deny) with the shipped policy.

* the shipped ``deploy/consul-policy.hcl`` (rendered for the test's prefix) is all three
  nodes need to elect, assign, hand items over to a joiner (whose token comes from
  ``VOLTHA_CONSUL_TOKEN_FILE``) and fail over on SIGTERM;
* a token without rights to the prefix (or without any) gets ``consul-permission-denied`` in
  the log and on ``/health``, backs off, and writes nothing;
* an anonymous client cannot read the prefix; the token never appears in a node's log;
* the node's HTTP endpoint binds 127.0.0.1 only unless told otherwise.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltha_gevent.assignment import desired_assignment
from voltha_gevent.assignment_docs import read_assignments
from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.errors import PermissionDenied
from voltha_gevent.keys import Keys
from voltha_gevent.testing.auditor import audit_reports, owners_in_consul, read_reports
from voltha_gevent.testing.processes import NodeProcess, wait_for
from voltha_gevent.testing.secure import AclAgent

pytestmark = [pytest.mark.consul]

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "deploy" / "consul-policy.hcl"
SHIPPED_PREFIX = "service/voltha/"
ITEMS = 24


def render_policy(prefix: str, path: Path = POLICY) -> str:
    """The shipped policy with its example prefix replaced by ``prefix``."""
    text = path.read_text()
    assert f'key_prefix "{SHIPPED_PREFIX}"' in text
    return text.replace(SHIPPED_PREFIX, prefix.rstrip("/") + "/")


class AclBed:
    """An ACL agent, a management client, and helpers to mint tokens and run nodes."""

    def __init__(self, agent: AclAgent, tmp: Path) -> None:
        self.agent = agent
        self.tmp = tmp
        self.prefix = f"acl/{uuid.uuid4().hex[:8]}"
        self.admin_client = make_client(self._settings(agent.management_token))
        self.admin = ConsulAPI(self.admin_client)
        self.nodes: dict[str, NodeProcess] = {}
        self.gone: list[NodeProcess] = []

    def _settings(self, token: str | None) -> ClientSettings:
        return ClientSettings(host=self.agent.host, port=self.agent.port, token=token)

    def token_for(self, rules: str | None, name: str) -> str:
        policies = []
        if rules is not None:
            policy = self.admin_client.acl.policy.create(name=f"{name}-{uuid.uuid4().hex[:6]}", rules=rules)
            policies = [{"ID": policy["ID"]}]
        token = self.admin_client.acl.tokens.create(payload={"Description": name, "Policies": policies})
        return str(token["SecretID"])

    def start(self, name: str, token: str, **settings: str) -> NodeProcess:
        env = {"VOLTHA_CONSUL_TOKEN": token, **settings} if token else dict(settings)
        node = NodeProcess(name, self.agent.http_addr, self.tmp, prefix=self.prefix, settings=env).start()
        self.nodes[name] = node
        return node

    def all_keys(self) -> list[str]:
        return self.admin.keys(self.prefix + "/")[1]

    def items(self) -> set[str]:
        return {k.rsplit("/", 1)[1] for k in self.admin.keys(f"{self.prefix}/workload/")[1]}

    def leader(self) -> str | None:
        leaders = [n for n, p in self.nodes.items() if (p.status() or {}).get("is_leader")]
        return leaders[0] if len(leaders) == 1 else None

    def converged(self) -> bool:
        statuses = {n: p.status() for n, p in self.nodes.items()}
        if not all(s and s["healthy"] and not s["pending"] and not s["revoking"] for s in statuses.values()):
            return False
        owned = {item: n for n, s in statuses.items() for item in s["owned"]}  # type: ignore[union-attr]
        if sum(len(s["owned"]) for s in statuses.values()) != len(owned):  # type: ignore[union-attr]
            return False
        documents = read_assignments(self.admin, Keys(self.prefix))
        if any(len(ms) != 1 for ms in documents.assigned.values()):
            return False  # an item published to two members
        published = {item: next(iter(ms)) for item, ms in documents.assigned.items()}
        desired = desired_assignment({n: 1.0 for n in self.nodes}, self.items(), published)
        in_consul = owners_in_consul(self.admin, f"{self.prefix}/owners/")
        return set(owned) == self.items() and published == desired == owned == in_consul

    def logs(self) -> str:
        return "".join(p.log_path.read_text(errors="replace") for p in [*self.nodes.values(), *self.gone]
                       if p.log_path.exists())

    def explain(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(12)}" for n, p in self.nodes.items())

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def acl_agent(consul_bin: str) -> Iterator[AclAgent]:
    with AclAgent(consul_bin) as agent:
        yield agent


@pytest.fixture
def bed(acl_agent: AclAgent, tmp_path: Path) -> Iterator[AclBed]:
    b = AclBed(acl_agent, tmp_path)
    try:
        yield b
    finally:
        b.stop_all()
        b.admin.delete(b.prefix, recurse=True)


def test_shipped_policy_is_enough_to_elect_assign_and_hand_over(bed: AclBed) -> None:
    token = bed.token_for(render_policy(bed.prefix), "voltha-node")
    for i in range(1, ITEMS + 1):
        bed.admin.put(f"{bed.prefix}/workload/dg{i:03d}", f"v{i}")
    bed.start("n1", token)
    bed.start("n2", token)
    assert wait_for(bed.converged, 20), bed.explain()

    token_file = bed.tmp / "n3.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    bed.start("n3", "", VOLTHA_CONSUL_TOKEN_FILE=str(token_file))  # joiner, token from a file
    assert wait_for(lambda: bed.nodes["n3"].status() is not None, 10), bed.explain()
    assert wait_for(bed.converged, 20), bed.explain()
    assert all(len((p.status() or {})["owned"]) > 0 for p in bed.nodes.values())

    old = bed.leader()
    assert old is not None
    bed.gone.append(bed.nodes.pop(old))
    assert bed.gone[-1].stop() == 0  # SIGTERM: leaves cleanly, session destroyed
    assert wait_for(lambda: bed.leader() not in (None, old), 10), bed.explain()
    assert wait_for(bed.converged, 20), bed.explain()

    reports = [p.report_file for p in [*bed.nodes.values(), *bed.gone]]
    assert audit_reports(read_reports(reports), []).violations == []

    anonymous = ConsulAPI(make_client(ClientSettings(host=bed.agent.host, port=bed.agent.port)))
    with pytest.raises(PermissionDenied):
        anonymous.get(f"{bed.prefix}/leader")
    assert anonymous.list(bed.prefix + "/")[1] == []  # listing is filtered: nothing visible
    assert anonymous.keys(bed.prefix + "/")[1] == []
    with pytest.raises(PermissionDenied):
        anonymous.put(f"{bed.prefix}/workload/intruder", "x")

    logs = bed.logs()
    assert "consul-permission-denied" not in logs
    assert token not in logs and bed.agent.management_token not in logs


def test_token_without_rights_gets_a_clear_error_and_writes_nothing(bed: AclBed) -> None:
    elsewhere = bed.token_for(render_policy("elsewhere"), "wrong-prefix")  # session+service, other KV
    nothing = bed.token_for(None, "no-rights")
    bed.admin.put(f"{bed.prefix}/workload/dg001", "v1")
    before = bed.all_keys()
    t0 = time.monotonic()
    wrong = bed.start("w1", elsewhere)
    bare = bed.start("w2", nothing)

    def denied_on_health(node: NodeProcess) -> bool:
        try:
            code, body = node.get("/health")
        except OSError:
            return False
        return code == 503 and "permission denied" in str(body.get("last_consul_error", "")).lower()

    assert wait_for(lambda: denied_on_health(wrong) and denied_on_health(bare), 15), bed.explain()
    _, body = wrong.get("/health")
    assert f"{bed.prefix}/" in body["last_consul_error"]  # names the key it was refused
    time.sleep(6)  # long enough for a storm to show, short enough for the budget
    assert bed.all_keys() == before  # no writes landed
    # each loop (a couple of watches, the session set-up) retries a 403 only every 5 s
    most = 4 * ((time.monotonic() - t0) / 5.0 + 1)

    for node in (wrong, bare):
        log = node.log_path.read_text(errors="replace")
        assert "consul-permission-denied" in log
        assert elsewhere not in log and nothing not in log
        assert log.count("consul-permission-denied") <= most, log[-3000:]
    code, _ = bare.get("/health")
    assert code == 503


def test_http_endpoint_binds_loopback_only_by_default(bed: AclBed) -> None:
    token = bed.token_for(render_policy(bed.prefix), "voltha-node")
    node = bed.start("b1", token)
    assert wait_for(lambda: node.status() is not None, 10), node.log_tail()
    assert f'"address": "127.0.0.1:{node.rest_port}"' in node.log_path.read_text()
    with socket.socket() as other, pytest.raises(OSError):
        other.settimeout(1.0)
        other.connect(("127.0.0.2", node.rest_port))  # another local address: refused
