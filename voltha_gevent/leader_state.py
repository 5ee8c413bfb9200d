"""The leader's state machine, counters and picture of the cluster (see :mod:`voltha_gevent.leader`).

Plain data, apart from the leader's logic so that module stays one concern: orchestration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from .membership import MemberRecord

if TYPE_CHECKING:
    from .config import Config
    from .consul_api import ConsulAPI
    from .keys import Keys
    from .retrying import Retrying


@dataclass(frozen=True)
class LeaderSettings:
    soak: float = 5.0
    max_soak_delay: float = 30.0
    handover_timeout: float = 30.0
    watch_wait: float = 60.0

    @classmethod
    def from_config(cls, config: Config) -> LeaderSettings:
        return cls(soak=config.soak, max_soak_delay=config.max_soak_delay,
                   handover_timeout=config.handover_timeout, watch_wait=config.watch_wait)


@dataclass(frozen=True)
class LeaderContext:
    """What one epoch's leader works with, and nothing more (the election builds it).

    ``give_up(reason)`` declares the session that holds the leader key lost: a crashed
    leader gives its locks up for a clean restart. ``members_changed_at``: when this node
    last saw the members change (a new leader's first soak counts from it).
    """

    api: ConsulAPI
    watch_api: ConsulAPI
    keys: Keys
    retry: Retrying
    epoch: int
    session_id: str
    settings: LeaderSettings
    give_up: Callable[[str], None]
    members_changed_at: float = 0.0


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
    reads_skipped: int = 0  # reassignments that trusted the watched listing (it matched the book)
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
