"""The worker: run exactly the items the leader assigns to this node, one owner at a time.

For every item under ``<prefix>/assignments/<me>/`` the worker first takes the ownership
lock ``<prefix>/owners/<item>`` with its session (waiting on it with a blocking query while
the previous owner still holds it), then calls the application's ``on_assigned(item,
value)`` in the item's own work greenlet. When the assignment goes away it calls
``on_revoked(item)``, waits for it (at most ``stop_timeout``), kills and joins the work
greenlet if it still runs (``work-killed``), and only then releases the lock: the release
is the leader's signal that the handover may complete. So an item's work runs only while
its lock is held by this node's live session.

If the session is lost, :meth:`session_ended` revokes every item at once (self-fencing)
without touching the locks, which died with the session; items come back only through
new assignments to the new session. A handler that raises is logged
(``assign-handler-failed``), counted and retried with backoff; it never kills the watch.

Item states (:class:`ItemState`)::

    PENDING --lock taken--> STARTING --on_assigned returned--> RUNNING
    PENDING/STARTING/RUNNING --assignment gone or session lost--> REVOKING --> (forgotten)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import structlog

from .consul_api import KVEntry, backoff_step
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid
from .keys import child_name, held_owners
from .watch import Watch, WatchKind

if TYPE_CHECKING:
    from .coordinator import Coordinator

log = structlog.get_logger(__name__)

#: Owner-lock acquire calls in flight at once per worker: a big assignment must not open
#: hundreds of connections to one agent at once (Consul caps connections per client IP).
ACQUIRE_CONCURRENCY = 16


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
    revoked: int = 0
    handler_failures: int = 0
    killed: int = 0
    fenced: int = 0


class ItemTask:
    """One assigned item: its lock, its work greenlet, its state."""

    def __init__(self, worker: Worker, item: str, session_id: str) -> None:
        self.worker = worker
        self.item = item
        self.session_id = session_id
        self.state = ItemState.PENDING
        self.lock_held = False
        self.work: gevent.Greenlet | None = None
        self.started_at = time.monotonic()
        self.acquirer = gevent.spawn(self._acquire_and_start)
        self.acquirer.name = f"acquire:{item}"

    # -- taking the lock ---------------------------------------------------------------

    def _acquire_and_start(self) -> None:
        worker = self.worker
        key = worker.keys.owner(self.item)
        failures = 0
        while self.state is ItemState.PENDING:
            try:
                with worker.acquire_slots:
                    acquired = worker.api.acquire(key, worker.instance_id, self.session_id)
                if acquired:
                    break
            except SessionInvalid as exc:
                worker.coordinator.session.mark_lost(self.session_id, f"owner lock: {exc}")
                return
            except (ConsulUnavailable, ConsulRejected) as exc:
                failures += 1
                log.warning("owner-lock-failed", item=self.item, error=str(exc))
                gevent.sleep(backoff_step(failures))
                continue
            self._wait_for_release(key)
        else:
            return
        self._stop_watch()
        self.lock_held = True
        self.state = ItemState.STARTING
        self.work = gevent.spawn(self._run_handler)
        self.work.name = f"work:{self.item}"

    def _wait_for_release(self, key: str) -> None:
        """Block (on the worker's one owners/ blocking query, not a poll) until the lock looks free."""
        waits = self.worker.owner_waits
        if waits.looks_free(self.item):
            # The key looks free, yet the acquire was refused: Consul's lock-delay (or our
            # view lags a moment). Look again shortly rather than waiting for a change.
            gevent.sleep(max(0.05, self.worker.lock_delay / 4))
            return
        waits.wait(self.item, self.worker.watch_wait)

    def _stop_watch(self) -> None:
        self.worker.owner_waits.done(self.item)

    # -- running the handler -----------------------------------------------------------

    def _run_handler(self) -> None:
        worker = self.worker
        value = worker.item_value(self.item)
        failures = 0
        while self.state is ItemState.STARTING:
            self.state = ItemState.RUNNING  # the lock is held: from here on the work may run
            worker.changed()
            try:
                worker.handler.on_assigned(self.item, value)
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # noqa: BLE001 - application code; retried, never fatal
                if self.state is ItemState.RUNNING:
                    self.state = ItemState.STARTING
                failures += 1
                worker.stats.handler_failures += 1
                log.error("assign-handler-failed", item=self.item, error=repr(exc), attempt=failures)
                gevent.sleep(backoff_step(failures))
                continue
            worker.stats.assigned += 1
            log.info("item-started", item=self.item)
            return

    # -- revoking ----------------------------------------------------------------------

    def revoke(self, *, release: bool) -> None:
        """Stop the work (bounded by the stop timeout), then release the lock if asked."""
        worker = self.worker
        was = self.state
        self.state = ItemState.REVOKING
        self.acquirer.kill(block=True, timeout=2.0)
        self._stop_watch()
        if was in (ItemState.STARTING, ItemState.RUNNING):
            self._call_on_revoked()
            self._kill_work()
        # A PENDING item may have had its acquire answered just as it was killed: release
        # anyway (a release by a non-holder is a harmless "false").
        if release:
            try:
                worker.api.release(worker.keys.owner(self.item), self.session_id)
            except (ConsulUnavailable, ConsulRejected, SessionInvalid) as exc:
                log.warning("owner-release-failed", item=self.item, error=str(exc))
        self.lock_held = False
        worker.stats.revoked += 1
        log.info("item-revoked", item=self.item, released=release)

    def _call_on_revoked(self) -> None:
        timeout = self.worker.stop_timeout
        stopper = gevent.spawn(self.worker.handler.on_revoked, self.item)
        stopper.join(timeout)
        if not stopper.dead:
            log.error("revoke-handler-timeout", item=self.item, timeout=timeout)
            stopper.kill(block=True, timeout=1.0)
        elif stopper.exception is not None:
            self.worker.stats.handler_failures += 1
            log.error("revoke-handler-failed", item=self.item, error=repr(stopper.exception))

    def _kill_work(self) -> None:
        work = self.work
        if work is not None and not work.dead:
            self.worker.stats.killed += 1
            log.error("work-killed", item=self.item, reason="still running after on_revoked")
            work.kill(block=True)


class OwnerWaits:
    """One blocking query on ``owners/``, shared by every item waiting for a previous owner.

    Started when the first item has to wait and stopped when the last one stops waiting, so
    a worker holds at most one extra long poll however many items are in handover (one long
    poll per item would exhaust Consul's per-client connection limit in a big handover).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.waiting: dict[str, gevent.event.Event] = {}
        self.held: set[str] | None = None  # items whose owner lock is held, once read
        self.watch: Watch | None = None

    def looks_free(self, item: str) -> bool:
        """True when the latest view shows no holder (False while there is no view yet)."""
        self._ensure_watch(item)
        return self.held is not None and item not in self.held

    def wait(self, item: str, timeout: float) -> None:
        event = self.waiting.setdefault(item, gevent.event.Event())
        self._ensure_watch(item)
        event.clear()
        if self.held is not None and item not in self.held:
            return
        event.wait(timeout)

    def done(self, item: str) -> None:
        self.waiting.pop(item, None)
        if not self.waiting and self.watch is not None:
            watch, self.watch = self.watch, None
            self.held = None
            watch.stop()

    def _ensure_watch(self, item: str) -> None:
        self.waiting.setdefault(item, gevent.event.Event())
        if self.watch is None:
            log.info("waiting-for-previous-owners", first=item)
            worker = self.worker
            self.watch = Watch(worker.watch_api, worker.keys.owners, self._on_owners, kind=WatchKind.TREE,
                               wait=worker.watch_wait, name="worker-owner-waits").start()
            self.watch.wait_delivered(worker.watch_wait)

    def _on_owners(self, entries: list[KVEntry]) -> None:
        self.held = set(held_owners(self.worker.keys.owners, entries))
        for item, event in list(self.waiting.items()):
            if item not in self.held:
                event.set()


class Worker:
    """Runs this node's assigned items; a session duty of the coordinator."""

    def __init__(
        self,
        coordinator: Coordinator,
        handler: AssignmentHandler,
        *,
        soak: float | None = None,
        stop_timeout: float | None = None,
    ) -> None:
        config = coordinator.config
        self.coordinator = coordinator
        self.handler = handler
        self.keys = coordinator.keys
        self.api = coordinator.api
        self.watch_api = coordinator.watch_api
        self.instance_id = coordinator.instance_id
        self.soak = config.worker_soak if soak is None else soak
        self.stop_timeout = config.stop_timeout if stop_timeout is None else stop_timeout
        self.lock_delay = config.lock_delay
        self.watch_wait = config.watch_wait
        self.stats = WorkerStats()
        self.owner_waits = OwnerWaits(self)
        self.acquire_slots = gevent.lock.BoundedSemaphore(ACQUIRE_CONCURRENCY)
        self.tasks: dict[str, ItemTask] = {}
        self.assigned: set[str] = set()
        self.settled = gevent.event.Event()
        self._session_id: str | None = None
        self._dirty = gevent.event.Event()
        self._watch: Watch | None = None
        self._loop: gevent.Greenlet | None = None
        coordinator.add_duty(self)

    # -- session duty ------------------------------------------------------------------

    def session_started(self, session_id: str) -> None:
        self._session_id = session_id
        self.assigned = set()
        self._dirty.clear()
        self._watch = Watch(self.watch_api, self.keys.assignments_of(self.instance_id), self._on_assignments,
                            kind=WatchKind.KEYS, wait=self.watch_wait, name="worker-assignments").start()
        self._loop = gevent.spawn(self._run, session_id)
        self._loop.name = "worker"

    def session_ended(self, *, lost: bool) -> None:
        """Revoke everything now; release the locks only when the session is still alive."""
        self._session_id = None
        if self._watch is not None:
            self._watch.stop()
        loop, self._loop = self._loop, None
        if loop is not None and loop is not gevent.getcurrent():
            loop.kill(block=True, timeout=2.0)
        if lost and self.tasks:
            self.stats.fenced += len(self.tasks)
            log.error("fencing-work", items=len(self.tasks), reason="session lost")
        self._revoke(list(self.tasks), release=not lost)
        self.settled.clear()

    def abandon(self) -> None:
        """Kill every greenlet and all work without handlers or releases (crash, for tests)."""
        self._session_id = None
        if self._watch is not None:
            self._watch.stop()
        loop, self._loop = self._loop, None
        greenlets = [loop] if loop is not None else []
        for task in self.tasks.values():
            task.state = ItemState.REVOKING
            task._stop_watch()
            greenlets.extend(g for g in (task.acquirer, task.work) if g is not None)
        gevent.killall([g for g in greenlets if g is not gevent.getcurrent()], block=True, timeout=2.0)
        self.tasks.clear()
        self.settled.clear()

    # -- assignments -------------------------------------------------------------------

    def _on_assignments(self, names: list[str]) -> None:
        folder = self.keys.assignments_of(self.instance_id)
        items = {name for name in (child_name(folder, key) for key in names) if name is not None}
        self.assigned = items
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
        gone = [item for item in self.tasks if item not in wanted]
        self._revoke(gone, release=True)
        for item in sorted(wanted - set(self.tasks)):
            self.tasks[item] = ItemTask(self, item, session_id)
        self.changed()

    def _revoke(self, items: list[str], *, release: bool) -> None:
        tasks = [self.tasks[item] for item in items if item in self.tasks]
        pool = gevent.pool.Pool(64)
        for task in tasks:
            pool.spawn(task.revoke, release=release)
        pool.join()
        for task in tasks:
            self.tasks.pop(task.item, None)
        self.changed()

    def item_value(self, item: str) -> bytes | None:
        """The item's workload value (None if absent or unreadable after retries)."""
        try:
            _, entry = self.coordinator.retry.call(lambda: self.api.get(self.keys.item(item)),
                                                   what="read-item", deadline=time.monotonic() + 10)
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("item-value-unreadable", item=item, error=str(exc))
            return None
        return entry.value if entry is not None else None

    def changed(self) -> None:
        """Recompute ``settled``: every assigned item running and nothing in flight."""
        running = {i for i, t in self.tasks.items() if t.state is ItemState.RUNNING}
        if self._session_id and running == self.assigned and len(running) == len(self.tasks):
            self.settled.set()
        else:
            self.settled.clear()

    # -- inspection --------------------------------------------------------------------

    def watches(self) -> list[Watch]:
        return [w for w in (self._watch, self.owner_waits.watch) if w is not None]

    def owned(self) -> set[str]:
        """Items whose lock is held and whose work has started."""
        return {i for i, t in self.tasks.items() if t.state is ItemState.RUNNING}

    def pending(self) -> set[str]:
        """Items assigned whose lock is not held yet (or whose handler is starting)."""
        return {i for i, t in self.tasks.items() if t.state in (ItemState.PENDING, ItemState.STARTING)}

    def revoking(self) -> set[str]:
        return {i for i, t in self.tasks.items() if t.state is ItemState.REVOKING}

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until this node runs exactly what it is assigned."""
        return self.settled.wait(timeout)
