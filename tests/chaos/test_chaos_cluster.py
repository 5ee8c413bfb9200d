"""Chaos on a real 3-server Consul cluster: node and server faults, and nothing lost.

One bed for the module (3 servers on 127.0.0.1-3, 4 node processes, 300 items); each test
is one scenario, run in file order, and must leave the bed converged for the next. The
last test audits the whole run (report files, SIGKILL/SIGSTOP/SIGCONT times); the table,
the seed and the wall time go to the end-of-run summary (pytest would swallow stdout).
``VOLTHA_CHAOS_SECONDS`` lengthens the randomized run (60 s by default) and
``VOLTHA_CHAOS_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltha_gevent.testing import summary
from voltha_gevent.testing.chaos import ChaosBed
from voltha_gevent.testing.chaos_audit import format_table, summary_rows

pytestmark = [pytest.mark.consul, pytest.mark.cluster, pytest.mark.slow]

CHAOS_SECONDS = float(os.environ.get("VOLTHA_CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("VOLTHA_CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))
#: Consul unreachable for every node: longer than the session TTL, so all must fence.
OUTAGE_SECONDS = float(os.environ.get("VOLTHA_CHAOS_OUTAGE", "20"))
#: Lines for the end-of-run summary, reported when the bed is torn down.
_SUMMARY: list[str] = []


@pytest.fixture(scope="module")
def bed(consul_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosBed]:
    started = time.monotonic()
    workdir: Path = tmp_path_factory.mktemp("chaos")
    chaos = ChaosBed(workdir, nodes=4, items=300, binary=consul_bin)
    try:
        chaos.start()
        yield chaos
    finally:
        chaos.stop()
        _SUMMARY.insert(0, f"chaos seed {SEED} ({CHAOS_SECONDS:.0f}s random run; replay with "
                           f"VOLTHA_CHAOS_SEED={SEED}); wall time {time.monotonic() - started:.0f}s, "
                           f"workdir {workdir}")
        summary.report("chaos bed: real 3-server Consul", "\n".join(_SUMMARY))


def settled(bed: ChaosBed) -> None:
    recent = [what for _, what in bed.violations]
    assert not recent, bed.explain()
    assert bed.converged(), bed.explain()


def test_sigkill_follower_and_leader(bed: ChaosBed) -> None:
    bed.kill_and_restart("sigkill node", bed.follower())
    settled(bed)
    leader = bed.leader_node()
    assert leader is not None, bed.explain()
    bed.kill_and_restart("sigkill node", leader)
    settled(bed)


def test_sigterm_each_node(bed: ChaosBed) -> None:
    for name in list(bed.nodes):
        bed.term_and_restart("sigterm node", name)
    settled(bed)


def test_sigstop_longer_than_session_ttl(bed: ChaosBed) -> None:
    victim = bed.follower()
    bed.freeze_node("sigstop node > TTL", victim)
    settled(bed)
    leader = bed.leader_node()
    assert leader is not None
    bed.freeze_node("sigstop node > TTL", leader)
    settled(bed)
    audit = bed.audit()
    assert audit.resume_fence, "the frozen nodes reported no stops after SIGCONT"
    assert not audit.violations, audit.violations


def test_kill_raft_leader_server(bed: ChaosBed) -> None:
    leader = bed.raft_leader()
    assert leader is not None
    bed.kill_server_and_restart("kill raft leader", leader, "sigkill-raft-leader")
    settled(bed)


def test_kill_the_server_a_node_talks_to(bed: ChaosBed) -> None:
    raft_leader = bed.raft_leader()
    index = next(i for i in range(3) if i != raft_leader)
    bed.kill_server_and_restart("kill a node's server", index)
    settled(bed)


def test_consul_unreachable_for_every_node(bed: ChaosBed) -> None:
    bed.consul_outage("consul unreachable", OUTAGE_SECONDS)
    settled(bed)


def test_randomized(bed: ChaosBed) -> None:
    bed.random_run(CHAOS_SECONDS, SEED, scenario=f"random seed={SEED}")
    settled(bed)


def test_audit_and_table(bed: ChaosBed) -> None:
    audit = bed.audit()
    rows = summary_rows(bed.faults, audit, bed.violations)
    _SUMMARY.append(format_table(rows))
    _SUMMARY.extend(f"VIOLATION {what}" for _, what in [*audit.violations, *bed.violations])
    assert audit.starts >= 300
    assert audit.violations == []
    assert bed.violations == []
