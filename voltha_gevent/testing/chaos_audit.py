"""What a chaos run found: the replay audit of the nodes' reports, and the summary table.

:func:`audit_timeline` replays the report files (start/stop of work) with the SIGKILL,
SIGSTOP and SIGCONT times the bed recorded and checks **one running owner**: no item is
started by one instance while another runs it. A frozen process runs nothing; when it
resumes, what it still believed it ran is *stale* until its report shows the stop (the
**resume fence latency**, bounded by :data:`RESUME_FENCE_BOUND`), and it must start nothing
before it has fenced. Pure: reads what it is given, no processes and no Consul.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .auditor import OwnershipLedger

#: A resumed node must have fenced its stale work within this many seconds of SIGCONT.
RESUME_FENCE_BOUND = 1.0


@dataclass
class Fault:
    """One injected fault and the re-convergence times measured after it."""

    scenario: str
    kind: str
    target: str
    at: float
    converge: list[float] = field(default_factory=list)


@dataclass
class AuditResult:
    """What the replay of the report files found."""

    violations: list[tuple[float, str]] = field(default_factory=list)  # (time, what)
    resume_fence: list[float] = field(default_factory=list)
    starts: int = 0
    stops: int = 0


def audit_timeline(
    events: Iterable[Mapping[str, Any]],
    kills: Iterable[tuple[float, str]] = (),
    pauses: Iterable[tuple[float, float | None, str]] = (),
    *,
    fence_bound: float = RESUME_FENCE_BOUND,
) -> AuditResult:
    """Replay report events with kills and ``(stop, cont, instance)`` pauses; see the module doc."""
    timeline: list[tuple[float, int, str, str, str]] = []
    for e in events:
        timeline.append((float(e["t"]), 2, str(e["event"]), str(e["instance"]), str(e["item"])))
    for t, who in kills:
        timeline.append((t, 0, "kill", who, ""))
    for t_stop, t_cont, who in pauses:
        timeline.append((t_stop, 0, "pause", who, ""))
        if t_cont is not None:
            timeline.append((t_cont, 1, "resume", who, ""))
    timeline.sort(key=lambda x: (x[0], x[1]))
    ledger = OwnershipLedger()
    result = AuditResult()
    frozen: dict[str, set[str]] = {}
    stale: dict[str, tuple[float, set[str]]] = {}
    for t, _, what, who, item in timeline:
        if what == "kill":
            ledger.crash(who)
            frozen.pop(who, None)
            stale.pop(who, None)
        elif what == "pause":
            frozen[who] = {i for i, w in ledger.running.items() if w == who}
            ledger.crash(who)  # a frozen process runs nothing
        elif what == "resume":
            stale[who] = (t, frozen.pop(who, set()))
        elif what == "start":
            _audit_start(result, ledger, stale, t, who, item)
        elif what == "stop":
            result.stops += 1
            ledger.stop(item, who)
            _audit_fence(result, stale, t, who, item, fence_bound)
    result.violations.extend(
        (v.at, f"{v.item}: started by {v.starting} at {v.at:.3f} while {v.running} ran it")
        for v in ledger.violations
    )
    for who, (since, items) in stale.items():
        if items:
            result.violations.append((since, f"{who} never fenced {len(items)} stale items after SIGCONT"))
    return result


def _audit_start(result: AuditResult, ledger: OwnershipLedger, stale: dict[str, tuple[float, set[str]]],
                 t: float, who: str, item: str) -> None:
    result.starts += 1
    if who in stale and stale[who][1]:
        result.violations.append((t, f"{who} started {item} at {t:.3f} before fencing its stale work"))
    ledger.start(item, who, t)


def _audit_fence(result: AuditResult, stale: dict[str, tuple[float, set[str]]], t: float, who: str,
                 item: str, fence_bound: float) -> None:
    if who not in stale or item not in stale[who][1]:
        return
    since, items = stale[who]
    items.discard(item)
    latency = t - since
    result.resume_fence.append(latency)
    if latency > fence_bound:
        what = f"{who} fenced {item} {latency:.3f}s after SIGCONT (bound {fence_bound})"
        result.violations.append((t, what))



def scenario_at(faults: list[Fault], t: float) -> str:
    """The scenario whose fault came last before ``t`` ("set-up" before any)."""
    current = "set-up"
    for fault in sorted(faults, key=lambda f: f.at):
        if fault.at <= t:
            current = fault.scenario
    return current


def summary_rows(
    faults: list[Fault], audit: AuditResult, violations: list[tuple[float, str]]
) -> list[list[str]]:
    """Table rows: scenario, faults injected, re-convergence median and max, violations."""
    by_scenario: dict[str, list[Fault]] = {}
    for fault in faults:
        by_scenario.setdefault(fault.scenario, []).append(fault)
    counts: dict[str, int] = {}
    for t, _ in [*audit.violations, *violations]:
        scenario = scenario_at(faults, t)
        counts[scenario] = counts.get(scenario, 0) + 1
    rows = []
    for scenario, group in by_scenario.items():
        times = [t for f in group for t in f.converge]
        kinds = sorted({f.kind for f in group})
        rows.append([scenario, f"{len(group)} ({', '.join(kinds)})",
                     f"{statistics.median(times):.1f}" if times else "-",
                     f"{max(times):.1f}" if times else "-", str(counts.get(scenario, 0))])
    fence = f"{max(audit.resume_fence) * 1000:.0f} ms" if audit.resume_fence else "-"
    rows.append(["total", f"{len(faults)} faults; {audit.starts} starts, {audit.stops} stops",
                 f"resume fence max {fence}", "-", str(len(audit.violations) + len(violations))])
    return rows


def format_table(rows: list[list[str]]) -> str:
    header = ["scenario", "faults", "re-converge median s", "max s", "violations"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([line.format(*header), line.format(*("-" * w for w in widths)),
                      *(line.format(*r) for r in rows)])


__all__ = ["RESUME_FENCE_BOUND", "AuditResult", "Fault", "audit_timeline", "format_table", "scenario_at",
           "summary_rows"]
