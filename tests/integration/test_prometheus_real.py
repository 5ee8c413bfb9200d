"""The shipped alert rules on a real Prometheus scraping 3 node processes on a real Consul.

promtool's unit tests (tests/unit/test_monitoring.py) prove the rules on made-up series;
this proves them on what nodes really export, scraped the way an operator would: exactly one
``voltha_is_leader`` is 1, and a fault induced in Consul fires the alert meant for it, on
the node it happened to. The rules are the shipped ones with some ``for:`` shortened (a test
cannot wait 30 s per alert); the expressions are untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import make_client
from voltha_gevent.testing.processes import NodeProcess, wait_for
from voltha_gevent.testing.prometheus import RULES_FILE, PrometheusServer, rules_with_for

pytestmark = [pytest.mark.consul, pytest.mark.slow, pytest.mark.prometheus]
ITEMS = 6
#: Test durations for alerts whose production ``for:`` is tens of seconds.
SHORT_FOR = {"VolthaItemsUnowned": "3s", "VolthaNoLeader": "3s"}


class Bed:
    """3 node processes on one prefix of the dev agent, and a Prometheus scraping them."""

    def __init__(self, agent: Any, tmp_path: Path, prometheus_bin: str) -> None:
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"it/prom-{tag}"
        self.client = make_client(ClientSettings(host=agent.host, port=agent.port))
        self.nodes = {name: NodeProcess(f"prom-{tag}-{name}", agent.http_addr, tmp_path, prefix=self.prefix)
                      for name in ("n1", "n2", "n3")}
        rules = rules_with_for(RULES_FILE, tmp_path / "rules.yml", SHORT_FOR)
        self.prometheus = PrometheusServer(prometheus_bin, tmp_path / "prometheus",
                                           [f"127.0.0.1:{n.rest_port}" for n in self.nodes.values()],
                                           rule_files=[rules])
        self.foreign: list[str] = []

    def instance(self, name: str) -> str:
        return f"127.0.0.1:{self.nodes[name].rest_port}"

    def name_of(self, instance: str) -> str:
        return next(name for name in self.nodes if self.instance(name) == instance)

    def value(self, promql: str) -> float | None:
        result = self.prometheus.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def active(self, alertname: str) -> list[dict[str, Any]]:
        return [a for a in self.prometheus.alerts() if a["labels"]["alertname"] == alertname]

    def session_of(self, name: str) -> str:
        _, sessions = self.client.session.list()
        wanted = f"voltha-{self.nodes[name].instance_id}"
        return next(s["ID"] for s in sessions if s["Name"] == wanted)

    def hold_owner_lock(self, item: str) -> None:
        """A foreign session takes ``owners/<item>``: the item can run nowhere (one-owner rule)."""
        session = self.client.session.create(name="prom-test-foreign", behavior="release", lock_delay=0)
        self.foreign.append(session)
        assert self.client.kv.put(f"{self.prefix}/owners/{item}", "foreign", acquire=session)

    def explain(self) -> str:
        logs = "\n".join(f"--- {n}\n{p.log_tail(10)}" for n, p in self.nodes.items())
        return f"{logs}\n--- prometheus\n{self.prometheus.log_tail()}\nalerts: {self.prometheus.alerts()}"

    def close(self) -> None:
        self.prometheus.stop()
        for node in self.nodes.values():
            node.stop()
        for session in self.foreign:
            self.client.session.destroy(session)
        self.client.kv.delete(f"{self.prefix}/", recurse=True)


@pytest.fixture
def bed(dev_agent: Any, tmp_path: Path, prometheus_bin: str) -> Iterator[Bed]:
    b = Bed(dev_agent, tmp_path, prometheus_bin)
    try:
        for i in range(1, ITEMS + 1):
            b.client.kv.put(f"{b.prefix}/workload/dg{i:02d}", "")
        for node in b.nodes.values():
            node.start()
        b.prometheus.start()
        yield b
    finally:
        b.close()


def _one_leader(bed: Bed) -> str | None:
    """The instance of the one series at 1, once all 3 nodes are scraped and agree."""
    leaders = bed.prometheus.query("voltha_is_leader == 1")
    if bed.value("count(voltha_is_leader)") != 3 or len(leaders) != 1:
        return None
    return str(leaders[0]["metric"]["instance"])


def test_one_leader_and_induced_faults_fire_their_alerts(bed: Bed) -> None:
    assert wait_for(lambda: _one_leader(bed) is not None, 40, step=0.5), bed.explain()
    leader = bed.name_of(_one_leader(bed) or "")
    status = bed.nodes[leader].status()
    assert status is not None and status["is_leader"], "Prometheus and /status disagree on the leader"
    # the recording rule follows the scrape by up to one evaluation interval
    assert wait_for(lambda: bed.value("voltha:leaders:count") == 1, 10, step=0.5), bed.explain()
    assert wait_for(lambda: bed.value("voltha:items_owned:sum") == ITEMS
                    and bed.value("voltha:items_unowned:count") == 0 and not bed.active("VolthaItemsUnowned"),
                    30, step=0.5), bed.explain()
    assert not bed.active("VolthaSessionLost"), bed.explain()

    # Fault 1: a follower's session destroyed in Consul. The node counts a session loss, fences
    # its work and re-joins; VolthaSessionLost fires for that node only.
    victim = next(name for name in bed.nodes if name != leader)
    bed.client.session.destroy(bed.session_of(victim))
    firing_on = [bed.instance(victim)]
    assert wait_for(lambda: [a["instance"] for a in bed.prometheus.firing("VolthaSessionLost")] == firing_on,
                    30, step=0.5), bed.explain()
    assert _one_leader(bed) == bed.instance(leader), bed.explain()  # a follower's loss moves no leader

    # Fault 2: a new item whose owner lock a foreign session holds: assigned, never owned.
    bed.hold_owner_lock("dg99")
    bed.client.kv.put(f"{bed.prefix}/workload/dg99", "")
    assert wait_for(lambda: bed.prometheus.firing("VolthaItemsUnowned") != [], 30, step=0.5), bed.explain()
    (labels,) = bed.prometheus.firing("VolthaItemsUnowned")
    assert labels["job"] == "voltha" and labels["severity"] == "critical"
    # The new item may move another one (a handover, briefly unowned too); then only it is left.
    assert wait_for(lambda: [float(a["value"]) for a in bed.active("VolthaItemsUnowned")
                             if a["state"] == "firing"] == [1.0], 20, step=0.5), bed.explain()
    # its assignee waits for the lock (the handover's item may show pending a scrape longer)
    assert wait_for(lambda: bed.value("voltha:items_pending:sum") == 1, 20, step=0.5), bed.explain()

    # Throughout: one leader, so neither leadership alert is even pending.
    assert _one_leader(bed) is not None
    assert not bed.active("VolthaNoLeader") and not bed.active("VolthaMultipleLeaders"), bed.explain()
