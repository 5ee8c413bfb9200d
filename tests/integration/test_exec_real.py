"""Exec mode on a real Consul: node processes run one child per item; SIGSTOP and SIGKILL of a
node stop its children within the fencing budget, and the ledger the children write shows no
two owners of an item acting at once."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from voltha_gevent.budget import FencingBudget
from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.testing import ledger_child
from voltha_gevent.testing.ledger_audit import LedgerIndex, audit_index
from voltha_gevent.testing.processes import TEST_SETTINGS, NodeProcess, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEMS = [f"dg{i}" for i in range(1, 7)]
#: A run counts as live when it wrote an effect this recently (it ticks every 50 ms).
LIVE_WINDOW = 0.5
BUDGET = FencingBudget(session_ttl=float(TEST_SETTINGS["VOLTHA_SESSION_TTL"]),
                       check_ttl=float(TEST_SETTINGS["VOLTHA_CHECK_TTL"]),
                       lock_delay=float(TEST_SETTINGS["VOLTHA_LOCK_DELAY"]),
                       stop_timeout=float(TEST_SETTINGS["VOLTHA_STOP_TIMEOUT"]))


class ExecBed:
    """Node processes in exec mode sharing a prefix; every child ticks into one ledger."""

    def __init__(self, agent, tmp_path: Path) -> None:
        self.agent = agent
        self.tmp = tmp_path
        self.prefix = f"it/{uuid.uuid4().hex[:8]}"
        self.ledger = tmp_path / "ledger"
        self.command = shlex.join([sys.executable, ledger_child.__file__, str(self.ledger)])
        self.api = ConsulAPI(make_client(ClientSettings(host=agent.host, port=agent.port)))
        self.nodes: dict[str, NodeProcess] = {}

    def start(self, name: str) -> NodeProcess:
        node = NodeProcess(name, self.agent.http_addr, self.tmp, prefix=self.prefix,
                           args=["--exec", self.command]).start()
        self.nodes[name] = node
        return node

    def index(self) -> LedgerIndex:
        index = LedgerIndex()
        index.feed([self.ledger])
        return index

    def live(self) -> dict[str, set[str]]:
        """Per instance, the items whose child ticked within the live window."""
        found: dict[str, set[str]] = {}
        for item, runs in self.index().live_runs(time.monotonic(), LIVE_WINDOW).items():
            for run in runs:
                found.setdefault(run.instance, set()).add(item)
        return found

    def live_pids(self, instance: str) -> set[int]:
        runs = self.index().live_runs(time.monotonic(), LIVE_WINDOW)
        return {r.pid for item_runs in runs.values() for r in item_runs if r.instance == instance}

    def all_on(self, instance: str) -> bool:
        live = self.live()
        return live.get(instance) == set(ITEMS) and all(not v for k, v in live.items() if k != instance)

    def spread(self) -> bool:
        """Every item runs exactly once, and every node runs some."""
        live = self.live()
        counted = [i for items in live.values() for i in items]
        return sorted(counted) == sorted(ITEMS) and set(live) == set(self.nodes)

    def explain(self) -> str:
        tails = "\n".join(f"--- {n}\n{p.log_tail(20)}" for n, p in self.nodes.items())
        return f"live: {self.live()}\n{tails}"


def _procs(pids: set[int]) -> str:
    """``pid ppid state command`` of those still there, for failure messages."""
    lines = []
    for pid in sorted(pids):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
        except OSError:
            continue
        lines.append(f"{pid} ppid={stat[1]} state={stat[0]} {cmd}")
    return "\n".join(lines)


def _gone(pids: set[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def _problems(audit) -> list[str]:
    return [v.describe() for v in audit.violations] + [r.describe() for r in audit.token_regressions]


@pytest.fixture
def bed(dev_agent, tmp_path):
    b = ExecBed(dev_agent, tmp_path)
    for item in ITEMS:
        b.api.put(f"{b.prefix}/workload/{item}", f"value-{item}")
    try:
        yield b
    finally:
        for node in b.nodes.values():
            node.stop()


def test_children_of_a_frozen_then_a_killed_node_stop_in_budget_no_overlaps(bed):
    bed.start("n1")
    bed.start("n2")
    assert wait_for(bed.spread, 60), bed.explain()

    # SIGSTOP: the frozen node writes nothing; its guards act on the last lease deadline
    frozen, other = "n1", "n2"
    pids = bed.live_pids(frozen)
    assert pids
    stopped_at = time.monotonic()
    bed.nodes[frozen].signal(signal.SIGSTOP)
    assert wait_for(lambda: _gone(pids), BUDGET.fenced_by + 1.0), bed.explain()
    assert wait_for(lambda: bed.all_on(other), 60), bed.explain()
    index = bed.index()
    last = max(t for run in index.runs.values() if run.instance == frozen for t in run.effects)
    assert last - stopped_at <= BUDGET.fenced_by, (last - stopped_at, BUDGET.formula())
    audit = audit_index(index)
    assert audit.ok, _problems(audit)

    # the frozen node comes back, rejoins and gets items again
    bed.nodes[frozen].signal(signal.SIGCONT)
    assert wait_for(bed.spread, 90), bed.explain()

    # SIGKILL: the lease pipe closes, the guards end their groups at once
    killed = other
    pids = bed.live_pids(killed)
    assert pids
    killed_at = time.monotonic()
    bed.nodes[killed].kill()
    assert wait_for(lambda: _gone(pids), BUDGET.stop_timeout), _procs(pids) + "\n" + bed.explain()
    assert time.monotonic() - killed_at < BUDGET.stop_timeout
    assert wait_for(lambda: bed.all_on(frozen), 60), bed.explain()
    audit = audit_index(bed.index())
    assert audit.ok, _problems(audit)
    assert audit.runs >= 2 * len(ITEMS) and audit.malformed == 0
