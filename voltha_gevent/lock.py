"""A Consul lock held by the session: acquire, keep, and notice at once when it is gone.

The recipe behind membership and election (as kazoo's election reuses its lock), built as
kazoo builds its ``Lock(client, path, identifier)``: ``SessionLock(session, key, value)``,
where :class:`LockSession` is what every lock of one session shares. One greenlet watches
the key with a blocking query and acts on the latest state:

* key free (absent, or no ``Session``): try ``acquire``; a refusal on a free key is
  Consul's lock-delay, so wait ``lock_delay`` and try again;
* key held by our session: HELD - ``on_acquired(entry)`` fires once per acquisition, with
  the entry whose ``LockIndex`` is the epoch of this holding;
* key held by another session: WAITING - ``on_holder(entry)`` reports who; nothing is
  polled, the blocking query wakes us when it changes.

Losing the lock (the key was deleted, released or taken over) calls ``on_lost()`` before
anything else happens. If Consul answers that the session is invalid, ``on_session_invalid``
is called and the lock stops: the session keeper then declares the session lost. Stopping
(``stop(release=True)``) releases the key when held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import gevent
import gevent.event
import structlog

from .consul_api import ConsulAPI
from .entries import KVEntry
from .errors import ConsulRejected, ConsulUnavailable, PermissionDenied, SessionInvalid
from .retrying import Backoff
from .supervision import LOOP_KILL_TIMEOUT, spawn_supervised
from .watch import WatchFactory

log = structlog.get_logger(__name__)

#: Pause after a failed acquire call (Consul unreachable): one second, every time (the key's
#: watch wakes the lock sooner when the key changes); a 403 waits the slowest step.
ACQUIRE_BACKOFF = Backoff(schedule=(1.0,))


class LockState(Enum):
    """WAITING (not held) <-> HELD; STOPPED once stopped or the session died."""

    WAITING = "waiting"
    HELD = "held"
    STOPPED = "stopped"


@dataclass(frozen=True)
class LockSession:
    """What every lock of one session shares (kazoo's ``client``).

    ``api`` acquires and releases, ``watches`` builds each key's watch, ``lock_delay`` is
    Consul's (a refused acquire on a free key waits it out), and ``on_session_invalid`` is
    told when Consul answers that ``session_id`` is gone.
    """

    api: ConsulAPI
    watches: WatchFactory
    session_id: str
    lock_delay: float
    on_session_invalid: Callable[[str], None] | None = None


class SessionLock:
    """Hold ``key`` with the session and value ``value`` for as long as possible."""

    def __init__(
        self,
        session: LockSession,
        key: str,
        value: bytes | str,
        *,
        name: str,
        on_acquired: Callable[[KVEntry], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        on_holder: Callable[[KVEntry | None], None] | None = None,
    ) -> None:
        self.api = session.api
        self.key = key
        self.value = value
        self.session_id = session.session_id
        self.lock_delay = session.lock_delay
        self.name = name
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.on_holder = on_holder
        self.on_session_invalid = session.on_session_invalid
        self.state = LockState.WAITING
        self.entry: KVEntry | None = None
        self.acquisitions = 0
        self._changed = gevent.event.Event()
        self._stop = gevent.event.Event()
        self.watch = session.watches.key(key, self._on_entry, name=f"{name}-watch")
        self._greenlet: gevent.Greenlet | None = None

    @property
    def held(self) -> bool:
        return self.state is LockState.HELD

    def start(self) -> SessionLock:
        if self._greenlet is None:
            self.watch.start()
            self._greenlet = spawn_supervised(self._run, self.name, self._restart)
        return self

    def _restart(self) -> None:
        """Supervision: the loop crashed; run it again unless stopped meanwhile."""
        if not self._stop.is_set():
            self._greenlet = spawn_supervised(self._run, self.name, self._restart)
            self._changed.set()

    def stop(self, *, release: bool = False, timeout: float = LOOP_KILL_TIMEOUT) -> None:
        """Stop watching; with ``release`` give the key back if we hold it. Idempotent."""
        was_held = self.held
        self._stop.set()
        self.state = LockState.STOPPED
        self.watch.stop(timeout)
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=True, timeout=timeout)
        if release and was_held:
            try:
                self.api.release(self.key, self.session_id)
            except (ConsulUnavailable, ConsulRejected, SessionInvalid) as exc:
                log.warning("lock-release-failed", lock=self.name, error=str(exc))

    def update_value(self, value: bytes | str) -> None:
        """Change the value; re-acquiring with our own session rewrites it in place."""
        self.value = value
        self._changed.set()

    def _on_entry(self, entry: KVEntry | None) -> None:
        self.entry = entry
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            self._changed.clear()
            retry_in = self._step(self.entry)
            if retry_in is not None and not self._changed.wait(retry_in):
                self._changed.set()

    def _step(self, entry: KVEntry | None) -> float | None:
        """Act on the latest state; a number means "look again after that many seconds"."""
        holder = entry.session if entry is not None else None
        if holder == self.session_id:
            self._became_held(entry)  # type: ignore[arg-type]
            if entry is not None and entry.value != _as_bytes(self.value):
                return self._try_acquire()
            return None
        if self.state is LockState.HELD:
            self.state = LockState.WAITING
            log.warning("lock-lost", lock=self.name, key=self.key, holder=holder)
            if self.on_lost is not None:
                self.on_lost()
        if self.on_holder is not None:
            self.on_holder(entry if holder else None)
        if holder:
            return None
        return self._try_acquire()

    def _became_held(self, entry: KVEntry) -> None:
        if self.state is not LockState.HELD:
            self.state = LockState.HELD
            self.acquisitions += 1
            log.info("lock-acquired", lock=self.name, key=self.key, lock_index=entry.lock_index)
            if self.on_acquired is not None:
                self.on_acquired(entry)

    def _try_acquire(self) -> float | None:
        try:
            if self.api.acquire(self.key, self.value, self.session_id):
                return None  # the watch delivers the held entry
            return max(self.lock_delay, 0.1)
        except SessionInvalid as exc:
            self.state = LockState.STOPPED
            self._stop.set()
            if self.on_session_invalid is not None:
                self.on_session_invalid(str(exc))
            return None
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("lock-acquire-failed", lock=self.name, error=str(exc))
            return ACQUIRE_BACKOFF.step(1, slowest=isinstance(exc, PermissionDenied))


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


__all__ = ["ACQUIRE_BACKOFF", "LockSession", "LockState", "SessionLock"]
