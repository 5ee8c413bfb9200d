"""One assigned item on this node: its owner lock, its ownership, its work greenlet, its state.

The worker (:mod:`voltha_gevent.worker`) makes an :class:`ItemTask` for every item assigned
to it. The task takes ``owners/<item>`` through the worker's batched
:class:`~voltha_gevent.owner_locks.OwnerLocks` - a refusal (the previous owner still holds
it, or Consul's lock-delay) is tried again with backoff, in transactions shared with the
other items refused at the same time - then runs ``on_assigned`` in the item's own work
greenlet, which carries the item's :class:`~voltha_gevent.lease.Ownership`. Stopping it is
the job of :mod:`voltha_gevent.revocation`.

States (:class:`ItemState`)::

    PENDING --lock taken--> STARTING --on_assigned called--> RUNNING
    any --assignment gone or session ended--> REVOKING --revocation done--> (forgotten)
"""

from __future__ import annotations

import time
from enum import Enum
from typing import TYPE_CHECKING

import gevent
import structlog

from .budget import KILL_TIMEOUT
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid, TransactionFailed
from .lease import Ownership, bind, run_fenced
from .retrying import Backoff, backoff_step

if TYPE_CHECKING:
    from .worker import Worker

log = structlog.get_logger(__name__)

#: A refused owner lock (held by the previous owner, or in Consul's lock-delay) is tried
#: again after 0.05 s, doubling up to 0.5 s, then every 2 s (the slowest step) once it has
#: waited LONG_WAIT seconds (a stuck owner elsewhere). Items refused together retry
#: together: their acquires share transactions, so a round costs O(items waiting). (A
#: blocking query on ``owners/`` would wake on every lock anywhere and download all of them:
#: 25 MB per change at 100,000 items.)
REFUSED_BACKOFF = Backoff(schedule=(0.05, 0.1, 0.2, 0.4, 0.5), slowest=2.0)
LONG_WAIT = 10.0


class ItemState(Enum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    REVOKING = "revoking"


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
            waited = time.monotonic() - refused_since
            gevent.sleep(REFUSED_BACKOFF.step(refusals, slowest=waited >= LONG_WAIT))
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

    def _run_handler(self) -> None:
        worker, ownership = self.worker, self.ownership
        assert ownership is not None
        failures = 0
        while self.state is ItemState.STARTING and ownership.valid():
            self.state = ItemState.RUNNING  # the lock is held: from here on the work may run
            worker.recheck_settled()
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


__all__ = ["REFUSED_BACKOFF", "ItemState", "ItemTask"]
