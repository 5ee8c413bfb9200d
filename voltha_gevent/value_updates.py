"""Live workload values: tell an item's owner when ``workload/<item>`` changes.

Who pays, and why. Only a worker whose handler **wants updates** watches values: a handler
with an ``on_updated(item, value)`` method (:class:`UpdatableHandler`), or any handler when
the node is built with ``value_updates=True``. That worker runs one blocking query on the
whole ``workload/`` prefix **with values** (a recursive listing: the only Consul read that
tells which key changed, by its ``ModifyIndex``), and pays one listing per change of the
workload - 19.5 MB at 100,000 items. Everybody else (the default) runs no such watch and
pays nothing: the leader's keys-only listing (4.8 MB) stays the only workload watch, and a
changed value reaches their work only when the item is taken again. Per-item blocking
queries were not chosen: one connection per owned item exceeds Consul's default of 200
HTTP connections per client address at a few hundred items.

What the owner is told, once per change it sees (intermediate values may be skipped, as
with any blocking query; the latest is always delivered):

* the handler has ``on_updated``: it is called with the new value in a greenlet of its own,
  bound to the item's :class:`~voltha_gevent.lease.Ownership` (so ``current_ownership()``
  works and the lease's switch guard fences it like the work), one call at a time per item;
  ``ownership.value`` already holds the new value;
* otherwise (``value_updates=True``): the item is revoked and taken again on this node
  (:meth:`Worker.restart <voltha_gevent.worker.Worker.restart>`: ``on_revoked``, the lock
  released, taken again with the new value in the same transaction, ``on_assigned``).

Why a change cannot be lost in a handover: the owner-lock transaction reads the value and
its ``ModifyIndex`` together with the lock (:mod:`voltha_gevent.owner_locks`), and an item
is told only about a ``ModifyIndex`` above the one it started with. A value written before
the new owner's lock is in what it starts with; one written after wakes its watch.

When the session ends every item is revoked; the revocation's barrier (:meth:`barrier`)
waits for a running ``on_updated`` - killing it at the end of the stop budget - before the
owner lock is released; the watch stops and starts again with the next session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import gevent
import structlog

from .budget import KILL_TIMEOUT
from .entries import KVEntry
from .keys import Keys, child_name
from .lease import bind, run_fenced
from .watch import Watch, WatchFactory

if TYPE_CHECKING:
    from .worker import ItemTask

log = structlog.get_logger(__name__)


@runtime_checkable
class UpdatableHandler(Protocol):
    """A handler that takes value changes in place instead of a restart of the item."""

    def on_updated(self, item: str, value: bytes | None) -> None:
        """``workload/<item>`` changed while this node runs the item; ``value`` is the new one."""


def wants_updates(handler: object) -> bool:
    """The handler has an ``on_updated`` it can be told with."""
    return callable(getattr(handler, "on_updated", None))


@dataclass
class ValueUpdateStats:
    notified: int = 0
    restarted: int = 0
    handler_failures: int = 0


class ValueUpdates:
    """One watch of ``workload/`` per session; changed values go to the items running here.

    A session duty: :meth:`session_started` starts the watch, :meth:`session_ended` stops it.
    ``tasks()`` gives the worker's item tasks; ``notify`` is the handler's ``on_updated`` (None:
    ``restart(items)`` revokes and takes the items again).
    """

    def __init__(
        self,
        watch_factory: WatchFactory,
        keys: Keys,
        *,
        tasks: Callable[[], Mapping[str, ItemTask]],
        notify: Callable[[str, bytes | None], None] | None,
        restart: Callable[[set[str]], None],
    ) -> None:
        self.watch_factory = watch_factory
        self.keys = keys
        self.tasks = tasks
        self.notify = notify
        self.restart = restart
        self.stats = ValueUpdateStats()
        self._watch: Watch | None = None
        self._updaters: dict[str, gevent.Greenlet] = {}
        self._again: set[str] = set()

    def session_started(self, session_id: str) -> None:
        watch = self.watch_factory.tree(self.keys.workload, self._on_workload, name="value-updates")
        self._watch = watch.start()

    def session_ended(self, *, lost: bool) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()

    def abandon(self) -> None:
        """Stop the watch and kill every ``on_updated`` in progress (a crash; tests)."""
        self.session_ended(lost=True)
        updaters = [g for g in self._updaters.values() if g is not gevent.getcurrent()]
        gevent.killall(updaters, block=True, timeout=KILL_TIMEOUT)
        self._updaters.clear()
        self._again.clear()

    def keeps_locks(self) -> bool:
        return False

    def watches(self) -> list[Watch]:
        return [self._watch] if self._watch is not None else []

    def _on_workload(self, entries: list[KVEntry]) -> None:
        tasks = self.tasks()
        restart: set[str] = set()
        for entry in entries:
            task = tasks.get(child_name(self.keys.workload, entry.key) or "")
            if task is None or task.ownership is None or entry.modify_index <= task.value_index:
                continue  # not ours, still being taken (the lock txn reads it), or seen already
            task.value_index = entry.modify_index
            task.ownership.value = entry.value
            if not task.handler_started() or not task.ownership.valid():
                continue  # on_assigned has not been called yet: it gets the new value
            if self.notify is not None:
                self._notify(task)
            else:
                restart.add(task.item)
        if restart:
            self.stats.restarted += len(restart)
            log.info("values-changed-restarting", items=len(restart))
            self.restart(restart)

    def _notify(self, task: ItemTask) -> None:
        """Run ``on_updated`` for the item; a change during a call is delivered after it."""
        item = task.item
        running = self._updaters.get(item)
        if running is not None and not running.dead:
            self._again.add(item)
            return
        updater = gevent.spawn(run_fenced, self._deliver, task)
        updater.name = f"on-updated:{item}"
        assert task.ownership is not None
        bind(updater, task.ownership, fenced_runner=True)
        self._updaters[item] = updater
        updater.link(lambda g: self._updaters.pop(item, None) if self._updaters.get(item) is g else None)

    def _deliver(self, task: ItemTask) -> None:
        ownership, notify = task.ownership, self.notify
        assert ownership is not None and notify is not None
        while ownership.valid():
            self._again.discard(task.item)
            log.debug("value-updated", item=task.item, index=task.value_index)  # per item: debug
            try:
                notify(task.item, ownership.value)
                self.stats.notified += 1
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # noqa: BLE001 - application code; the item keeps running
                self.stats.handler_failures += 1
                log.error("update-handler-failed", item=task.item, error=repr(exc))
            if task.item not in self._again:
                return

    def barrier(self, item: str, timeout: float) -> bool:
        """Revoke barrier: no ``on_updated`` of ``item`` may outlive its owner lock."""
        self._again.discard(item)
        updater = self._updaters.get(item)
        if updater is None or updater.dead:
            return True
        updater.join(timeout)
        if not updater.dead:
            log.warning("update-handler-killed", item=item)
            updater.kill(block=True, timeout=KILL_TIMEOUT)
        return updater.dead


def attach(worker: Any, value_updates: bool | None) -> ValueUpdates | None:
    """Wire value updates into ``worker`` when its handler wants them (see the module docstring).

    ``value_updates``: None follows the handler (watch only when it has ``on_updated``);
    True always watches (a handler without ``on_updated`` gets revoke + assign); False never.
    """
    notify = worker.handler.on_updated if wants_updates(worker.handler) else None
    if value_updates is False or (value_updates is None and notify is None):
        return None
    updates = ValueUpdates(worker.watch_factory, worker.keys, tasks=lambda: worker.tasks, notify=notify,
                           restart=worker.restart)
    worker.add_revoke_barrier(updates.barrier)
    return updates  # a session duty: the caller registers it with the coordinator


__all__ = ["UpdatableHandler", "ValueUpdateStats", "ValueUpdates", "attach", "wants_updates"]
