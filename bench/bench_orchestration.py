"""Orchestration throughput through a real Consul dev agent: the leader's path vs one PUT per item.

Measures item changes per second (assignment entries written or deleted) for

* **initial**: 10,000 items to 10 members from nothing (10,000 grants);
* **leave**: one of the 10 members leaves (its ~1,000 entries are revoked and re-granted
  elsewhere: about 2,000 changes),

through the leader's real code path: ``Leader._reassign`` (consistent read of
``assignments/``, ``desired_assignment``, diff, then ``Leader._write`` of the documents that
change: fenced transactions of at most 64 ops and 256 KiB of values, led by ``check-session``
on the leader key, ``TXN_CONCURRENCY`` in flight). An item change is one item granted or
revoked, whatever the number of documents that carry it.
The leader runs on a stand-in coordinator holding a real session and the real leader lock,
with no owners, so every grant is immediate. The baseline is the seed's way: one KV PUT
(or DELETE) of a key per item, one after the other, on a sample of the same changes, measured in
the same run. Medians over several runs; the process is gevent-monkey-patched first.
"""

from __future__ import annotations

import time
from typing import Any

from bench import _common  # first: monkey-patches before requests is imported
from voltha_gevent import leader as leader_mod
from voltha_gevent.keys import Keys
from voltha_gevent.leader_state import LeaderContext, LeaderSettings
from voltha_gevent.membership import MemberRecord
from voltha_gevent.retrying import Retrying
from voltha_gevent.testing.agents import DevAgent

ITEMS = 10_000
MEMBERS = 10
FULL_RUNS = 5
QUICK_RUNS = 2
#: Changes timed one PUT at a time for the baseline (it runs at ~1,000/s: a sample suffices).
BASELINE_SAMPLE = 2_000
QUICK_BASELINE_SAMPLE = 500
PREFIX = "bench/orch"


def _stand_in(api: Any, keys: Keys, session_id: str, epoch: int) -> LeaderContext:
    """What a leader of ``epoch`` works with, outside any coordinator."""
    return LeaderContext(api=api, watch_api=api, keys=keys, retry=Retrying(), epoch=epoch,
                         session_id=session_id, settings=LeaderSettings(soak=0.0, handover_timeout=30.0),
                         give_up=lambda reason: None)


def _members(n: int) -> dict[str, MemberRecord]:
    return {f"m{i:02d}": MemberRecord(instance_id=f"m{i:02d}", internal_host="127.0.0.1",
                                      external_host="127.0.0.1", rest_port=8880, capacity=1.0,
                                      started_at=0.0) for i in range(n)}


def _leader(context: LeaderContext, items: set[str], members: dict) -> leader_mod.Leader:
    leader = leader_mod.Leader(context)
    leader.view.items = set(items)
    leader.view.members = dict(members)
    return leader


def _timed_reassign(leader: leader_mod.Leader) -> tuple[float, float, int]:
    """``(whole reassignment, time inside Leader._write, changes)``."""
    spent = [0.0]
    real_write = leader_mod.Leader._write.__get__(leader)

    def timed_write(ops: list) -> None:
        start = time.perf_counter()
        try:
            real_write(ops)
        finally:
            spent[0] += time.perf_counter() - start

    leader._write = timed_write  # type: ignore[method-assign]
    before = (leader.stats.granted, leader.stats.revoked)
    start = time.perf_counter()
    leader._reassign()
    elapsed = time.perf_counter() - start
    changes = leader.stats.granted - before[0] + leader.stats.revoked - before[1]
    return elapsed, spent[0], changes


def _baseline(api: Any, keys: Keys, members: list[str], items: list[str]) -> float:
    """Changes/s of the seed's path: one key per item, one PUT per grant, then one DELETE per revoke."""
    start = time.perf_counter()
    for i, item in enumerate(items):
        api.put(f"{keys.assignments_of(members[i % len(members)])}{item}", '{"epoch": 1}')
    for i, item in enumerate(items):
        api.delete(f"{keys.assignments_of(members[i % len(members)])}{item}")
    return 2 * len(items) / (time.perf_counter() - start)


def measure(http_addr: str, runs: int, sample: int) -> dict:
    api = _common.api_for(http_addr)
    keys = Keys(PREFIX)
    session_id = api.create_session(name="bench-leader", ttl=60, behavior="release", lock_delay=0,
                                    checks=[])
    if not api.acquire(keys.leader, "bench", session_id):
        raise RuntimeError("could not take the leader key")
    coordinator = _stand_in(api, keys, session_id, epoch=1)
    items = {f"device_group_{i:05d}" for i in range(ITEMS)}
    members = _members(MEMBERS)
    rates: dict[str, list[float]] = {k: [] for k in ("initial", "initial_write", "leave", "leave_write")}
    moved = []
    for _ in range(runs):
        api.delete(keys.assignments, recurse=True)
        leader = _leader(coordinator, items, members)
        elapsed, writing, changes = _timed_reassign(leader)
        rates["initial"].append(changes / elapsed)
        rates["initial_write"].append(changes / writing)
        leaver = sorted(members)[len(members) // 2]
        leader.view.members = {m: r for m, r in members.items() if m != leaver}
        elapsed, writing, changes = _timed_reassign(leader)
        rates["leave"].append(changes / elapsed)
        rates["leave_write"].append(changes / writing)
        moved.append(changes)
    api.delete(keys.assignments, recurse=True)
    base = [_baseline(api, keys, sorted(members), sorted(items)[:sample]) for _ in range(max(1, runs // 2))]
    api.destroy_session(session_id)
    return {**{f"{k}_changes_per_s": _common.median(v) for k, v in rates.items()},
            "leave_changes": int(_common.median(moved)), "baseline_changes_per_s": _common.median(base),
            "runs": runs, "baseline_sample": sample, "txn_concurrency": leader_mod.TXN_CONCURRENCY}


def run(quick: bool) -> dict:
    _common.quiet_logs()
    with DevAgent() as agent:
        res = measure(agent.http_addr, QUICK_RUNS if quick else FULL_RUNS,
                      QUICK_BASELINE_SAMPLE if quick else BASELINE_SAMPLE)
    base = res["baseline_changes_per_s"]
    rows = [
        ("initial: 10,000 items -> 10 members", ITEMS, res["initial_changes_per_s"],
         res["initial_write_changes_per_s"], base, res["initial_changes_per_s"] / base),
        ("leave: 1 of 10 members leaves", res["leave_changes"], res["leave_changes_per_s"],
         res["leave_write_changes_per_s"], base, res["leave_changes_per_s"] / base),
    ]
    _common.emit(_common.table(("scenario", "changes", "reassign changes/s", "of which writes: changes/s",
                                "1-PUT/item changes/s", "ratio"), rows))
    _common.emit(f"(median of {res['runs']} runs; reassign = consistent read of assignments/ + compute"
                 f" + fenced txn writes; baseline on {res['baseline_sample']} items x put+delete;"
                 f" TXN_CONCURRENCY={res['txn_concurrency']}; target >= 20,000/s and >= 15x)\n")
    res["initial_ratio"] = res["initial_changes_per_s"] / base
    res["leave_ratio"] = res["leave_changes_per_s"] / base
    return {"orchestration": res}


if __name__ == "__main__":
    run("--quick" in __import__("sys").argv)
