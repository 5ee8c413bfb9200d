"""Supervision: no long-lived greenlet dies silently, and every log line names its node.

:func:`supervise` links a component's long-lived greenlet (the coordinator's session loop,
the worker's loop, watches, locks, heartbeats, the leader). When one dies with an
exception:

1. the traceback is logged (``greenlet-crashed``, with ``exc_info``) and the crash counted;
2. the crash is recorded for the node, so ``/health`` answers 503 naming the component
   until it runs again;
3. the component's ``restart`` is called after a backoff, which clears the record - or, when
   it has no restart, its ``on_crash`` (a heartbeat's is "declare the session lost", so the
   coordinator makes a new session with new heartbeats);
4. more than :data:`MAX_RESTARTS` crashes of one component within :data:`RESTART_WINDOW` turn
   the node **failed**: it stays unhealthy and ``voltha-gevent run`` exits with status 1,
   so a supervisor (systemd, Kubernetes) restarts the whole process.

Which node a greenlet belongs to is found from the greenlet that spawned it (gevent keeps
``spawning_greenlet``), up to the root greenlet a :class:`~voltha_gevent.Node` registered
with :func:`bind_instance`: so several nodes in one process log with their own
``instance_id`` (the :func:`add_instance_id` structlog processor) and keep their own
crash records, without any component passing a logger around.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import structlog

from .retrying import backoff_step

log = structlog.get_logger(__name__)

#: Crashes of one component within RESTART_WINDOW seconds that make the node fail.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: How far up the spawning chain a greenlet's node is looked for.
SPAWN_DEPTH = 16
#: How long stopping a coordination loop (a watch, a lock, the worker's loop, the owner-lock
#: batcher, the coordinator's session loop) waits for its killed greenlet to die, seconds.
#: The kill interrupts a pending Consul call at once, so only a loop that goes on after
#: ``GreenletExit`` takes this long; it is then left behind. (Work greenlets have the
#: fencing budget's ``KILL_TIMEOUT`` instead.)
LOOP_KILL_TIMEOUT = 2.0

_INSTANCE: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclass
class NodeHealth:
    """The crash records of one node (by instance id)."""

    crashes: int = 0
    down: dict[str, str] = field(default_factory=dict)  # component -> last error
    history: dict[str, list[float]] = field(default_factory=dict)
    failed: gevent.event.Event = field(default_factory=gevent.event.Event)
    failure: str | None = None


_HEALTH: dict[str, NodeHealth] = {}


def bind_instance(greenlet: Any, instance_id: str) -> None:
    """Greenlets spawned (directly or not) from ``greenlet`` belong to ``instance_id``."""
    _INSTANCE[greenlet] = instance_id


def instance_of(greenlet: Any) -> str | None:
    current = greenlet
    for _ in range(SPAWN_DEPTH):
        if current is None:
            return None
        try:
            found = _INSTANCE.get(current)
        except TypeError:
            return None
        if found is not None:
            if current is not greenlet:
                _INSTANCE[greenlet] = found  # remember: the chain may be collected later
            return found
        ref = getattr(current, "spawning_greenlet", None)
        current = ref() if ref is not None else None
    return None


def add_instance_id(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: ``instance_id`` of the node whose greenlet logs."""
    if "instance_id" not in event:
        instance = instance_of(gevent.getcurrent())
        if instance is not None:
            event["instance_id"] = instance
    return event


def health_of(instance_id: str) -> NodeHealth:
    return _HEALTH.setdefault(instance_id, NodeHealth())


def forget(instance_id: str) -> None:
    """Drop a stopped node's records (a new node of the same id starts clean)."""
    _HEALTH.pop(instance_id, None)


def supervise(
    greenlet: gevent.Greenlet,
    component: str,
    *,
    restart: Callable[[], object] | None = None,
    on_crash: Callable[[BaseException], object] | None = None,
) -> gevent.Greenlet:
    """Link ``greenlet``: a crash is logged, recorded, and restarted or handed to ``on_crash``."""
    instance = instance_of(greenlet) or instance_of(gevent.getcurrent())
    if instance is not None:
        bind_instance(greenlet, instance)
        # the component runs again (restarted, or made anew, as a new session's heartbeats)
        health_of(instance).down.pop(component, None)
    greenlet.link_exception(lambda dead: _crashed(dead, component, instance, restart, on_crash))
    return greenlet


def spawn_supervised(run: Callable[[], object], name: str, restart: Callable[[], object]) -> gevent.Greenlet:
    """Spawn ``run`` as the greenlet ``name``, supervised: a crash is logged and ``restart`` called."""
    greenlet = gevent.spawn(run)
    greenlet.name = name
    return supervise(greenlet, name, restart=restart)


def _crashed(dead: gevent.Greenlet, component: str, instance: str | None,
             restart: Callable[[], object] | None,
             on_crash: Callable[[BaseException], object] | None) -> None:
    error = dead.exception
    exc_info = getattr(dead, "exc_info", None) or (type(error), error, None)
    log.error("greenlet-crashed", component=component, error=repr(error), exc_info=exc_info,
              **({"instance_id": instance} if instance else {}))
    health = health_of(instance or "")
    health.crashes += 1
    health.down[component] = repr(error)
    now = time.monotonic()
    recent = [t for t in health.history.get(component, []) if now - t < RESTART_WINDOW] + [now]
    health.history[component] = recent
    if len(recent) > MAX_RESTARTS:
        health.failure = f"{component} crashed {len(recent)} times in {RESTART_WINDOW:.0f}s: {error!r}"
        log.critical("node-failed", component=component, reason=health.failure)
        health.failed.set()
        return
    if on_crash is not None:
        _call(on_crash, error, component)  # type: ignore[arg-type]
    if restart is not None:
        again = gevent.spawn_later(backoff_step(len(recent)), _restart, restart, component, health)
        if instance is not None:
            bind_instance(again, instance)  # the restarted greenlets belong to the same node


def _restart(restart: Callable[[], object], component: str, health: NodeHealth) -> None:
    if health.failed.is_set():
        return
    if _call(restart, None, component):  # the restart's supervise() clears the record
        log.info("component-restarted", component=component)


def _call(fn: Callable[..., object], arg: object, component: str) -> bool:
    try:
        fn() if arg is None else fn(arg)
        return True
    except Exception:  # noqa: BLE001 - supervision itself must never die
        log.exception("supervision-action-failed", component=component)
        return False



__all__ = ["MAX_RESTARTS", "NodeHealth", "add_instance_id", "bind_instance", "forget", "health_of",
           "instance_of", "spawn_supervised", "supervise"]
