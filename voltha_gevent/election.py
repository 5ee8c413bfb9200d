"""Leader election: every node tries to hold ``<prefix>/leader`` with its session.

Followers watch the key with a blocking query (no polling) and try again when it is free,
after Consul's lock-delay. The holder's ``LockIndex`` is the **leader epoch**: it grows with
every new holding, so a stale leader's work can be told apart from the current one's.

Gaining the lock builds the leader role with ``make_leader(epoch)`` and starts it; losing it
(key changed or deleted, session lost, shutdown) halts that leader before anything else happens.
``leader_id`` and ``epoch`` always reflect the latest state seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent.event
import structlog

from .entries import KVEntry
from .lock import LockSession, SessionLock

log = structlog.get_logger(__name__)


class Election:
    """Campaign for ``key`` (``<prefix>/leader``) with one session; ``make_leader(epoch)``
    builds the leader role when we win."""

    def __init__(
        self,
        session: LockSession,
        key: str,
        instance_id: str,
        *,
        make_leader: Callable[[int], Any] | None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.make_leader = make_leader
        self.on_change = on_change
        self.leader_id: str | None = None
        self.epoch = 0
        self.leader: Any = None
        self.is_leader = False
        self.changed = gevent.event.Event()
        self.lock = SessionLock(session, key, instance_id, name="election", on_acquired=self._won,
                                on_lost=self.halt_leader, on_holder=self._holder)

    def start(self) -> None:
        self.lock.start()

    def stop(self, *, release: bool = False) -> None:
        """Halt the leader first, then stop campaigning (releasing the key if asked: a graceful
        shutdown, so leadership ends on purpose and is logged at info)."""
        self.halt_leader(reason="shutdown" if release else "session-lost")
        self.lock.stop(release=release)
        self.leader_id = None
        self._notify()

    def _won(self, entry: KVEntry) -> None:
        self.is_leader = True
        self.leader_id = self.instance_id
        self.epoch = entry.lock_index
        log.info("became-leader", instance_id=self.instance_id, epoch=self.epoch)
        if self.make_leader is not None:
            self.leader = self.make_leader(self.epoch)
            self.leader.start()
        self._notify()

    def halt_leader(self, reason: str = "lock-lost") -> None:
        """Stop acting as leader at once; idempotent. ``reason``: ``lock-lost`` (the key was
        taken or deleted), ``session-lost`` or ``shutdown``; only a shutdown is expected, the
        others are warnings an operator should see."""
        leader, self.leader = self.leader, None
        if self.is_leader:
            self.is_leader = False
            emit = log.info if reason == "shutdown" else log.warning
            emit("lost-leadership", instance_id=self.instance_id, epoch=self.epoch, reason=reason)
        if leader is not None:
            leader.stop()
        self._notify()

    def _holder(self, entry: KVEntry | None) -> None:
        leader_id = entry.text() if entry is not None else None
        epoch = entry.lock_index if entry is not None else self.epoch
        if (leader_id, epoch) != (self.leader_id, self.epoch):
            self.leader_id, self.epoch = leader_id, epoch
            log.info("leader-changed", leader=leader_id, epoch=epoch)
            self._notify()

    def _notify(self) -> None:
        self.changed.set()
        if self.on_change is not None:
            self.on_change()
