"""The analyzer of the scale and peers benches: convergence and movement read from ledgers alone.

Both systems under test run the same ledger work (:mod:`voltha_gevent.testing.ledger`): every
worker process appends ``start``/``tick`` lines while it owns an item and ends each run with a
``stop``, ``lapse`` or ``killed`` line. Nothing here asks the coordination service or the
workers what they believe: an item is *owned* while a run of it is open, so a figure cannot
be better than what the work itself did.

* A run is **open** from its ``start`` line until its ending line, or until its process died
  (the driver tells :meth:`Tenures.mark_dead` when it killed or reaped one: a SIGKILLed
  worker writes no ending line).
* An item is **settled** when exactly one run of it is open; it settled at its last change
  (a run opened or closed). Convergence of a phase is the latest settle time among the
  items whose open run changed in that phase, minus the phase's start (:func:`phase`).
* **Moved** items changed owner process; **interrupted** items were owned by a member that
  stayed and did not go to a member that joined, yet their run changed (an unnecessary stop).
* **Double ownership** is the ledger audit's (:func:`voltha_gevent.testing.ledger_audit.audit_index`):
  two runs of one item whose effect lines overlap in time. It must be 0.

Pure Python, no gevent, no I/O beyond reading the ledger files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from voltha_gevent.testing.ledger_audit import LedgerIndex, RunKey, audit_index

#: The workload's item names; the kazoo worker builds the same list.
ITEM_FORMAT = "device_group_{:06d}"


def item_names(count: int) -> list[str]:
    """The ``count`` items of a workload, the same for both systems."""
    return [ITEM_FORMAT.format(i) for i in range(count)]


class Tenures(LedgerIndex):
    """A :class:`LedgerIndex` that also keeps, incrementally, which runs are open per item.

    The driver polls it while a phase runs, so the questions it asks - are all items owned
    exactly once, how many does a process own, when did the last change happen - are
    answered from counters, not by walking 100,000 items on every poll.
    """

    def __init__(self, items: Iterable[str]) -> None:
        super().__init__()
        self.workload = frozenset(items)
        self.open: dict[str, set[RunKey]] = {item: set() for item in self.workload}
        self.off = len(self.workload)  # items not owned exactly once right now
        self.settled_at: dict[str, float] = {}  # item -> time of its last open/close
        self.by_pid: dict[int, set[RunKey]] = {}
        self.deaths: dict[int, float] = {}
        self.strays = 0  # lines about items outside the workload

    def add(self, t: float, instance: str, pid: int, run: int, item: str, event: str, token: int) -> None:
        key = (instance, pid, run)
        before = self.runs.get(key)
        was_open = before is not None and before.ended is None and key in self.by_pid.get(pid, ())
        super().add(t, instance, pid, run, item, event, token)
        after = self.runs.get(key)
        if after is None:
            return
        if item not in self.open:
            self.strays += 1
            return
        if before is None and after.ended is None and pid not in self.deaths:
            self._change(item, key, t, opening=True)
        elif was_open and after.ended is not None:
            self._change(item, key, t, opening=False)

    def _change(self, item: str, key: RunKey, t: float, *, opening: bool) -> None:
        runs = self.open[item]
        was_one = len(runs) == 1
        if opening:
            runs.add(key)
            self.by_pid.setdefault(key[1], set()).add(key)
        else:
            runs.discard(key)
            self.by_pid.get(key[1], set()).discard(key)
        self.off += int(was_one) - int(len(runs) == 1)
        self.settled_at[item] = t
        self.last_change = max(self.last_change, t)

    def mark_dead(self, pid: int, t: float) -> None:
        """Process ``pid`` is gone since ``t``: its open runs end there (feed its lines first)."""
        self.deaths.setdefault(pid, t)
        for key in list(self.by_pid.get(pid, ())):
            self._change(self.runs[key].item, key, t, opening=False)

    def owned_by(self, pid: int) -> int:
        """How many items process ``pid`` owns right now."""
        return len(self.by_pid.get(pid, ()))

    def snapshot(self) -> dict[str, RunKey]:
        """Item -> its open run, for every item owned exactly once."""
        return {item: next(iter(runs)) for item, runs in self.open.items() if len(runs) == 1}

    def first_start(self) -> float | None:
        starts = [run.start for run in self.runs.values() if run.effects]
        return min(starts) if starts else None

    def double_owned(self) -> tuple[int, int]:
        """(items with overlapping runs, overlaps) by the ledger audit."""
        audit = audit_index(self)
        return len({v.item for v in audit.violations}), len(audit.violations)


@dataclass
class Phase:
    """What one phase (cold start, leave, join, crash) did, from the ledger."""

    name: str
    converged: bool
    seconds: float | None  # start of the phase -> every changed item owned exactly once again
    changed: int  # items whose open run changed
    moved: int  # ... to another process
    optimum: int  # the fewest items the event had to move
    interrupted: int  # survivors' items stopped although they did not go to a joiner
    owned: int  # items owned exactly once at the end of the phase
    extra: dict = field(default_factory=dict)

    @property
    def movement(self) -> float | None:
        return self.moved / self.optimum if self.optimum else None

    def as_dict(self) -> dict:
        return {"converged": self.converged, "seconds": self.seconds, "changed": self.changed,
                "moved": self.moved, "optimum": self.optimum, "movement": self.movement,
                "interrupted": self.interrupted, "owned": self.owned, **self.extra}


def phase(name: str, tenures: Tenures, before: dict[str, RunKey], t0: float, *, converged: bool,
          leavers: Iterable[int] = (), joiners: Iterable[int] = (), optimum: int | None = None) -> Phase:
    """Compare the open runs at ``t0`` (``before``) with now (see the module docstring).

    ``leavers``/``joiners`` are the pids that left or joined in this phase; ``optimum``
    defaults to the number of items the leavers owned (the fewest that must move).
    """
    after = tenures.snapshot()
    gone, new = set(leavers), set(joiners)
    changed = [item for item in tenures.workload if after.get(item) != before.get(item)]
    moved = [i for i in changed if _pid(after.get(i)) != _pid(before.get(i))]
    interrupted = [i for i in changed if before.get(i) is not None and _pid(before[i]) not in gone
                   and _pid(after.get(i)) not in new]
    if optimum is None:
        optimum = sum(1 for key in before.values() if key[1] in gone)
    seconds = None
    if converged:
        seconds = max((tenures.settled_at.get(i, t0) for i in changed), default=t0) - t0
    return Phase(name, converged, seconds, len(changed), len(moved), optimum, len(interrupted), len(after))


def _pid(key: RunKey | None) -> int | None:
    return key[1] if key is not None else None
