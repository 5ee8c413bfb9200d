"""The ledger audit: two owners acting on one item at once, found from ledger lines alone.

It reads only the lines that :class:`voltha_gevent.testing.ledger.LedgerWork` appended (see
that module for the format) - never a report file, a log or Consul - so a library bug cannot
hide itself. Pure Python, no gevent: it runs in the test process.

* A **run** is one owner's tenure of one item: the lines of one ``(instance, pid, run)``. Its
  interval is ``[start, last effect]`` (effects: ``start``, ``tick``, ``stop``; ``lapse`` and
  ``killed`` only say the work saw it must not act, and do not extend the interval).
* A **violation** is any overlap of two runs' intervals for the same item: both acted as owner
  within it, so every effect of one inside the other's interval is a double run. It is
  reported with both owners, the overlap and how many effect lines fell inside it.
* **Tokens**: per item, runs ordered by start must carry strictly growing fencing tokens
  whenever the owner changes (not decreasing within one owner); checked when both are non-zero.
* **Recovery** after a fault at ``t0``: :func:`recovery_seconds` - how long until every item
  was acted on again without a gap longer than ``gap``.

:class:`LedgerIndex` reads files incrementally (a running bed feeds it again and again);
:func:`audit_ledger` is the one-shot form.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: The fields of a ledger line, in order, separated by single spaces.
FIELDS = ("t", "instance", "pid", "run", "item", "event", "token")
#: Lines that are evidence that the work acted as owner.
EFFECTS = frozenset({"start", "tick", "stop"})
#: Lines that end a run without being an effect.
ENDINGS = frozenset({"stop", "lapse", "killed"})
#: Default longest pause between two effects of an item that still counts as "running".
DEFAULT_GAP = 1.0

RunKey = tuple[str, int, int]  # (instance, pid, run)


@dataclass
class OwnerRun:
    """One owner's tenure of one item: its effect times and how it ended."""

    item: str
    instance: str
    pid: int
    run: int
    token: int
    effects: list[float] = field(default_factory=list)
    ended: str | None = None  # stop, lapse, killed; None while running (or when it died silently)
    ended_at: float | None = None

    @property
    def key(self) -> RunKey:
        return (self.instance, self.pid, self.run)

    @property
    def owner(self) -> tuple[str, int]:
        return (self.instance, self.pid)

    @property
    def start(self) -> float:
        return self.effects[0]

    @property
    def last(self) -> float:
        return self.effects[-1]

    def effects_within(self, lo: float, hi: float) -> int:
        return bisect.bisect_right(self.effects, hi) - bisect.bisect_left(self.effects, lo)

    def label(self) -> str:
        return f"{self.instance}(pid {self.pid}, run {self.run})"


@dataclass(frozen=True)
class Overlap:
    """Two runs of one item that both acted as owner during ``[start, end]``."""

    item: str
    first: str
    second: str
    start: float
    end: float
    first_inside: int
    second_inside: int

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def effects_inside(self) -> int:
        """Effects of both owners within the overlap (each is inside the other's interval)."""
        return self.first_inside + self.second_inside

    def describe(self) -> str:
        return (f"{self.item}: {self.first} and {self.second} both acted for {self.seconds:.3f}s "
                f"({self.start:.3f}-{self.end:.3f}); effects inside the overlap: "
                f"{self.first_inside} + {self.second_inside}")


@dataclass(frozen=True)
class TokenRegression:
    """A later owner of an item whose fencing token did not grow."""

    item: str
    earlier: str
    later: str
    earlier_token: int
    later_token: int
    at: float

    def describe(self) -> str:
        return (f"{self.item}: token {self.later_token} of {self.later} at {self.at:.3f} does not grow "
                f"past {self.earlier_token} of {self.earlier}")


@dataclass
class LedgerAudit:
    """What the audit found."""

    runs: int = 0
    effects: int = 0
    lapses: int = 0
    kills: int = 0
    malformed: int = 0
    violations: list[Overlap] = field(default_factory=list)
    token_regressions: list[TokenRegression] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.token_regressions

    def violations_between(self, lo: float, hi: float) -> list[Overlap]:
        """Overlaps that began within ``[lo, hi]``."""
        return [v for v in self.violations if lo <= v.start <= hi]

    def regressions_between(self, lo: float, hi: float) -> list[TokenRegression]:
        return [r for r in self.token_regressions if lo <= r.at <= hi]


