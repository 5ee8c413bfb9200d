"""The worker: run exactly the items the leader assigns to this node, one owner at a time.

For every item under ``<prefix>/assignments/<me>/`` the worker takes the ownership lock
``<prefix>/owners/<item>`` with its session - through :mod:`voltha_gevent.owner_locks`,
in transactions shared with other items that also return the lock's ``ModifyIndex`` (the
item's fencing token) and the item's workload value - waiting on a blocking query while a
previous owner still holds it. Then it calls the
application's ``on_assigned(item, value)`` in the item's own work greenlet, which carries
the item's :class:`~voltha_gevent.lease.Ownership` (``current_ownership()``,
:meth:`Worker.ownership`). A handler that raises is logged (``assign-handler-failed``),
counted and retried with backoff while the ownership stays valid.

Stopping an item - its assignment went away, the node stops, the session was lost - is the
job of :mod:`voltha_gevent.revocation`: one revocation per item, ``on_revoked`` within the
stop budget, the work confirmed dead before the owner lock is released, a stuck item keeps
its lock. If the session is lost, the lease has already ended: every work greenlet dies at
its next switch (the lease's switch guard), ``on_revoked`` still runs for clean-up, and no
lock is released (they went with the session). Items come back only through new
assignments to the new session.

Item states (:class:`ItemState`)::

    PENDING --lock taken--> STARTING --on_assigned called--> RUNNING
    any --assignment gone or session ended--> REVOKING --revocation done--> (forgotten)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event
import structlog

from .budget import KILL_TIMEOUT
from .consul_api import backoff_step
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid, TransactionFailed
from .keys import child_name
from .lease import Ownership, bind, now, run_fenced
from .owner_locks import OwnerLocks
from .revocation import MIN_STOP_GRACE, Revocations, RevokeBarrier
from .supervision import supervise
from .value_updates import attach as attach_value_updates
from .watch import Watch, WatchKind

if TYPE_CHECKING:
    from .coordinator import Coordinator

log = structlog.get_logger(__name__)

#: Items set up between two yields to the event loop when a big assignment arrives.
YIELD_EVERY = 500
#: A refused owner lock (held by the previous owner, or in Consul's lock-delay) is tried
#: again after REFUSED_RETRY seconds, doubling up to REFUSED_RETRY_MAX, then
#: REFUSED_RETRY_SLOW once it has waited LONG_WAIT seconds (a stuck owner elsewhere).
#: Items refused together retry together: their acquires share transactions, so a round
#: costs O(items waiting). (A blocking query on ``owners/`` woke on every lock anywhere and
#: downloaded all of them: 25 MB per change at 100,000 items.)
REFUSED_RETRY, REFUSED_RETRY_MAX, REFUSED_RETRY_SLOW, LONG_WAIT = 0.05, 0.5, 2.0, 10.0
#: While settled with nothing assigned, :meth:`Worker.wait_settled` looks again this often
#: for a first assignment or an empty workload (seconds).
SETTLED_RECHECK = 0.2


class AssignmentHandler(Protocol):
    """What the embedding application supplies; both run in greenlets of their own."""

    def on_assigned(self, item: str, value: bytes | None) -> None:
        """Start the work for ``item`` (``value`` is its workload value)."""

    def on_revoked(self, item: str) -> None:
        """Stop the work for ``item``; return only when it has stopped."""


@dataclass
class CallbackHandler:
    """An :class:`AssignmentHandler` made of two plain callables."""

    assigned: Callable[[str, bytes | None], None]
    revoked: Callable[[str], None]

    def on_assigned(self, item: str, value: bytes | None) -> None:
        self.assigned(item, value)

    def on_revoked(self, item: str) -> None:
        self.revoked(item)


class ItemState(Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    REVOKING = "revoking"


@dataclass
class WorkerStats:
    assigned: int = 0
    handler_failures: int = 0
    fenced: int = 0


def refused_retry(refusals: int, waited: float) -> float:
    """Seconds before trying a refused owner lock again (see :data:`REFUSED_RETRY`)."""
    if waited >= LONG_WAIT:
        return REFUSED_RETRY_SLOW
    return min(REFUSED_RETRY_MAX, REFUSED_RETRY * 2 ** min(refusals - 1, 10))


class ItemTask:
    """One assigned item: its lock, its ownership, its work greenlet, its state."""

    def __init__(self, worker: Worker, item: str, session_id: str, generation: int) -> None:
        self.worker = worker
        self.item = item
        self.session_id = session_id
        self.generation = generation
        self.state = ItemState.PENDING
        self.lock_held = False
        self.ownership: Ownership | None = None
        #: ModifyIndex of the workload value the work has (read with the lock; value_updates)
        self.value_index = 0
        self.work: gevent.Greenlet | None = None
        self.in_call = False
        self.acquirer = gevent.spawn(self._acquire_and_start)
        self.acquirer.name = f"acquire:{item}"

    # -- taking the lock ---------------------------------------------------------------

    def _acquire_and_start(self) -> None:
        worker = self.worker
        failures = 0
        refusals = 0
        refused_since = 0.0
        while self.state is ItemState.PENDING:
            try:
                self.in_call = True
                got = worker.owner_locks.acquire(self.item, self.session_id)
            except SessionInvalid as exc:
                worker.session_invalid(self.session_id, f"owner lock: {exc}")
                return
            except (ConsulUnavailable, ConsulRejected, TransactionFailed) as exc:
                failures += 1
                log.warning("owner-lock-failed", item=self.item, error=str(exc))
                gevent.sleep(backoff_step(failures))
                continue
            finally:
                self.in_call = False
            if got is not None:
                self.lock_held = True  # no switch since the answer: a revocation sees it
                break
            refused_since = refused_since or time.monotonic()
            refusals += 1
            if refusals == 1:
                log.debug("owner-lock-refused", item=self.item)  # per item: debug
            gevent.sleep(refused_retry(refusals, time.monotonic() - refused_since))
        else:
            return
        if self.state is not ItemState.PENDING:
            return  # revoked while the lock was being taken: the revocation releases it
        lock, entry = got
        self.value_index = entry.modify_index if entry else 0
        self.ownership = Ownership.from_lock(self.item, lock, entry.value if entry else None,
                                             worker.lease, self.generation)
        self.state = ItemState.STARTING
        self.work = gevent.spawn(run_fenced, self._run_handler)
        self.work.name = f"work:{self.item}"
        bind(self.work, self.ownership, fenced_runner=True)

    def cancel_acquire(self, timeout: float) -> bool:
        """Stop a pending acquire; False when a call in flight had to be killed (outcome unknown).

        The state turns REVOKING first, so an answer still in flight records the lock
        (``lock_held``, for the revocation to release) but never starts the work.
        """
        self.state = ItemState.REVOKING
        acquirer = self.acquirer
        if acquirer.dead or acquirer is gevent.getcurrent():
            return True
        if self.in_call:
            acquirer.join(timeout)  # the answer decides lock_held; killing it would lose that
        if acquirer.dead:
            return True
        in_call = self.in_call
        acquirer.kill(block=True, timeout=KILL_TIMEOUT)
        return not in_call

    # -- running the handler -----------------------------------------------------------

    def _run_handler(self) -> None:
        worker, ownership = self.worker, self.ownership
        assert ownership is not None
        failures = 0
        while self.state is ItemState.STARTING and ownership.valid():
            self.state = ItemState.RUNNING  # the lock is held: from here on the work may run
            worker.changed()
            log.debug("item-started", item=self.item, token=ownership.token)  # per item: debug
            try:
                worker.handler.on_assigned(self.item, ownership.value)
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # noqa: BLE001 - application code; retried, never fatal
                if self.state is ItemState.RUNNING:
                    self.state = ItemState.STARTING
                failures += 1
                worker.stats.handler_failures += 1
                log.error("assign-handler-failed", item=self.item, error=repr(exc), attempt=failures)
                ownership.wait(backoff_step(failures))
                continue
            worker.stats.assigned += 1
            return

    def handler_started(self) -> bool:
        """``on_assigned`` has been called (and did not fail): later values are news to it."""
        return self.state is ItemState.RUNNING

    def call_on_revoked(self) -> gevent.Greenlet | None:
        """Spawn ``on_revoked`` when the work was started; the revocation bounds it."""
        if self.work is None:
            return None
        stopper = gevent.spawn(self.worker.handler.on_revoked, self.item)
        stopper.name = f"on-revoked:{self.item}"
        return stopper


class Worker:
    """Runs this node's assigned items; a session duty of the coordinator."""

    def __init__(
        self,
        coordinator: Coordinator,
        handler: AssignmentHandler,
        *,
        soak: float | None = None,
        stop_timeout: float | None = None,
        value_updates: bool | None = None,
    ) -> None:
        config = coordinator.config
        self.coordinator = coordinator
        self.handler = handler
        self.keys = coordinator.keys
        self.api = coordinator.api
        self.watch_api = coordinator.watch_api
        self.instance_id = coordinator.instance_id
        self.lease = coordinator.session.lease
        self.soak = config.worker_soak if soak is None else soak
        self.stop_timeout = config.stop_timeout if stop_timeout is None else stop_timeout
        self.watch_wait = config.watch_wait
        self.stats = WorkerStats()
        self.owner_locks = OwnerLocks(self.api, self.keys, self.instance_id)
        self.revocations = Revocations(release_lock=self._release_lock, session_current=self._session_current,
                                       on_change=self.changed)
        self.tasks: dict[str, ItemTask] = {}
        self.assigned: set[str] = set()
        self.settled = gevent.event.Event()
        self._session_id: str | None = None
        self._generation = 0
        self._dirty = gevent.event.Event()
        self._recompute: object | None = None
        self._watch: Watch | None = None
        self._loop: gevent.Greenlet | None = None
        self._restarts: set[str] = set()
        coordinator.add_duty(self)
        self.values = attach_value_updates(self, value_updates)  # a changed workload value: on_updated

    def restart(self, items: set[str]) -> None:
        """Revoke ``items`` and take them up again here (a changed value, no ``on_updated``)."""
        self._restarts.update(items)
        self._dirty.set()

    def add_revoke_barrier(self, barrier: RevokeBarrier) -> None:
        """``barrier(item, timeout)`` runs after ``on_revoked``, before the lock is released."""
        self.revocations.barriers.append(barrier)

    # -- session duty ------------------------------------------------------------------

    def session_started(self, session_id: str) -> None:
        self._session_id = session_id
        self._generation = self.coordinator.session.generation
        self.assigned = set()
        self._dirty.clear()
        self._watch = Watch(self.watch_api, self.keys.assignments_of(self.instance_id), self._on_assignments,
                            kind=WatchKind.KEYS, wait=self.watch_wait, name="worker-assignments").start()
        self._start_loop(session_id)

    def _start_loop(self, session_id: str) -> None:
        self._loop = gevent.spawn(self._run, session_id)
        self._loop.name = "worker"
        supervise(self._loop, "worker", restart=lambda: self._restart_loop(session_id))

    def _restart_loop(self, session_id: str) -> None:
        """Supervision: the loop crashed; run it again while its session is current."""
        if self._session_id == session_id:
            self._dirty.set()
            self._start_loop(session_id)

    def session_ended(self, *, lost: bool) -> None:
        """Revoke everything; release the locks only when the session is still alive."""
        self._session_id = None
        if self._watch is not None:
            self._watch.stop()
        loop, self._loop = self._loop, None
        if loop is not None and loop is not gevent.getcurrent():
            loop.kill(block=True, timeout=2.0)
        if lost:
            stop_by = self.lease.deadline + self.stop_timeout  # the budget counts from the lease's end
            self.revocations.session_ended(stop_by)
            if self.tasks:
                self.stats.fenced += len(self.tasks)
                log.error("fencing-work", items=len(self.tasks), reason="session lost")
        else:
            stop_by = now() + self.stop_timeout
        self._revoke(list(self.tasks), release=not lost, stop_by=stop_by)
        self.settled.clear()

    def session_invalid(self, session_id: str, reason: str) -> None:
        """Consul says the session is gone (seen by an acquirer); the coordinator fences."""
        self.coordinator.session.mark_lost(session_id, reason)

    def abandon(self) -> None:
        """Kill every greenlet and all work without handlers or releases (crash, for tests)."""
        self._session_id = None
        if self._watch is not None:
            self._watch.stop()
        loop, self._loop = self._loop, None
        greenlets = [loop] if loop is not None else []
        self.revocations.kill_all()
        for task in self.tasks.values():
            task.state = ItemState.REVOKING
            greenlets.extend(g for g in (task.acquirer, task.work) if g is not None)
        gevent.killall([g for g in greenlets if g is not gevent.getcurrent()], block=True, timeout=2.0)
        self.owner_locks.stop()
        self.tasks.clear()
        self.settled.clear()

    # -- assignments -------------------------------------------------------------------

    def _on_assignments(self, names: list[str]) -> None:
        folder = self.keys.assignments_of(self.instance_id)
        assigned = {name for name in (child_name(folder, key) for key in names) if name is not None}
        if assigned != self.assigned:
            self.settled.clear()  # not settled until the loop has acted on it
        self.assigned = assigned
        self._dirty.set()

    def _run(self, session_id: str) -> None:
        while self._session_id == session_id:
            self._dirty.wait()
            while self._dirty.wait(0) and self._session_id == session_id:
                self._dirty.clear()
                gevent.sleep(self.soak)  # coalesce a burst of assignment changes
            if self._session_id == session_id:
                self._reconcile(session_id)

    def _reconcile(self, session_id: str) -> None:
        wanted = set(self.assigned)
        gone = [item for item in self.tasks if item not in wanted or item in self._restarts]
        self._restarts.clear()
        if gone or wanted - set(self.tasks):
            log.info("assignment-changed", assigned=len(wanted), revoking=len(gone),
                     taking=len(wanted - set(self.tasks)))  # one line per change, not per item
        self._revoke(gone, release=True, stop_by=now() + self.stop_timeout)
        for count, item in enumerate(sorted(wanted - set(self.tasks)), 1):
            if item in self.revocations.running:
                continue  # still being revoked (stuck): taken up again once it is done
            self.tasks[item] = ItemTask(self, item, session_id, self._generation)
            if count % YIELD_EVERY == 0:
                gevent.sleep(0)  # thousands of new items: let heartbeats and watches run between
        self._sweep(session_id)
        self.changed()

    def _revoke(self, items: list[str], *, release: bool, stop_by: float) -> None:
        """Revoke ``items`` and wait for them (stuck ones are left running and reported)."""
        revocations = [self.revocations.revoke(self.tasks[i], release=release, stop_by=stop_by)
                       for i in items if i in self.tasks]
        for revocation in revocations:
            revocation.join(max(MIN_STOP_GRACE, stop_by - now()) + 2 * KILL_TIMEOUT + 0.5)
        for revocation in revocations:
            if self.tasks.get(revocation.item) is revocation.task:
                del self.tasks[revocation.item]
        self.changed()

    def _sweep(self, session_id: str) -> None:
        """Release owner locks this session may hold without a task (an acquire killed in flight)."""
        for item in sorted(self.revocations.suspects):
            if item in self.tasks or item in self.revocations.running:
                continue
            try:
                _, entry = self.api.get(self.keys.owner(item), consistent=True)
                if entry is not None and entry.session == session_id:
                    self.api.release(self.keys.owner(item), session_id)
                    log.warning("owner-lock-swept", item=item)
                self.revocations.suspects.discard(item)
            except (ConsulUnavailable, ConsulRejected, SessionInvalid) as exc:
                log.warning("owner-sweep-failed", item=item, error=str(exc))
                self._dirty.set()  # try again on the next round
                return

    def _release_lock(self, item: str, session_id: str) -> object:
        return self.owner_locks.release(item, session_id)

    def _session_current(self, session_id: str) -> bool:
        """The session still holds its locks (a graceful stop releases them before it ends)."""
        session = self.coordinator.session
        return session.session_id == session_id and session.live

    def changed(self) -> None:
        """Something changed: recompute ``settled`` soon (once for a burst of changes).

        Every item start and every revocation step calls this; recomputing at once would
        cost O(items) each time, O(items^2) for a big assignment.
        """
        if self._recompute is None:
            self._recompute = gevent.get_hub().loop.run_callback(self._settle_now)

    def _settle_now(self) -> None:
        self._recompute = None
        running = {i for i, t in self.tasks.items() if t.state is ItemState.RUNNING}
        if self._session_id and running == self.assigned and len(running) == len(self.tasks) \
                and not self.revocations.running:
            self.settled.set()
        else:
            self.settled.clear()
        if not self.revocations.running and self._session_id and set(self.tasks) != self.assigned:
            self._dirty.set()

    # -- inspection --------------------------------------------------------------------

    def ownership(self, item: str) -> Ownership | None:
        """The item's :class:`Ownership` while this node runs it (local state only)."""
        task = self.tasks.get(item)
        if task is None or task.ownership is None or not task.ownership.valid():
            return None
        return task.ownership

    def watches(self) -> list[Watch]:
        values = self.values.watches() if self.values is not None else []
        return [w for w in (self._watch, *values) if w is not None]

    def owned(self) -> set[str]:
        """Items whose lock is held and whose work has started."""
        return {i for i, t in self.tasks.items() if t.state is ItemState.RUNNING}

    def pending(self) -> set[str]:
        """Items assigned whose lock is not held yet (or whose handler is starting)."""
        return {i for i, t in self.tasks.items() if t.state in (ItemState.PENDING, ItemState.STARTING)}

    def revoking(self) -> set[str]:
        revoking = {i for i, t in self.tasks.items() if t.state is ItemState.REVOKING}
        return revoking | set(self.revocations.running)

    def stuck(self) -> set[str]:
        """Items whose work would not stop: their owner locks are kept."""
        return self.revocations.stuck()

    def keeps_locks(self) -> bool:
        """Session duty: stuck work keeps its locks, even through a shutdown."""
        return bool(self.stuck())

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until this node runs exactly what it is assigned **and** that means something:
        it has been assigned at least one item, or the workload is empty. False at ``timeout``.

        Right after ``start()`` nothing is assigned yet and nothing runs, which matched
        trivially; callers waiting for their first work got True at once with nothing owned.
        A member the leader gives no item while others run the whole workload waits out the
        timeout (False): it cannot tell "not considered yet" from "nothing for me".
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.settled.wait(remaining):
                return False
            if self.assigned or self._workload_empty():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            gevent.sleep(SETTLED_RECHECK if deadline is None else min(SETTLED_RECHECK, remaining or 0.0))

    def _workload_empty(self) -> bool:
        try:
            _, names = self.api.keys(self.keys.workload)
        except (ConsulUnavailable, ConsulRejected):
            return False
        return not any(child_name(self.keys.workload, name) for name in names)
