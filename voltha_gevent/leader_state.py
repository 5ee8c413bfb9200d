"""The leader's state machine, counters and picture of the cluster (see :mod:`voltha_gevent.leader`).

Plain data, apart from the leader's logic so that module stays one concern: orchestration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .membership import MemberRecord


class LeaderState(Enum):
    STARTING = "starting"
    SOAKING = "soaking"
    REASSIGNING = "reassigning"
    IDLE = "idle"
    HALTED = "halted"


@dataclass
class LeaderStats:
    reassignments: int = 0
    last_duration: float = 0.0
    moved: int = 0
    granted: int = 0
    revoked: int = 0
    handover_timeouts: int = 0
    owner_reads: int = 0  # rounds reading the owner locks of items in handover
    skipped_entries: int = 0
    handovers: int = 0
    handover_total_seconds: float = 0.0
    handover_seconds: list[float] = field(default_factory=list)  # the most recent 1,000

    def record_reassignment(self, duration: float, *, moved: int, revoked: int) -> None:
        self.reassignments += 1
        self.last_duration = duration
        self.moved += moved
        self.revoked += revoked

    def record_handover(self, seconds: float) -> None:
        self.handover_seconds.append(seconds)
        del self.handover_seconds[:-1000]
        self.handovers += 1
        self.handover_total_seconds += seconds


@dataclass
class View:
    """The leader's latest picture of the cluster."""

    members: dict[str, MemberRecord] = field(default_factory=dict)
    items: set[str] = field(default_factory=set)
    assigned: dict[str, set[str]] = field(default_factory=dict)  # item -> members with an entry
    owners: dict[str, str] = field(default_factory=dict)  # item -> instance id holding owners/<item>
