"""The worker: run exactly the items the leader assigns to this node, one owner at a time.

For every item in its documents under ``<prefix>/assignments/<me>/``
(:mod:`voltha_gevent.assignment_docs`) the worker takes the ownership lock
``<prefix>/owners/<item>`` with its session - through :mod:`voltha_gevent.owner_locks`,
in transactions shared with other items that also return the lock's ``ModifyIndex`` (the
item's fencing token) and the item's workload value - trying again with backoff while a
previous owner still holds it (:mod:`voltha_gevent.item_task`). Then it calls the
application's ``on_assigned(item, value)`` in the item's own work greenlet, which carries
the item's :class:`~voltha_gevent.lease.Ownership` (``current_ownership()``,
:meth:`Worker.ownership`). A handler that raises is logged (``assign-handler-failed``),
counted and retried with backoff while the ownership stays valid.

The worker gets what it uses - the API clients, the keys, its instance id, a view of the
session (:class:`~voltha_gevent.session.SessionView`) and its settings - and changes no
other object: :class:`~voltha_gevent.node.Node` registers it as a session duty of the
coordinator.

Stopping an item - its assignment went away, the node stops, the session was lost - is the
job of :mod:`voltha_gevent.revocation`: one revocation per item, ``on_revoked`` within the
stop budget, the work confirmed dead before the owner lock is released, a stuck item keeps
its lock. If the session is lost, the lease has already ended: every work greenlet dies at
its next switch (the lease's switch guard), ``on_revoked`` still runs for clean-up, and no
lock is released (they went with the session). Items come back only through new
assignments to the new session.

Item states: :class:`~voltha_gevent.item_task.ItemState`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event
import structlog

from . import heap
from .assignment_docs import MemberDocuments
from .budget import KILL_TIMEOUT
from .consul_api import ConsulAPI
from .entries import KVEntry
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid
from .item_task import ItemState, ItemTask
from .keys import Keys, child_name
from .lease import Ownership, now
from .owner_locks import OwnerLocks
from .revocation import MIN_STOP_GRACE, Revocations, RevokeBarrier
from .supervision import LOOP_KILL_TIMEOUT, supervise
from .watch import Watch, WatchFactory

if TYPE_CHECKING:
    from .config import Config
    from .session import SessionView
    from .value_updates import ValueUpdates

log = structlog.get_logger(__name__)

#: Items set up between two yields to the event loop when a big assignment arrives.
YIELD_EVERY = 500
#: ``settled`` is recomputed at most this often (seconds): each recomputation walks every item.
SETTLE_EVERY = 0.05
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


@dataclass
class WorkerStats:
    assigned: int = 0
    handler_failures: int = 0
    fenced: int = 0
    skipped_documents: int = 0


@dataclass(frozen=True)
class WorkerSettings:
    soak: float = 0.5  # seconds a burst of assignment changes is coalesced
    stop_timeout: float = 4.0
    watch_wait: float = 60.0
    freeze_heap: bool = True  # freeze what is alive whenever the work settles (voltha_gevent.heap)

    @classmethod
    def from_config(cls, config: Config) -> WorkerSettings:
        return cls(soak=config.worker_soak, stop_timeout=config.stop_timeout, watch_wait=config.watch_wait,
                   freeze_heap=config.freeze_heap)


class Worker:
    """Runs this node's assigned items; a session duty (see the module docstring)."""

    def __init__(
        self,
        api: ConsulAPI,
        watch_api: ConsulAPI,
        keys: Keys,
        instance_id: str,
        session: SessionView,
        handler: AssignmentHandler,
        settings: WorkerSettings | None = None,
    ) -> None:
        settings = settings or WorkerSettings()
        self.handler = handler
        self.keys = keys
        self.api = api
        self.instance_id = instance_id
        self.session = session
        self.lease = session.lease
        self.soak = settings.soak
        self.stop_timeout = settings.stop_timeout
        self.freeze_heap = settings.freeze_heap
        self.watch_factory = WatchFactory(watch_api, settings.watch_wait)
        self.stats = WorkerStats()
        self.owner_locks = OwnerLocks(self.api, self.keys, self.instance_id)
        self.revocations = Revocations(release_lock=self._release_lock, session_current=self._session_current,
                                       on_change=self.recheck_settled)
        self.tasks: dict[str, ItemTask] = {}
        self.assigned: set[str] = set()
        self.documents = MemberDocuments(keys.assignments)
        self.settled = gevent.event.Event()
        self._session_id: str | None = None
        self._generation = 0
        self._dirty = gevent.event.Event()
        self._recompute: object | None = None
        self._settled_at = 0.0
        self._watch: Watch | None = None
        self._loop: gevent.Greenlet | None = None
        self._restarts: set[str] = set()
        self.values: ValueUpdates | None = None  # a changed workload value: on_updated (Node wires it)

    def restart(self, items: set[str]) -> None:
        """Revoke ``items`` and take them up again here (a changed value, no ``on_updated``)."""
        self._restarts.update(items)
        self._dirty.set()

    def add_revoke_barrier(self, barrier: RevokeBarrier) -> None:
        """``barrier(item, timeout)`` runs after ``on_revoked``, before the lock is released."""
        self.revocations.barriers.append(barrier)

    # Session duty

    def session_started(self, session_id: str) -> None:
        self._session_id = session_id
        self._generation = self.session.generation
        self.assigned = set()
        self.documents.forget()
        self._dirty.clear()
        watch = self.watch_factory.tree(self.keys.assignments_of(self.instance_id), self._on_assignments,
                                        name="worker-assignments")
        self._watch = watch.start()
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
            loop.kill(block=True, timeout=LOOP_KILL_TIMEOUT)
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
        self.session.mark_lost(session_id, reason)

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
        others = [g for g in greenlets if g is not gevent.getcurrent()]
        gevent.killall(others, block=True, timeout=LOOP_KILL_TIMEOUT)
        self.owner_locks.stop()
        self.tasks.clear()
        self.settled.clear()

    # Assignments

    def _on_assignments(self, entries: list[KVEntry]) -> None:
        assigned = self.documents.items(entries)
        self.stats.skipped_documents = self.documents.skipped
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
        self.recheck_settled()

    def _revoke(self, items: list[str], *, release: bool, stop_by: float) -> None:
        """Revoke ``items`` and wait for them (stuck ones are left running and reported)."""
        revocations = [self.revocations.revoke(self.tasks[i], release=release, stop_by=stop_by)
                       for i in items if i in self.tasks]
        for revocation in revocations:
            revocation.join(max(MIN_STOP_GRACE, stop_by - now()) + 2 * KILL_TIMEOUT + 0.5)
        for revocation in revocations:
            if self.tasks.get(revocation.item) is revocation.task:
                del self.tasks[revocation.item]
        self.recheck_settled()

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
        return self.session.session_id == session_id and self.session.live

    def recheck_settled(self) -> None:
        """Something changed: recompute ``settled`` soon (once for a burst of changes).

        Every item start and every revocation step calls this; recomputing at once would
        cost O(items) each time, O(items^2) for a big assignment, and even once per loop
        iteration it was a tenth of a node's CPU while 10,000 items started: at most once
        every :data:`SETTLE_EVERY`.
        """
        if self._recompute is None:
            delay = self._settled_at + SETTLE_EVERY - time.monotonic()
            if delay <= 0:
                self._recompute = gevent.get_hub().loop.run_callback(self._settle_now)
            else:
                self._recompute = gevent.spawn_later(delay, self._settle_now)

    def _settle_now(self) -> None:
        self._recompute = None
        self._settled_at = time.monotonic()
        tasks = self.tasks
        # No sets built: at 10,000 items two set comprehensions per run were a tenth of the
        # node's CPU while its items started. Newest tasks first: they are the likely PENDING ones.
        matches = len(tasks) == len(self.assigned) and tasks.keys() == self.assigned
        if self._session_id and matches and not self.revocations.running \
                and all(t.state is ItemState.RUNNING for t in reversed(tasks.values())):
            if self.freeze_heap and not self.settled.is_set():
                heap.settled()  # what runs now is long-lived: out of the full collections' way
            self.settled.set()
        else:
            self.settled.clear()
        if not self.revocations.running and self._session_id and not matches:
            self._dirty.set()

    # Inspection

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

        Right after ``start()`` nothing is assigned yet and nothing runs, which matches
        trivially: without the second condition a caller waiting for its first work would get
        True at once with nothing owned.
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
