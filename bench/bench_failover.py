"""Failover latency: 3 node processes on a real dev agent, one of them stopped or killed.

For each scenario - SIGTERM of a member, SIGTERM of the leader, SIGKILL of a member, SIGKILL
of the leader - the clock runs from the signal until every workload item is owned again by
a survivor, read from Consul's ``owners/`` locks (:func:`owners_in_consul`, consistent reads
every ``POLL`` seconds). The victim is then restarted and the cluster left to converge
before the next run. Each figure is printed next to the floor its configuration sets:

* SIGTERM: the leader's soak, then the new owner's worker soak (the leaver released
  everything itself, so nothing waits on Consul);
* SIGKILL of a member: the check TTL (the session dies about one check TTL after the last
  pass, and passes come every third of it), then the longer of soak and lock-delay (the
  dead owner's locks), then the worker soak;
* SIGKILL of the leader: the same - the next leader waits out the leader key's lock-delay,
  but its first soak counts from the departure it saw, so the longer of the two counts. A
  SIGTERMed leader releases its key, so no lock-delay applies.

Nodes run with :data:`voltha_gevent.testing.processes.TEST_SETTINGS` (soak 0.5 s, check TTL
2 s, lock-delay 2 s). The full run adds the SIGKILL cases at the **default settings** (soak
5 s, check TTL 3 s, lock-delay 4 s), against the promise "recovery after a crash within
check TTL + lock-delay + soak + 1 s". Nothing fails on a number.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common  # first: monkey-patches before requests is imported
from voltha_gevent.testing.agents import DevAgent
from voltha_gevent.testing.auditor import owners_in_consul
from voltha_gevent.testing.processes import TEST_SETTINGS, NodeProcess
from voltha_gevent.txn import TxnOp, chunked

PREFIX = "bench/failover"
NAMES = ("n1", "n2", "n3")
FULL_ITEMS, QUICK_ITEMS = 1_000, 200
FULL_RUNS, QUICK_RUNS = 3, 1
POLL = 0.05
#: Upper bound of one wait (convergence or recovery); a run past it is reported as such.
WAIT_LIMIT = 60.0
SCENARIOS = (("SIGTERM", "member"), ("SIGTERM", "leader"), ("SIGKILL", "member"), ("SIGKILL", "leader"))
#: The library's defaults for the timing settings (TEST_SETTINGS shortens them).
DEFAULTS = {"VOLTHA_SOAK": "5", "VOLTHA_MAX_SOAK_DELAY": "30", "VOLTHA_WORKER_SOAK": "0.5",
            "VOLTHA_CHECK_TTL": "3", "VOLTHA_LOCK_DELAY": "4", "VOLTHA_STOP_TIMEOUT": "4"}


def crash_promise(settings: dict[str, str]) -> float:
    """The recovery promise of docs/reliability.md after a crash: check TTL + lock-delay + soak + 1 s."""
    return sum(float(settings[f"VOLTHA_{n}"]) for n in ("CHECK_TTL", "LOCK_DELAY", "SOAK")) + 1.0


def floor(sig: str, role: str, settings: dict[str, str] = TEST_SETTINGS) -> float:
    """The delay the configuration alone imposes on a failover (see the module docstring)."""
    def setting(name: str) -> float:
        return float(settings[f"VOLTHA_{name}"])

    soak, worker_soak = setting("SOAK"), setting("WORKER_SOAK")
    check_ttl, lock_delay = setting("CHECK_TTL"), setting("LOCK_DELAY")
    if sig == "SIGTERM":
        return soak + worker_soak
    return check_ttl + max(soak, lock_delay) + worker_soak


class Bench:
    def __init__(self, agent: DevAgent, workdir: Path, items: int,
                 settings: dict[str, str] | None = None) -> None:
        self.api = _common.api_for(agent.http_addr)
        self.owners = f"{PREFIX}/owners/"
        self.items = {f"device_group_{i:05d}" for i in range(items)}
        self.nodes = {n: NodeProcess(n, agent.http_addr, workdir, prefix=PREFIX, settings=settings)
                      for n in NAMES}

    def seed(self) -> None:
        ops = [TxnOp.set(f"{PREFIX}/workload/{item}", "") for item in sorted(self.items)]
        for batch in chunked(ops, []):
            self.api.txn(batch)

    def owned_by(self, alive: set[str]) -> bool:
        owners = owners_in_consul(self.api, self.owners)
        return set(owners) == self.items and set(owners.values()) <= alive

    def wait(self, alive: set[str]) -> float | None:
        """Seconds until every item is owned by one of ``alive``; None past WAIT_LIMIT."""
        start = time.monotonic()
        while time.monotonic() - start < WAIT_LIMIT:
            if self.owned_by(alive):
                return time.monotonic() - start
            time.sleep(POLL)
        return None

    def leader(self) -> str | None:
        for name, node in self.nodes.items():
            status = node.status()
            if status and status.get("is_leader"):
                return name
        return None

    def settle(self) -> str:
        """Every node up and healthy, every item owned; the leader's name."""
        for node in self.nodes.values():
            node.start()
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline:
            statuses = [n.status() for n in self.nodes.values()]
            leader = self.leader()
            if leader and all(s and s.get("healthy") for s in statuses) and self.owned_by(set(NAMES)):
                owned = [len(s["owned"]) for s in statuses if s]
                if min(owned) > 0:  # the restarted node got its share back
                    return leader
            time.sleep(0.2)
        raise RuntimeError("cluster did not settle: " + self.nodes[NAMES[0]].log_tail(10))

    def one(self, sig: str, role: str) -> float | None:
        leader = self.settle()
        victim = leader if role == "leader" else next(n for n in NAMES if n != leader)
        node = self.nodes[victim]
        survivors = set(NAMES) - {victim}
        start = time.monotonic()
        if sig == "SIGKILL":
            node.kill()
        else:
            node.signal(signal.SIGTERM)
        elapsed = self.wait(survivors)
        latency = None if elapsed is None else time.monotonic() - start
        node.stop(grace=10.0)
        return latency

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop(grace=10.0)


