"""A fault's record in the partition bed, and the table of all runs.

Pure data and formatting: what :meth:`~voltha_gevent.testing.netbed.PartitionBed.run_fault`
measured from the ledger (recovery, overlaps, token regressions, serf/session notes).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .ledger_audit import Overlap, TokenRegression


@dataclass
class FaultRun:
    """One injection of one fault, and what the ledger says about it."""

    fault: str
    target: str
    t0: float
    healed: float = 0.0
    converged: float | None = None
    recovery: float | None = None
    violations: list[Overlap] = field(default_factory=list)
    regressions: list[TokenRegression] = field(default_factory=list)
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def settle_seconds(self) -> float | None:
        return None if self.converged is None else self.converged - self.t0

    @property
    def effects_inside(self) -> int:
        return sum(v.effects_inside for v in self.violations)


def _median_max(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return f"{statistics.median(values):.1f}", f"{max(values):.1f}"


def fault_table(runs: list[FaultRun], not_run: dict[str, str] | None = None) -> list[list[str]]:
    """Rows per fault: runs, recovery median/max, settle max, violations, effects inside, notes."""
    by_fault: dict[str, list[FaultRun]] = {}
    for run in runs:
        by_fault.setdefault(run.fault, []).append(run)
    rows = []
    for fault, group in by_fault.items():
        recovery = [r.recovery for r in group if r.recovery is not None]
        med, top = _median_max(recovery)
        if len(recovery) < len(group):
            top += f" ({len(group) - len(recovery)} never)"
        settle = [r.settle_seconds for r in group if r.settle_seconds is not None]
        notes = []
        for key in ("serf_critical_s", "session_gone_s", "victim_last_effect_s", "takeover_first_s"):
            values = [r.notes[key] for r in group if key in r.notes]
            if values:
                notes.append(f"{key[:-2]} {'/'.join(f'{max(v, 0.0):.1f}' for v in values)}")
        rows.append([fault, str(len(group)), med, top, _median_max(settle)[1],
                     str(sum(len(r.violations) for r in group)), str(sum(r.effects_inside for r in group)),
                     "; ".join(notes) or "-"])
    for fault, why in (not_run or {}).items():
        rows.append([fault, "0", "-", "-", "-", "-", "-", f"not run: {why}"])
    return rows


TABLE_HEADER = ["fault", "runs", "recovery s median", "max", "settled s max", "violations",
                "effects inside", "notes (s after the fault)"]


__all__ = ["TABLE_HEADER", "FaultRun", "fault_table"]
