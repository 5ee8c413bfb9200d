"""Partitions, freezes and slow handlers on Consul in network namespaces, judged by an external ledger.

One bed for the module (:class:`~voltha_gevent.testing.netbed.PartitionBed`: 3 servers, 3
hosts each with a client agent and a node, items ticking every 50 ms into ledger files).
Each test injects one fault :data:`RUNS` times, each from a converged bed, and asserts, from
the ledger alone: no two owners of an item ever acted at overlapping times, fencing tokens
grow, the bed converged again, and items ran again within the stated bound. The table of
every fault goes to the end-of-run summary, with the seed (``VOLTHA_PARTITION_SEED`` replays
the choice of targets). Root and ``ip netns`` are needed: without them the module skips,
except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voltha_gevent.testing import summary
from voltha_gevent.testing.netbed import PARTITION_SETTINGS, PartitionBed
from voltha_gevent.testing.netbed_members import BLOCK_SECONDS
from voltha_gevent.testing.netbed_runs import TABLE_HEADER, FaultRun, fault_table
from voltha_gevent.testing.netns import qdisc_available, unavailable_reason

pytestmark = [pytest.mark.consul, pytest.mark.partition, pytest.mark.slow]

SEED = int(os.environ.get("VOLTHA_PARTITION_SEED") or random.SystemRandom().randrange(1, 10**9))
RUNS = 2
ITEMS = int(os.environ.get("VOLTHA_PARTITION_ITEMS", "60"))
CHECK_TTL = float(PARTITION_SETTINGS["VOLTHA_CHECK_TTL"])
LOCK_DELAY = float(PARTITION_SETTINGS["VOLTHA_LOCK_DELAY"])
SESSION_TTL = float(PARTITION_SETTINGS["VOLTHA_SESSION_TTL"])
SOAK = float(PARTITION_SETTINGS["VOLTHA_SOAK"])
MAX_LOOP_STALL = float(PARTITION_SETTINGS["VOLTHA_MAX_LOOP_STALL"])
#: Process start, Raft elections, two busy cores.
MARGIN = 3.0
#: A frozen node stays frozen longer than its check TTL, so Consul gives its items away.
FREEZE = 8.0
#: A partition lasts longer than the session TTL.
PARTITION = SESSION_TTL + 1.0
#: on_revoked slower than lock-delay (and than stop_timeout).
REVOKE_DELAY = LOCK_DELAY + 1.0
SLOW_LINK = 6.0
RAFT_ISOLATION = 6.0
#: Items run again within: the check TTL runs out, lock-delay, the soak, margin.
STALL_BOUND = CHECK_TTL + LOCK_DELAY + SOAK + MARGIN
#: When the servers lose a host, its items come back once Consul drops its session: through
#: serfHealth (5-9 s seen), or at the latest when the session expires, 2 x TTL after the last
#: renew the servers saw; then lock-delay, the soak and the margin. (Not "when the host is
#: back": a healed host may wait a long time before Consul lets it make a session again,
#: while its serfHealth is still critical - 21 s once in CI.)
PARTITION_BOUND = max(PARTITION + STALL_BOUND, 2 * SESSION_TTL + LOCK_DELAY + SOAK + MARGIN)
TBF = ("tbf", ["rate", "64kbit", "burst", "4kb", "latency", "2s"])

_NOT_RUN: dict[str, str] = {}


@pytest.fixture(scope="module")
def bed(consul_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PartitionBed]:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    started = time.monotonic()
    workdir: Path = tmp_path_factory.mktemp("partition")
    partition_bed = PartitionBed(workdir, items=ITEMS, binary=consul_bin)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed run still tears the bed down
    try:
        partition_bed.start()
        yield partition_bed
    finally:
        partition_bed.stop()
        signal.signal(signal.SIGTERM, previous)
        _report(partition_bed, time.monotonic() - started, workdir)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _report(partition_bed: PartitionBed, wall: float, workdir: Path) -> None:
    table = summary.format_table(TABLE_HEADER, fault_table(partition_bed.runs, _NOT_RUN))
    lines = [f"seed {SEED} (replay: VOLTHA_PARTITION_SEED={SEED}); {ITEMS} items, 3 hosts, 3 servers; "
             f"wall {wall:.0f}s; workdir {workdir}", table]
    lines += [f"VIOLATION [{run.fault} on {run.target}] {v.describe()}"
              for run in partition_bed.runs for v in run.violations[:3]]
    lines += [f"PROBLEM {p.splitlines()[0]}" for p in partition_bed.problems]
    summary.report("partition bed: external ledger audit", "\n".join(lines))


@pytest.fixture(scope="module")
def rng() -> random.Random:
    return random.Random(SEED)


def check(runs: list[FaultRun], bound: float, partition_bed: PartitionBed) -> None:
    """Every run: no overlap, tokens grow, converged, items back within ``bound`` seconds."""
    failures = []
    for run in runs:
        where = f"{run.fault} on {run.target}"
        failures += [f"{where}: {v.describe()}" for v in run.violations[:5]]
        failures += [f"{where}: {r.describe()}" for r in run.regressions[:5]]
        if run.converged is None:
            failures.append(f"{where}: never converged again")
        elif run.recovery is None or run.recovery > bound:
            failures.append(f"{where}: recovery {run.recovery} s exceeds {bound:.1f} s")
    assert not failures, "\n".join(failures) + "\n" + partition_bed.explain()


def follower(partition_bed: PartitionBed, rng: random.Random) -> str:
    leader = partition_bed.leader_host()
    return rng.choice([h for h in partition_bed.hosts if h != leader])


def leader(partition_bed: PartitionBed) -> str:
    host = partition_bed.leader_host()
    assert host is not None, partition_bed.explain()
    return host


def test_sigstop_of_a_follower_node(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.freeze_node(follower(bed, rng), FREEZE, "sigstop follower node") for _ in range(RUNS)]
    check(runs, STALL_BOUND, bed)


def test_sigstop_of_the_leader_node(bed: PartitionBed) -> None:
    runs = [bed.freeze_node(leader(bed), FREEZE, "sigstop leader node") for _ in range(RUNS)]
    check(runs, STALL_BOUND, bed)


def test_a_handler_that_blocks_the_event_loop(bed: PartitionBed, rng: random.Random) -> None:
    """A wedged loop: its heartbeat thread stops after max_loop_stall, the node is fenced, its
    items are taken over while it is still blocked, and it does not act when it resumes."""
    assert BLOCK_SECONDS > MAX_LOOP_STALL + CHECK_TTL
    runs = [bed.block_loop(rng.choice(bed.hosts)) for _ in range(RUNS)]
    check(runs, MAX_LOOP_STALL + STALL_BOUND, bed)
    for run in runs:  # taken over while still blocked; nothing done by it after it resumed
        assert run.notes.get("takeover_first_s", BLOCK_SECONDS) < BLOCK_SECONDS, run.notes
        assert run.notes["victim_last_effect_s"] < MAX_LOOP_STALL, run.notes


def test_sigstop_of_a_client_agent(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.freeze_agent(rng.choice(bed.hosts), FREEZE) for _ in range(RUNS)]
    check(runs, FREEZE + STALL_BOUND, bed)


def test_isolate_a_host(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.isolate_host(follower(bed, rng), PARTITION), bed.isolate_host(leader(bed), PARTITION)]
    check(runs, PARTITION_BOUND, bed)


def test_cut_a_client_agent_from_the_servers(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.cut_agent(rng.choice(bed.hosts), PARTITION) for _ in range(RUNS)]
    check(runs, PARTITION_BOUND, bed)


def test_slow_on_revoked_with_leave_and_handover(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.slow_revoke_leave_and_handover(rng.choice(bed.hosts), REVOKE_DELAY) for _ in range(RUNS)]
    check(runs, STALL_BOUND, bed)


def test_slow_on_revoked_with_session_loss(bed: PartitionBed, rng: random.Random) -> None:
    runs = [bed.slow_revoke_session_loss(rng.choice(bed.hosts), REVOKE_DELAY, PARTITION) for _ in range(RUNS)]
    check(runs, PARTITION_BOUND, bed)


def test_slow_link(bed: PartitionBed, rng: random.Random) -> None:
    kind, args = TBF
    why = qdisc_available(kind, args)
    if why is not None:
        _NOT_RUN["slow link"] = why
        pytest.skip(f"slow link not run: {why}")
    runs = [bed.slow_link(rng.choice(bed.hosts), SLOW_LINK) for _ in range(RUNS)]
    check(runs, SLOW_LINK + STALL_BOUND, bed)


def test_isolate_the_raft_leader(bed: PartitionBed) -> None:
    runs = [bed.isolate_raft_leader(RAFT_ISOLATION) for _ in range(RUNS)]
    check(runs, RAFT_ISOLATION + STALL_BOUND, bed)


def test_the_whole_ledger(bed: PartitionBed) -> None:
    """Over the whole module, faults and the time between them: no overlap, no token regression."""
    from voltha_gevent.testing.ledger_audit import audit_index

    bed.feed()
    audit = audit_index(bed.index)
    assert audit.malformed == 0
    assert audit.runs >= ITEMS
    assert audit.violations == [], "\n".join(v.describe() for v in audit.violations[:20])
    assert audit.token_regressions == [], "\n".join(r.describe() for r in audit.token_regressions[:20])
    assert not bed.problems, "\n".join(bed.problems)
