"""Drain, SIGTERM drain-first and pins with node processes on a real Consul dev agent.

Interruption of an item = its next ``start`` on another node minus its ``stop`` on the node
it left, from the nodes' report files. The leader soaks SOAK seconds on member changes, so
a plain stop costs each item at least SOAK (the member leaves, then the leader soaks); a
drain costs one handover (the soak runs while the old owner still works).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.keys import Keys
from voltha_gevent.membership import parse_members
from voltha_gevent.testing import summary
from voltha_gevent.testing.agents import CONSUL_ENV_VARS
from voltha_gevent.testing.auditor import audit_reports, owners_in_consul, read_reports
from voltha_gevent.testing.processes import NodeProcess, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEMS = {f"dg{i:02d}" for i in range(18)}
SOAK = 3.0
SETTINGS = {"VOLTHA_SOAK": str(SOAK), "VOLTHA_MAX_SOAK_DELAY": "10", "VOLTHA_DRAIN_TIMEOUT": "20"}


class Bed:
    def __init__(self, agent, tmp_path: Path) -> None:
        self.agent, self.tmp = agent, tmp_path
        self.keys = Keys(f"drain/{uuid.uuid4().hex[:8]}")
        self.api = ConsulAPI(make_client(ClientSettings(host=agent.host, port=agent.port)))
        self.nodes: dict[str, NodeProcess] = {}
        for item in sorted(ITEMS):
            self.api.put(self.keys.item(item), "v")

    def start(self, name: str, **settings: str) -> NodeProcess:
        node = NodeProcess(name, self.agent.http_addr, self.tmp, prefix=self.keys.prefix,
                           settings={**SETTINGS, **settings}).start()
        self.nodes[name] = node
        return node

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
        env.update(VOLTHA_CONSUL=self.agent.http_addr, VOLTHA_PREFIX=self.keys.prefix)
        return subprocess.run([sys.executable, "-m", "voltha_gevent", *argv], env=env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)

    def owners(self) -> dict[str, str]:
        return owners_in_consul(self.api, self.keys.owners)

    def converged(self, running: set[str]) -> bool:
        """Every item owned once, by a node in ``running``, as its /status says."""
        statuses = {n: self.nodes[n].status() for n in running}
        if not all(s and s["healthy"] for s in statuses.values()):
            return False
        owned = {item: n for n, s in statuses.items() for item in s["owned"]}
        return set(owned) == ITEMS and self.owners() == owned

    def balanced(self, running: set[str]) -> bool:
        """Converged, and every node in ``running`` runs some item (the joins were assigned)."""
        return self.converged(running) and set(self.owners().values()) == running

    def members(self) -> set[str]:
        return set(parse_members(self.keys, self.api.list(self.keys.members)[1]))

    def leader(self) -> str:
        _, entry = self.api.get(self.keys.leader)
        return entry.text() if entry and entry.session else ""

    def reports(self) -> list[dict]:
        return read_reports(n.report_file for n in self.nodes.values())

    def gaps(self, victim: str, since: float) -> dict[str, float]:
        """Per item the victim stopped after ``since``: seconds until another node started it."""
        events = self.reports()
        gaps = {}
        stops = [e for e in events if e["instance"] == victim and e["event"] == "stop" and e["t"] >= since]
        for stop in stops:
            start = next((e for e in events if e["item"] == stop["item"] and e["event"] == "start"
                          and e["instance"] != victim and e["t"] >= stop["t"]), None)
            gaps[stop["item"]] = start["t"] - stop["t"] if start else float("inf")
        return gaps

    def explain(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(12)}" for n, p in self.nodes.items())


@pytest.fixture
def bed(dev_agent, tmp_path):
    b = Bed(dev_agent, tmp_path)
    try:
        yield b
    finally:
        for node in b.nodes.values():
            node.stop(grace=25)
        b.api.delete(b.keys.prefix + "/", recurse=True)


def test_drain_moves_every_item_by_handover_and_the_member_stays(bed):
    for name in ("d1", "d2", "d3"):
        bed.start(name)
    assert wait_for(lambda: bed.balanced({"d1", "d2", "d3"}), 40), bed.explain()
    victim = next(n for n in ("d1", "d2", "d3") if n != bed.leader())
    before = time.time()
    moving = {item for item, who in bed.owners().items() if who == victim}
    drained = bed.cli("drain", victim, "--wait", "30")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.splitlines() == [f"draining {victim}", f"drained  {victim}"]
    others = {"d1", "d2", "d3"} - {victim}
    assert wait_for(lambda: bed.converged(others), 20), bed.explain()
    assert victim in bed.members() and bed.nodes[victim].status()["owned"] == []
    gaps = bed.gaps(victim, before)
    assert set(gaps) == moving and max(gaps.values()) < SOAK, gaps  # one handover each, no soak
    status = json.loads(bed.cli("status", "--json").stdout)
    assert {m["instance_id"]: m["draining"] for m in status["members"]} == {n: n == victim for n in bed.nodes}
    table = bed.cli("status").stdout
    rows = [line.split() for line in table.splitlines()]
    assert any(row[:1] == [victim] and row[-1:] == ["draining"] for row in rows), table

    # a pin to the drained member is dormant; after undrain it applies
    pinned = bed.cli("workload", "pin", "dg00", victim)
    assert pinned.returncode == 0 and "dormant" in pinned.stdout, pinned.stdout + pinned.stderr
    undrained = bed.cli("undrain", victim)
    assert undrained.returncode == 0 and undrained.stdout.strip() == f"undrained {victim}"
    assert wait_for(lambda: bed.converged({"d1", "d2", "d3"}) and bed.owners().get("dg00") == victim, 30), \
        bed.explain()
    assert bed.cli("workload", "unpin", "dg00").returncode == 0
    assert bed.cli("undrain", victim).returncode == 1  # nothing left to undrain
    assert audit_reports(bed.reports()).violations == []


def test_sigterm_drains_first_one_handover_instead_of_soak_plus_handover(bed):
    bed.start("s1")
    assert wait_for(lambda: bed.converged({"s1"}), 40), bed.explain()  # s1 leads
    bed.start("s2")
    bed.start("plain", VOLTHA_DRAIN_TIMEOUT="0")
    assert wait_for(lambda: bed.balanced({"s1", "s2", "plain"}), 40), bed.explain()
    assert bed.leader() == "s1"

    # the control: a node without drain stops at once, its items wait for the leader's soak
    started = time.time()
    assert bed.nodes["plain"].stop() == 0
    assert wait_for(lambda: bed.balanced({"s1", "s2"}), 30), bed.explain()
    plain = bed.gaps("plain", started)
    assert plain and min(plain.values()) >= SOAK, plain

    # the leader itself, SIGTERMed: it drains while leading, then stops
    moving = {item for item, who in bed.owners().items() if who == "s1"}
    started = time.time()
    bed.nodes["s1"].signal(15)
    assert wait_for(lambda: not bed.nodes["s1"].alive(), 25), bed.explain()
    assert bed.nodes["s1"].process.returncode == 0
    assert wait_for(lambda: bed.converged({"s2"}), 30), bed.explain()
    drained = bed.gaps("s1", started)
    assert set(drained) == moving and max(drained.values()) < SOAK, drained
    rows = [[name, str(len(g)), f"{min(g.values()):.2f}", f"{max(g.values()):.2f}"]
            for name, g in (("stop at once (drain_timeout 0)", plain), ("SIGTERM drains first", drained))]
    summary.report(f"SIGTERM: interruption per item, seconds (soak {SOAK:g} s)",
                   summary.format_table(["node stopped", "items", "min", "max"], rows))
    assert audit_reports(bed.reports()).violations == []
