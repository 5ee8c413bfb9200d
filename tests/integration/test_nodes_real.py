"""Node processes on a real Consul dev agent: election, assignment, failover, handover."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from voltha_gevent.assignment import desired_assignment
from voltha_gevent.assignment_docs import read_assignments
from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.keys import Keys
from voltha_gevent.testing.auditor import audit_reports, owners_in_consul, read_reports
from voltha_gevent.testing.processes import NodeProcess, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEM_COUNT = 200


class Bed:
    """Node processes sharing one prefix on the dev agent, and a plain client to check them."""

    def __init__(self, agent, tmp_path: Path) -> None:
        self.agent = agent
        self.tmp = tmp_path
        self.prefix = f"it/{uuid.uuid4().hex[:8]}"
        self.api = ConsulAPI(make_client(ClientSettings(host=agent.host, port=agent.port)))
        self.nodes: dict[str, NodeProcess] = {}
        self.gone: list[NodeProcess] = []

    def start(self, name: str) -> NodeProcess:
        node = NodeProcess(name, self.agent.http_addr, self.tmp, prefix=self.prefix).start()
        self.nodes[name] = node
        return node

    def items(self) -> set[str]:
        _, keys = self.api.keys(f"{self.prefix}/workload/")
        return {k.rsplit("/", 1)[1] for k in keys}

    def statuses(self) -> dict[str, dict]:
        return {name: node.status() for name, node in self.nodes.items()}

    def leader(self) -> str | None:
        leaders = [n for n, s in self.statuses().items() if s and s["is_leader"]]
        return leaders[0] if len(leaders) == 1 else None

    def converged(self) -> bool:
        """Every item owned exactly once, by the member it is assigned to, as the pure function says."""
        statuses = self.statuses()
        if not all(s and s["healthy"] for s in statuses.values()):
            return False
        owned = [(item, name) for name, s in statuses.items() for item in s["owned"]]
        items = self.items()
        if len(owned) != len(items) or {i for i, _ in owned} != items:
            return False
        documents = read_assignments(self.api, Keys(self.prefix))
        if any(len(ms) != 1 for ms in documents.assigned.values()):
            return False  # an item published to two members
        published = {item: next(iter(ms)) for item, ms in documents.assigned.items()}
        desired = desired_assignment({n: 1.0 for n in self.nodes}, items, published)
        return published == desired == dict(owned) == owners_in_consul(self.api, f"{self.prefix}/owners/")

    def audit(self):
        reports = [n.report_file for n in [*self.nodes.values(), *self.gone]]
        crashes = [k for n in [*self.nodes.values(), *self.gone] for k in n.kills]
        return audit_reports(read_reports(reports), crashes)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def explain(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(15)}" for n, p in self.nodes.items())


@pytest.fixture
def bed(dev_agent, tmp_path):
    b = Bed(dev_agent, tmp_path)
    for i in range(1, ITEM_COUNT + 1):
        b.api.put(f"{b.prefix}/workload/dg{i:04d}", f"value-{i}")
    try:
        yield b
    finally:
        b.stop_all()
        b.api.delete(b.prefix, recurse=True)


def test_three_processes_elect_assign_fail_over_and_hand_over(bed):
    for name in ("n1", "n2", "n3"):
        bed.start(name)
    assert wait_for(bed.converged, 30), bed.explain()
    assert bed.leader() is not None

    # SIGTERM of the leader: it releases the leader key, so a new leader comes at once
    old = bed.leader()
    started = time.monotonic()
    bed.gone.append(bed.nodes.pop(old))
    assert bed.gone[-1].stop() == 0
    assert wait_for(lambda: bed.leader() not in (None, old), 10), bed.explain()
    sigterm_failover = time.monotonic() - started
    assert sigterm_failover < 3.0, sigterm_failover
    assert wait_for(bed.converged, 30), bed.explain()

    # SIGKILL of the new leader: its session dies with its health check (2 s) + lock-delay (1 s)
    victim = bed.leader()
    started = time.monotonic()
    bed.nodes[victim].kill()
    bed.gone.append(bed.nodes.pop(victim))
    assert wait_for(lambda: bed.leader() not in (None, victim), 15), bed.explain()
    sigkill_failover = time.monotonic() - started
    assert sigkill_failover < 2 + 1 + 5, sigkill_failover
    assert wait_for(bed.converged, 30), bed.explain()

    # two joins: items move to them through graceful handover
    bed.start("n4")
    bed.start("n5")
    assert wait_for(bed.converged, 40), bed.explain()
    ledger = bed.audit()
    assert ledger.violations == []
    assert ledger.starts >= ITEM_COUNT


def test_health_endpoint_and_metrics(bed):
    node = bed.start("solo")
    assert wait_for(bed.converged, 30), bed.explain()
    code, body = node.get("/health")
    assert code == 200 and body["healthy"] is True
    code, text = node.get("/metrics")
    assert code == 200
    assert "voltha_is_leader 1.0" in text
    assert f"voltha_owned_items {float(ITEM_COUNT)}" in text