class LedgerIndex:
    """Every run found in a set of ledger files, fed incrementally."""

    def __init__(self) -> None:
        self.runs: dict[RunKey, OwnerRun] = {}
        self.by_item: dict[str, list[OwnerRun]] = {}
        self.malformed = 0
        self.lapses = 0
        self.kills = 0
        self.effects = 0
        self.last_change = float("-inf")  # time of the latest start or ending line
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    # Reading

    def feed(self, paths: Iterable[str | Path]) -> None:
        """Read what was appended to each file since the last call (whole lines only)."""
        for path in map(Path, paths):
            self._feed_file(path)

    def _feed_file(self, path: Path) -> None:
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offsets[path] = offset + len(data)
        data = self._partial.pop(path, b"") + data
        complete, _, rest = data.rpartition(b"\n")
        if rest:
            self._partial[path] = rest
        if complete:
            for line in complete.decode("utf-8", "replace").split("\n"):
                self.add_line(line)

    def add_line(self, line: str) -> None:
        """Add one ledger line (see :data:`FIELDS`); malformed lines are counted, not raised."""
        parts = line.split(" ")
        if len(parts) != len(FIELDS):
            self.malformed += 1
            return
        try:
            t, pid, run, token = float(parts[0]), int(parts[2]), int(parts[3]), int(parts[6])
        except ValueError:
            self.malformed += 1
            return
        self.add(t, parts[1], pid, run, parts[4], parts[5], token)

    def add(self, t: float, instance: str, pid: int, run: int, item: str, event: str, token: int) -> None:
        key = (instance, pid, run)
        owner_run = self.runs.get(key)
        if event in EFFECTS:
            if owner_run is None:
                owner_run = OwnerRun(item, instance, pid, run, token)
                self.runs[key] = owner_run
                self.by_item.setdefault(item, []).append(owner_run)
                self.last_change = max(self.last_change, t)
            owner_run.effects.append(t)
            self.effects += 1
        elif event == "lapse":
            self.lapses += 1
        elif event == "killed":
            self.kills += 1
        else:
            self.malformed += 1
            return
        if event in ENDINGS and owner_run is not None and owner_run.ended is None:
            owner_run.ended, owner_run.ended_at = event, t
            self.last_change = max(self.last_change, t)

    # Questions for a running bed

    def live_runs(self, now: float, window: float) -> dict[str, list[OwnerRun]]:
        """Per item, the runs that have not ended and acted within ``window`` before ``now``."""
        live: dict[str, list[OwnerRun]] = {}
        for item, runs in self.by_item.items():
            live[item] = [r for r in runs if r.ended is None and r.last >= now - window]
        return live

    def paths(self) -> list[Path]:
        return sorted(self._offsets)


# The audit


def audit_index(index: LedgerIndex) -> LedgerAudit:
    """Overlaps and token regressions among every run of ``index``."""
    audit = LedgerAudit(runs=len(index.runs), effects=index.effects, lapses=index.lapses,
                        kills=index.kills, malformed=index.malformed)
    for item, runs in index.by_item.items():
        ordered = sorted(runs, key=lambda r: r.start)
        audit.violations.extend(_overlaps(item, ordered))
        audit.token_regressions.extend(_token_regressions(item, ordered))
    audit.violations.sort(key=lambda v: v.start)
    audit.token_regressions.sort(key=lambda r: r.at)
    return audit


def audit_ledger(paths: Iterable[str | Path]) -> LedgerAudit:
    """Read the ledger files and audit them (see the module docstring)."""
    index = LedgerIndex()
    index.feed(paths)
    return audit_index(index)


def _overlaps(item: str, ordered: list[OwnerRun]) -> list[Overlap]:
    """Pairs of runs (ordered by start) whose closed intervals share at least one instant."""
    found = []
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            if second.start > first.last:
                continue
            lo, hi = second.start, min(first.last, second.last)
            found.append(Overlap(item, first.label(), second.label(), lo, hi,
                                 first.effects_within(lo, hi), second.effects_within(lo, hi)))
    return found


def _token_regressions(item: str, ordered: list[OwnerRun]) -> list[TokenRegression]:
    found = []
    for earlier, later in zip(ordered, ordered[1:], strict=False):
        if not earlier.token or not later.token:
            continue
        grows = later.token > earlier.token if later.owner != earlier.owner else later.token >= earlier.token
        if not grows:
            found.append(TokenRegression(item, earlier.label(), later.label(), earlier.token,
                                         later.token, later.start))
    return found


# Recovery


def recovery_seconds(index: LedgerIndex, t0: float, t1: float, *, items: Iterable[str] | None = None,
                     gap: float = DEFAULT_GAP) -> float | None:
    """Seconds from ``t0`` until every item was acted on again with no pause over ``gap``.

    Per item, the effect times of all its runs in ``[t0 - gap, t1]`` are merged; the item
    recovered at the end of its last pause longer than ``gap`` that ends after ``t0`` (at ``t0``
    when it never paused). ``None`` when some item has no effect within ``gap`` before ``t1``
    (it is not running at the end of the window).
    """
    names = list(items) if items is not None else list(index.by_item)
    worst = t0
    for item in names:
        recovered = _item_recovered(index.by_item.get(item, []), t0, t1, gap)
        if recovered is None:
            return None
        worst = max(worst, recovered)
    return worst - t0


def _item_recovered(runs: list[OwnerRun], t0: float, t1: float, gap: float) -> float | None:
    times: list[float] = []
    before: float | None = None
    for run in runs:
        i = bisect.bisect_left(run.effects, t0)
        if i:
            candidate = run.effects[i - 1]
            before = candidate if before is None else max(before, candidate)
        times.extend(t for t in run.effects[i:] if t <= t1)
    times.sort()
    if not times or t1 - times[-1] > gap:
        return None
    recovered = t0
    previous = before if before is not None else t0
    for t in times:
        if t - previous > gap:
            recovered = t
        previous = t
    return recovered


__all__ = [
    "DEFAULT_GAP",
    "EFFECTS",
    "FIELDS",
    "LedgerAudit",
    "LedgerIndex",
    "OwnerRun",
    "Overlap",
    "TokenRegression",
    "audit_index",
    "audit_ledger",
    "recovery_seconds",
]
