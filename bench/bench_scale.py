"""Scale: voltha-gevent node processes on one Consul dev agent, 10,000 and 100,000 items.

For 10,000 items x 3 and x 10 node processes and 100,000 x 10 (``--quick``: 2,000 x 3), the
driver (:mod:`bench._driver`) runs a cold start, a graceful leave (SIGTERM) of a member that
is not the leader, its join back, and a crash (SIGKILL) of another member, and reads every
figure from the ledgers the work writes (:mod:`bench._analysis`):

* until owned - cold start: first process spawned -> every item owned exactly once; events:
  the signal -> every item whose owner changed owned exactly once again;
* moved / optimum (the victim's items; for the join, items / members) and survivors' items
  interrupted - voltha-gevent should move only what must move and stop nothing else;
* Consul requests per item (the dev agent's HTTP request counts over the phase, divided by
  the workload for a cold start and by the moved items for an event), session losses
  (``voltha_session_losses_total``), peak RSS of the leader, of the other nodes and of the
  agent; per size, double ownership from the ledger audit (must be 0), urllib3 pool-full
  warnings, leaderships, and the leader's watch bytes per change where the nodes expose it.

Settings are those of the peers comparison at T=1 (soak 1 s, check TTL 3 s, lock-delay 1 s,
worker soak 0.1 s). A size that does not converge within its limit is reported as such and
its later phases are skipped. Nothing fails on a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import _common  # first: monkey-patches before requests is imported
from bench._driver import Limits, Trial, Voltha, describe, voltha_settings

SOAK = 1.0
#: (items, nodes, limits) of each size; limits bound each phase's wait.
FULL = ((10_000, 3, Limits(cold=180, event=90, poll=0.25)),
        (10_000, 10, Limits(cold=180, event=90, poll=0.25)),
        (100_000, 10, Limits(cold=300, event=180, poll=1.0)))
QUICK = ((2_000, 3, Limits(cold=60, event=45, poll=0.2)),)
PHASES = ("cold", "leave", "join", "crash")
HEADERS = ("size", "phase", "until owned (s)", "moved/opt", "interrupted", "Consul req/item",
           "session losses", "leader RSS MiB", "worker RSS MiB", "Consul RSS MiB",
           "CPU s: nodes / leader / Consul")


def run(quick: bool, only: str | None = None) -> dict:
    """Every size of :data:`FULL` (``QUICK`` when ``quick``), or only ``only`` (``100000x10``)."""
    _common.quiet_logs()
    settings = voltha_settings(SOAK)
    results: dict[str, Any] = {"settings": settings, "sizes": {}}
    rows: list[tuple] = []
    notes: list[str] = []
    with _common.workdir("voltha-bench-scale-") as tmp:
        for items, nodes, limits in QUICK if quick else FULL:
            key = f"{items}x{nodes}"
            if only and key != only:
                continue
            trial = Trial(Voltha(f"bench/scale/{key}", settings), nodes, items, Path(tmp) / key, limits,
                          progress=lambda text: _common.emit(f"  {text}\n"))
            try:
                outcome = trial.run()
            finally:
                trial.close()
            results["sizes"][key] = outcome
            rows.extend(table_rows(outcome, limits))
            notes.append(size_note(outcome))
    _common.emit(_common.table(HEADERS, rows))
    for note in notes:
        _common.emit(note + "\n")
    _common.emit(f"({describe(settings)}; one run per size; RSS = peak VmRSS during the phase)\n")
    return {"scale": results}


def table_rows(outcome: dict[str, Any], limits: Limits) -> list[tuple]:
    size = f"{outcome['items']:,} x {outcome['members']}"
    rows = []
    for name in PHASES:
        p = outcome.get(name)
        if p is None:
            continue
        if p.get("skipped"):
            rows.append((size, name, "not run", "", "", "", "", "", "", "", ""))
            continue
        limit = limits.cold if name == "cold" else limits.event
        until = p["seconds"] if p["converged"] else f"none in {limit:.0f} s ({p['owned']:,} owned once)"
        per = outcome["items"] if name == "cold" else p["moved"]
        rows.append((size, name, until,
                     "" if name == "cold" else _ratio(p["moved"], p["optimum"]),
                     "" if name == "cold" else p["interrupted"],
                     _per(p["requests"], per), _value(p["session_losses"]),
                     _value(p["leader_rss_mib"]), _value(p["worker_rss_mib"]), _value(p["service_rss_mib"]),
                     _cpu(p)))
    return rows


def size_note(outcome: dict[str, Any]) -> str:
    o = outcome
    exits = "; ".join(o["unexpected_exits"]) or "none"
    return (f"{o['items']:,} x {o['members']}: double-owned items {o['double_owned_items']}, "
            f"pool-full warnings {o['pool_full_warnings']:,}, leaderships {o['leaderships']}, "
            f"session-lost log lines {o['session_lost_logs']}, leader watch bytes per change "
            f"{_value(o['watch_bytes_per_change'])}, unexpected exits: {exits}, "
            f"ledger tick {o['tick_s']:g} s;\n  cold start's most frequent Consul requests: "
            f"{_kinds(o['cold'].get('requests_top'))}")


def _kinds(top: dict[str, Any] | None) -> str:
    """``PUT_v1_txn 1,234 (2.1 s)``: the most frequent request kinds and the agent's time on them."""
    if not top:
        return "n/a"
    return ", ".join(f"{kind} {count:,} ({seconds:.1f} s)" for kind, (count, seconds) in top.items())


def _cpu(p: dict[str, Any]) -> str:
    """CPU seconds the phase cost the node processes, the leader among them, and the agent."""
    parts = [p.get("nodes_cpu_s"), p.get("leader_cpu_s"), p.get("service_cpu_s")]
    return " / ".join("n/a" if v is None else f"{v:.1f}" for v in parts)


def _ratio(moved: int, optimum: int) -> str:
    return f"{moved / optimum:.2f} ({moved:,}/{optimum:,})" if optimum else f"{moved:,}/0"


def _per(requests: int | None, count: int) -> Any:
    return requests / count if requests is not None and count else "n/a"


def _value(value: Any) -> Any:
    return "n/a" if value is None else value


if __name__ == "__main__":
    import sys

    sizes = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    run("--quick" in sys.argv, sizes[0] if sizes else None)
