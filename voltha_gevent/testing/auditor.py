"""Ownership auditing: prove that no item ever has two running owners.

Two sources, used together by the tests (and available to users):

* the workers' own reports of what they run - :class:`OwnershipLedger` in one process
  (``RecordingHandler`` feeds it), or JSON-lines report files written by node processes
  (``voltha-gevent run --report-file``), replayed by :func:`audit_reports`;
* Consul's ``owners/`` locks, read by :func:`owners_in_consul`, and the leader's
  published documents in a :class:`~voltha_gevent.testing.fake_consul.FakeConsul`, read by
  :func:`published_in_fake`.

A violation is an item whose work was started by one instance while another instance's
work for it had started and not yet stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent.lock

from ..assignment_docs import parse_documents
from ..entries import KVEntry
from ..keys import Keys, held_owners


@dataclass(frozen=True)
class Violation:
    item: str
    running: str
    starting: str
    at: float


@dataclass
class OwnershipLedger:
    """Who runs what right now, and every double-ownership ever seen."""

    running: dict[str, str] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    starts: int = 0
    stops: int = 0
    _lock: gevent.lock.RLock = field(default_factory=gevent.lock.RLock)

    def start(self, item: str, instance: str, at: float = 0.0) -> None:
        with self._lock:
            holder = self.running.get(item)
            if holder is not None and holder != instance:
                self.violations.append(Violation(item, holder, instance, at))
            self.running[item] = instance
            self.starts += 1

    def stop(self, item: str, instance: str) -> None:
        with self._lock:
            if self.running.get(item) == instance:
                del self.running[item]
            self.stops += 1

    def crash(self, instance: str) -> None:
        """Everything ``instance`` ran stopped with it (its process died)."""
        with self._lock:
            for item in [i for i, who in self.running.items() if who == instance]:
                del self.running[item]

    def owners(self) -> dict[str, str]:
        return dict(self.running)

    def by_instance(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for item, who in self.running.items():
            out.setdefault(who, set()).add(item)
        return out


class RecordingHandler:
    """An :class:`~voltha_gevent.worker.AssignmentHandler` that reports to a ledger."""

    def __init__(self, ledger: OwnershipLedger, instance: str, *, fail_times: int = 0,
                 revoke_delay: float = 0.0) -> None:
        self.ledger = ledger
        self.instance = instance
        self.fail_times = fail_times
        self.revoke_delay = revoke_delay
        self.values: dict[str, bytes | None] = {}

    def on_assigned(self, item: str, value: bytes | None) -> None:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError(f"injected failure starting {item}")
        self.values[item] = value
        self.ledger.start(item, self.instance)

    def on_revoked(self, item: str) -> None:
        if self.revoke_delay:
            gevent.sleep(self.revoke_delay)
        self.ledger.stop(item, self.instance)


def read_reports(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every event of the given report files, ordered by time; bad lines are skipped."""
    events = []
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and {"t", "instance", "event", "item"} <= event.keys():
                events.append(event)
    events.sort(key=lambda e: e["t"])
    return events


def audit_reports(
    events: Iterable[Mapping[str, Any]], crashes: Iterable[tuple[float, str]] = ()
) -> OwnershipLedger:
    """Replay report events (and ``(time, instance)`` crashes) into a ledger."""
    timeline: list[tuple[float, int, Mapping[str, Any] | str]] = [(e["t"], 1, e) for e in events]
    timeline.extend((t, 0, who) for t, who in crashes)
    timeline.sort(key=lambda x: (x[0], x[1]))
    ledger = OwnershipLedger()
    for t, kind, what in timeline:
        if kind == 0:
            ledger.crash(str(what))
            continue
        assert isinstance(what, Mapping)
        if what["event"] == "start":
            ledger.start(what["item"], what["instance"], t)
        elif what["event"] == "stop":
            ledger.stop(what["item"], what["instance"])
    return ledger


def owners_in_consul(api: Any, owners_prefix: str) -> dict[str, str]:
    """item -> instance id for every ``owners/<item>`` lock currently held (a ConsulAPI)."""
    _, entries = api.list(owners_prefix, consistent=True)
    return held_owners(owners_prefix, entries)


def published_in_fake(fake: Any, prefix: str = "service/voltha") -> dict[str, set[str]]:
    """item -> members whose ``assignments/`` documents list it, straight from a fake's store."""
    folder = Keys(prefix).assignments
    entries = [KVEntry(key, value, 0, 0) for key, (value, _) in fake.dump(folder).items()]
    return parse_documents(folder, entries).assigned


def published_once(fake: Any, prefix: str = "service/voltha") -> dict[str, str]:
    """item -> member as published (an item published to two members raises AssertionError)."""
    assigned = published_in_fake(fake, prefix)
    doubles = {item: sorted(ms) for item, ms in assigned.items() if len(ms) != 1}
    assert not doubles, f"items published to more than one member: {doubles}"
    return {item: next(iter(ms)) for item, ms in assigned.items()}
