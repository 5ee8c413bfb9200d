"""Revoking an item: one path, one owner, and never a release while its work may still run.

Every way an item stops on this node - its assignment went away, the node stops, the
session was lost - goes through :meth:`Revocations.revoke`. There is at most one
revocation per item: a later caller joins the running one (and a session that ended in the
meantime only cancels its release: the lock went with the session). Each revocation runs in
a greenlet of its own, owned by :class:`Revocations`, so the fence never kills the greenlet
running it, whoever asked for it (an acquirer that met "invalid session" included).

States (:class:`RevocationState`)::

    STOPPING   the Ownership is revoked (valid() is False from here on); a pending acquire
               is cancelled; on_revoked runs, bounded by the stop budget (stop_timeout from
               the start, or from the lease deadline when the session was lost); then the
               revoke barriers (requests being served for the item) and the work greenlet
               are waited for with what is left of the budget
    KILLING    the work still runs when the budget is spent: it is killed, bounded by
               KILL_TIMEOUT
    RELEASING  the work is confirmed dead: the owner lock is released, retried until it
               succeeds or the session ends
    DONE       released, or nothing to release (the lock was never taken, or it went with
               the session)
    STUCK      the work would not die: the lock is KEPT - a release would let another node
               start the item while this one may still run it - and the item is reported
               (``/health`` 503, ``/status``, ``voltha_items_stuck``) until the work ends,
               then RELEASING

Transitions: STOPPING -> RELEASING | KILLING; KILLING -> RELEASING | STUCK;
STUCK -> RELEASING (the work ended); RELEASING -> DONE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import gevent
import gevent.event
import gevent.pool
import structlog

from .budget import KILL_TIMEOUT
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid
from .lease import Ownership, now
from .retrying import backoff_step
from .supervision import LOOP_KILL_TIMEOUT

log = structlog.get_logger(__name__)

#: How long a revocation waits for an owner-lock call in flight before it kills the call.
ACQUIRE_JOIN_TIMEOUT = 2.0
#: How often a stuck item's work is looked at again.
STUCK_RECHECK = 1.0
#: ``on_revoked`` always gets this long, even when a stall used up the stop budget: by then
#: the lease has ended and the switch guard keeps the work itself from resuming, so
#: ``on_revoked`` can only clean up (release what the work held, report the stop).
MIN_STOP_GRACE = 0.5

RevokeBarrier = Callable[[str, float], bool]
"""``fn(item, timeout)``: wait until nothing of ``item`` runs in it; False if it could not."""


class RevocationState(Enum):
    STOPPING = "stopping"
    KILLING = "killing"
    RELEASING = "releasing"
    DONE = "done"
    STUCK = "stuck"


class Revocable(Protocol):
    """What a revocation needs of an item task (the worker's :class:`~voltha_gevent.worker.ItemTask`)."""

    item: str
    session_id: str
    ownership: Ownership | None
    work: gevent.Greenlet | None
    lock_held: bool

    def cancel_acquire(self, timeout: float) -> bool:
        """Stop a pending acquire; False when a call in flight had to be killed (outcome unknown)."""

    def call_on_revoked(self) -> gevent.Greenlet | None:
        """Spawn the application's ``on_revoked`` if its work was started; the greenlet."""


@dataclass
class RevocationStats:
    revoked: int = 0
    killed: int = 0
    stuck: int = 0
    release_retries: int = 0
    handler_failures: int = 0
    handler_timeouts: int = 0


class Revocation:
    """One item's revocation; ``done`` is set in DONE (not in STUCK)."""

    def __init__(self, owner: Revocations, task: Revocable, *, release: bool, stop_by: float) -> None:
        self.owner = owner
        self.task = task
        self.item = task.item
        self.release = release
        self.stop_by = stop_by
        self.state = RevocationState.STOPPING
        self.done = gevent.event.Event()
        self.greenlet: gevent.Greenlet | None = None

    def session_ended(self, stop_by: float) -> None:
        """The session is gone: no release (the lock went with it), and a shorter budget."""
        self.release = False
        self.stop_by = min(self.stop_by, stop_by)

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def run(self) -> None:
        task = self.task
        if task.ownership is not None:
            task.ownership.revoke()
        if not task.cancel_acquire(ACQUIRE_JOIN_TIMEOUT):
            self.owner.suspects.add(self.item)  # an acquire may have landed: the sweep checks
        self._stop_work()
        if not self._work_dead():
            self._kill_work()
        if not self._work_dead():
            self._stuck()
        self._release()
        self._set(RevocationState.DONE)
        self.done.set()

    def _stop_work(self) -> None:
        stopper = self.task.call_on_revoked()
        if stopper is not None:
            stopper.join(max(MIN_STOP_GRACE, self.stop_by - now()))
            if not stopper.dead:
                self.owner.stats.handler_timeouts += 1
                log.error("revoke-handler-timeout", item=self.item, left=round(self.stop_by - now(), 3))
                stopper.kill(block=True, timeout=KILL_TIMEOUT)
            elif stopper.exception is not None:
                self.owner.stats.handler_failures += 1
                log.error("revoke-handler-failed", item=self.item, error=repr(stopper.exception))
        for barrier in list(self.owner.barriers):
            try:
                # a barrier may kill what outlives its timeout: that kill comes out of the margin
                if not barrier(self.item, max(0.0, self.stop_by - now() - KILL_TIMEOUT)):
                    self.owner.unsettled_barriers.add(self.item)
            except Exception:  # noqa: BLE001 - a barrier's failure must not skip the fence
                log.exception("revoke-barrier-failed", item=self.item)
                self.owner.unsettled_barriers.add(self.item)
        work = self.task.work
        if work is not None and not work.dead:
            work.join(max(0.0, self.stop_by - now()))

    def _work_dead(self) -> bool:
        work = self.task.work
        return (work is None or work.dead) and self.item not in self.owner.unsettled_barriers

    def _kill_work(self) -> None:
        self._set(RevocationState.KILLING)
        work = self.task.work
        if work is not None and not work.dead:
            self.owner.stats.killed += 1
            log.error("work-killed", item=self.item, reason="still running when the stop budget ran out")
            work.kill(block=True, timeout=KILL_TIMEOUT)

    def _stuck(self) -> None:
        """Keep the lock until the work ends by itself; report the item meanwhile."""
        self._set(RevocationState.STUCK)
        self.owner.stats.stuck += 1
        log.critical("item-stuck", item=self.item, reason="work would not stop; owner lock kept")
        while not self._work_dead():
            work = self.task.work
            if work is not None and not work.dead:
                work.join(STUCK_RECHECK)
            elif self._barriers_settle(STUCK_RECHECK):
                self.owner.unsettled_barriers.discard(self.item)
            else:
                gevent.sleep(STUCK_RECHECK)
        log.warning("item-unstuck", item=self.item)

    def _barriers_settle(self, timeout: float) -> bool:
        try:
            return all(barrier(self.item, timeout) for barrier in list(self.owner.barriers))
        except Exception:  # noqa: BLE001 - a failing barrier counts as not settled
            log.exception("revoke-barrier-failed", item=self.item)
            return False

    def _release(self) -> None:
        task = self.task
        if not (self.release and task.lock_held):
            task.lock_held = False
            return
        self._set(RevocationState.RELEASING)
        failures = 0
        while self.release and self.owner.session_current(task.session_id):
            try:
                self.owner.release_lock(self.item, task.session_id)
                break
            except SessionInvalid:
                break
            except (ConsulUnavailable, ConsulRejected) as exc:
                failures += 1
                self.owner.stats.release_retries += 1
                log.warning("owner-release-failed", item=self.item, error=str(exc), attempt=failures)
                gevent.sleep(backoff_step(failures))
        task.lock_held = False

    def _set(self, state: RevocationState) -> None:
        self.state = state
        self.owner.changed()


class Revocations:
    """Every revocation of one worker; the only place items are revoked."""

    def __init__(
        self,
        *,
        release_lock: Callable[[str, str], object],
        session_current: Callable[[str], bool],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.release_lock = release_lock
        self.session_current = session_current
        self.on_change = on_change
        self.running: dict[str, Revocation] = {}
        self.barriers: list[RevokeBarrier] = []
        self.unsettled_barriers: set[str] = set()
        self.suspects: set[str] = set()  # items whose acquire outcome is unknown
        self.stats = RevocationStats()
        self._group = gevent.pool.Group()

    def revoke(self, task: Revocable, *, release: bool, stop_by: float) -> Revocation:
        """Start revoking ``task`` (or join the revocation already running)."""
        current = self.running.get(task.item)
        if current is not None and current.task is task:
            if not release:
                current.session_ended(stop_by)
            return current
        revocation = Revocation(self, task, release=release, stop_by=stop_by)
        self.running[task.item] = revocation
        revocation.greenlet = self._group.spawn(self._run, revocation)
        revocation.greenlet.name = f"revoke:{task.item}"
        self.changed()
        return revocation

    def _run(self, revocation: Revocation) -> None:
        try:
            revocation.run()
        finally:
            self.unsettled_barriers.discard(revocation.item)
            if self.running.get(revocation.item) is revocation:
                del self.running[revocation.item]
            self.stats.revoked += 1
            log.debug("item-revoked", item=revocation.item, released=revocation.release)
            revocation.done.set()
            self.changed()

    def session_ended(self, stop_by: float) -> None:
        for revocation in list(self.running.values()):
            revocation.session_ended(stop_by)

    def stuck(self) -> set[str]:
        return {i for i, r in self.running.items() if r.state is RevocationState.STUCK}

    def changed(self) -> None:
        self.on_change()

    def kill_all(self, timeout: float = LOOP_KILL_TIMEOUT) -> None:
        """Abandon every revocation (a crash, for tests)."""
        self._group.kill(block=True, timeout=timeout)
        self.running.clear()


__all__ = ["Revocation", "RevocationState", "RevocationStats", "Revocations", "RevokeBarrier"]
