"""This process's one Consul session: create, renew, notice loss at once, destroy.

Every lock the node holds (membership record, leader key, ownership of items) is tied to
this session. The keeper guarantees that ``lost`` is set - and ``on_lost`` called, once per
session - as soon as either is true:

* Consul answers that the session is gone (renew 404, or an acquire says "invalid session");
* no renewal has succeeded for a whole TTL (Consul may still count it alive for up to 2 x
  TTL, but this node can no longer prove it, so it stops acting on its locks first).

Optionally the session is also tied to an agent TTL health check that this process keeps
passing every ``check_ttl / 3``: a crashed or frozen process then loses its session about
``check_ttl`` after its last pass instead of up to ``2 x session_ttl``. The same bound holds
on this side: once no pass has succeeded for a whole ``check_ttl`` (counted from when the
last successful pass was sent; the agent is dead, unreachable or this process was frozen),
the check may be critical and the session invalidated, so the session is declared lost at
once, without waiting for Consul to say so - Consul (serfHealth of a dead agent, the check
itself) can invalidate it much sooner than a whole session TTL.

Sessions use ``behavior=release``, not ``delete``: the leader epoch is the leader key's
``LockIndex``, which Consul bumps on every new holder of an existing key but restarts at 1
when the key is deleted and made anew - with ``delete`` every failover would reset the epoch
(seen on the mocked and the real agent). Released keys stay as unlocked entries: readers
count only entries that carry a ``Session``, and the leader prunes unlocked member records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from enum import Enum

import gevent
import gevent.event
import structlog

from .consul_api import ConsulAPI, Retrying
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid

log = structlog.get_logger(__name__)

#: Pause between renew attempts after a failure.
RENEW_RETRY_INTERVAL = 1.0


class SessionState(Enum):
    """IDLE -> LIVE (created) -> LOST (invalid or unrenewable) | DESTROYED (by us)."""

    IDLE = "idle"
    LIVE = "live"
    LOST = "lost"
    DESTROYED = "destroyed"


class SessionKeeper:
    """Creates and renews one session at a time; ``generation`` counts sessions made."""

    def __init__(
        self,
        api: ConsulAPI,
        retry: Retrying,
        *,
        name: str,
        ttl: int,
        lock_delay: float,
        check_ttl: float = 0.0,
        on_lost: Callable[[str, str], None] | None = None,
    ) -> None:
        self.api = api
        self.retry = retry
        self.name = name
        self.ttl = ttl
        self.lock_delay = lock_delay
        self.check_ttl = check_ttl
        self.on_lost = on_lost
        self.service_id = f"{name}-{uuid.uuid4().hex[:8]}"
        self.check_id: str | None = None
        self.session_id: str | None = None
        self.state = SessionState.IDLE
        self.generation = 0
        self.renewals = 0
        self.losses = 0
        self.last_renewal = 0.0
        self.last_pass = 0.0  # monotonic time the last successful check pass was sent
        self.renew_interval = ttl / 3.0
        self.lost = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    # -- create ------------------------------------------------------------------------

    def create(self) -> str:
        """A new live session (retrying while Consul is unavailable); starts renewing it.

        A session declared lost is destroyed first: Consul may still count it alive (up to
        2 x TTL, longer across a Raft leader change) and its locks would hold up the items
        this node has already fenced.
        """
        if self.session_id and self.state is SessionState.LOST:
            self._destroy_lost(self.session_id)
        checks: list[str] | None = None
        if self.check_ttl:
            self.retry.call(self._register_check, what="register-check")
            checks = ["serfHealth", self.check_id]  # type: ignore[list-item]
        session_id = self.retry.call(lambda: self._create_session(checks), what="create-session")
        self.session_id = session_id
        self.generation += 1
        self.state = SessionState.LIVE
        self.last_renewal = time.monotonic()
        self.lost.clear()
        log.info("session-created", session=session_id, ttl=self.ttl, generation=self.generation)
        self._spawn(self._renew_loop, session_id)
        if self.check_ttl:
            self._spawn(self._check_loop, session_id)
            self._spawn(self._check_deadline_loop, session_id)
        return session_id

    def _create_session(self, checks: list[str] | None) -> str:
        if self.check_ttl:  # a fresh pass: the check deadline counts from it
            sent = time.monotonic()
            self.api.pass_check(self.check_id or "")
            self.last_pass = sent
        return self.api.create_session(
            name=self.name, ttl=self.ttl, behavior="release", lock_delay=self.lock_delay, checks=checks
        )

    def _destroy_lost(self, session_id: str) -> None:
        try:
            self.retry.call(lambda: self.api.destroy_session(session_id), what="destroy-lost-session")
            log.info("lost-session-destroyed", session=session_id)
        except ConsulRejected as exc:
            log.warning("session-destroy-failed", session=session_id, error=str(exc))

    def _register_check(self) -> None:
        self.check_id = self.api.register_ttl_check(self.service_id, self.name, self.check_ttl)
        sent = time.monotonic()
        self.api.pass_check(self.check_id)
        self.last_pass = sent

    def _spawn(self, fn: Callable[[str], None], session_id: str) -> None:
        self._greenlets = [g for g in self._greenlets if not g.dead]
        greenlet = gevent.spawn(fn, session_id)
        greenlet.name = f"{fn.__name__}:{session_id[:8]}"
        self._greenlets.append(greenlet)

    # -- renew -------------------------------------------------------------------------

    def _renew_loop(self, session_id: str) -> None:
        while self._current(session_id):
            if self.lost.wait(self.renew_interval):
                return
            while self._current(session_id):
                try:
                    self.api.renew_session(session_id)
                except SessionInvalid as exc:
                    self.mark_lost(session_id, f"renew: {exc}")
                    return
                except (ConsulUnavailable, ConsulRejected) as exc:
                    if time.monotonic() - self.last_renewal >= self.ttl:
                        self.mark_lost(session_id, f"no renewal for a whole TTL: {exc}")
                        return
                    log.warning("session-renew-failed", session=session_id, error=str(exc))
                    if self.lost.wait(RENEW_RETRY_INTERVAL):
                        return
                    continue
                self.renewals += 1
                self.last_renewal = time.monotonic()
                break

    def _check_loop(self, session_id: str) -> None:
        interval = max(0.2, self.check_ttl / 3.0)
        while self._current(session_id):
            sent = time.monotonic()
            try:
                self.api.pass_check(self.check_id or "")
                self.last_pass = sent
            except (ConsulUnavailable, ConsulRejected) as exc:
                log.warning("health-check-pass-failed", check=self.check_id, error=str(exc))
            if self.lost.wait(interval):
                return

    def _check_deadline_loop(self, session_id: str) -> None:
        """Declare the session lost once no check pass has succeeded for a whole check TTL."""
        while self._current(session_id):
            remaining = self.last_pass + self.check_ttl - time.monotonic()
            if remaining <= 0:
                self.mark_lost(session_id, f"no health check pass for a whole check TTL ({self.check_ttl}s)")
                return
            if self.lost.wait(remaining):
                return

    def _current(self, session_id: str) -> bool:
        return self.session_id == session_id and self.state is SessionState.LIVE

    # -- loss and destroy --------------------------------------------------------------

    def mark_lost(self, session_id: str | None, reason: str) -> None:
        """Declare ``session_id`` lost (idempotent; ignores stale ids)."""
        if session_id is None or not self._current(session_id):
            return
        self.state = SessionState.LOST
        self.losses += 1
        log.error("session-lost", session=session_id, reason=reason)
        try:
            if self.on_lost is not None:
                self.on_lost(session_id, reason)  # halts everything before anyone re-joins
        finally:
            self.lost.set()

    def destroy(self) -> None:
        """Destroy the session (releasing its locks at once) and the health check; best effort."""
        session_id = self.session_id
        self.state = SessionState.DESTROYED
        self.lost.set()
        self._join_greenlets()
        if session_id:
            try:
                self.api.destroy_session(session_id)
                log.info("session-destroyed", session=session_id)
            except (ConsulUnavailable, ConsulRejected) as exc:
                log.warning("session-destroy-failed", session=session_id, error=str(exc))
        if self.check_id:
            try:
                self.api.deregister_service(self.service_id)
            except (ConsulUnavailable, ConsulRejected) as exc:
                log.warning("check-deregister-failed", service=self.service_id, error=str(exc))
            self.check_id = None

    def _join_greenlets(self) -> None:
        greenlets, self._greenlets = self._greenlets, []
        current = gevent.getcurrent()
        gevent.killall([g for g in greenlets if g is not current], block=True, timeout=2.0)