def run(quick: bool) -> dict:
    _common.quiet_logs()
    runs, items = (QUICK_RUNS, QUICK_ITEMS) if quick else (FULL_RUNS, FULL_ITEMS)
    results: dict[str, Any] = {"items": items, "runs": runs, "settings": {
        k: TEST_SETTINGS[k] for k in ("VOLTHA_SOAK", "VOLTHA_WORKER_SOAK", "VOLTHA_CHECK_TTL",
                                      "VOLTHA_LOCK_DELAY", "VOLTHA_SESSION_TTL")}}
    rows = []
    with DevAgent() as agent, tempfile.TemporaryDirectory(prefix="voltha-bench-failover-") as tmp:
        bench = Bench(agent, Path(tmp), items)
        try:
            bench.seed()
            for sig, role in SCENARIOS:
                samples = [bench.one(sig, role) for _ in range(runs)]
                done = [s for s in samples if s is not None]
                key = f"{sig.lower()}_{role}"
                results[key] = {"median_s": _common.median(done) if done else None, "samples": samples,
                                "floor_s": floor(sig, role)}
                med = results[key]["median_s"]
                rows.append((f"{sig} {role}", med if med is not None else "n/a", floor(sig, role),
                             (med / floor(sig, role)) if med else "n/a", f"{len(done)}/{runs}"))
        finally:
            bench.stop()
        if not quick:
            results["defaults"] = defaults_run(agent, Path(tmp), items, runs, rows)
    _common.emit(_common.table(("scenario", "until all owned (s)", "config floor (s)", "x floor", "runs ok"),
                               rows))
    _common.emit(f"({items} items, 3 node processes; soak {TEST_SETTINGS['VOLTHA_SOAK']} s, worker soak"
                 f" {TEST_SETTINGS['VOLTHA_WORKER_SOAK']} s, check TTL {TEST_SETTINGS['VOLTHA_CHECK_TTL']} s,"
                 f" lock-delay {TEST_SETTINGS['VOLTHA_LOCK_DELAY']} s; median of {runs})\n")
    return {"failover": results}


def defaults_run(agent: DevAgent, workdir: Path, items: int, runs: int, rows: list) -> dict[str, Any]:
    """SIGKILL of a member and of the leader at the default settings, against the promise."""
    settings = {**TEST_SETTINGS, **DEFAULTS}
    bench = Bench(agent, workdir / "defaults", items, settings)
    out: dict[str, Any] = {"promise_s": crash_promise(settings)}
    try:
        for role in ("member", "leader"):
            samples = [bench.one("SIGKILL", role) for _ in range(runs)]
            done = [s for s in samples if s is not None]
            med = _common.median(done) if done else None
            out[f"sigkill_{role}"] = {"median_s": med, "samples": samples,
                                      "floor_s": floor("SIGKILL", role, settings)}
            rows.append((f"SIGKILL {role}, defaults (promise {out['promise_s']:.0f} s)",
                         med if med is not None else "n/a", floor("SIGKILL", role, settings),
                         (med / floor("SIGKILL", role, settings)) if med else "n/a", f"{len(done)}/{runs}"))
    finally:
        bench.stop()
    return out


if __name__ == "__main__":
    run("--quick" in __import__("sys").argv)
