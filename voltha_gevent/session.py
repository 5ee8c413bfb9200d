"""This process's one Consul session: create, prove it alive, notice its end, destroy.

Every lock the node holds (membership record, leader key, ownership of items) is tied to
this session, and the node trusts the session only as long as its :class:`~voltha_gevent.
lease.Lease` runs. Two liveness signals go out every ``budget.heartbeat`` seconds, each in
its own greenlet so a slow one never delays the other:

* a **pass of the agent TTL check** tied to the session (when ``check_ttl`` is set) - a
  crashed or frozen process then loses its session about ``check_ttl`` after its last pass;
* a **session renew**, which the agent forwards to the servers - the proof that the servers
  still hear this node. A host whose agent is cut off from the servers keeps passing its
  check locally, yet the servers invalidate its session (serfHealth); only a server-side
  signal tells the node.

Each confirmed signal pushes the lease to ``min(sent time of the last confirmed pass, sent
time of the last confirmed renew) + budget.lease``. The session is declared **lost** - and
``lost`` set, once per session - as soon as any of these is true:

* the lease ran out (the deadline timer, or the loop found it late after a stall);
* Consul answers that the session is gone (renew 404, an acquire says "invalid session").

Declaring the session lost ends the lease at once (no :class:`~voltha_gevent.lease.Ownership`
is valid any more) and sets ``lost``; the coordinator's own greenlet then halts every duty.
Nothing is halted in the greenlet that noticed: that one may be among those being halted.

Sessions use ``behavior=release``, not ``delete``: the leader epoch is the leader key's
``LockIndex``, which Consul bumps on every new holder of an existing key but restarts at 1
when the key is deleted and made anew (seen on the mocked and the real agent). Released keys
stay as unlocked entries: readers count only entries that carry a ``Session``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from enum import Enum

import gevent
import gevent.event
import gevent.pool
import structlog

from .budget import FencingBudget
from .consul_api import ConsulAPI, Retrying
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid
from .lease import STALL_GRACE, Lease, now
from .supervision import supervise

log = structlog.get_logger(__name__)

#: Signals of one kind awaiting their answer at once (a slow agent must not delay the next).
SIGNALS_IN_FLIGHT = 3


class SessionState(Enum):
    """IDLE -> LIVE (created) -> LOST (invalid, or the lease ran out) | DESTROYED (by us)."""

    IDLE = "idle"
    LIVE = "live"
    LOST = "lost"
    DESTROYED = "destroyed"


class SessionKeeper:
    """Creates one session at a time and keeps its lease; ``generation`` counts sessions made.

    ``api`` serves create and destroy; ``liveness_api`` the heartbeats, on connections of
    their own (its timeout can be up to the lease: a late answer still counts).
    """

    def __init__(
        self,
        api: ConsulAPI,
        retry: Retrying,
        *,
        name: str,
        budget: FencingBudget,
        lease: Lease | None = None,
        liveness_api: ConsulAPI | None = None,
    ) -> None:
        self.api = api
        self.liveness_api = liveness_api or api
        self.retry = retry
        self.name = name
        self.budget = budget
        self.lease = lease or Lease()
        self.lease.on_expired(self._lease_ran_out)
        self.service_id = f"{name}-{uuid.uuid4().hex[:8]}"
        self.check_id: str | None = None
        self.session_id: str | None = None
        self.state = SessionState.IDLE
        self.generation = 0
        self.renewals = 0
        self.passes = 0
        self.losses = 0
        self.last_loss_reason: str | None = None
        self.confirmed: dict[str, float] = {}  # signal -> send time of its last confirmed instance
        self.lost = gevent.event.Event()
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    @property
    def check_ttl(self) -> float:
        return self.budget.check_ttl

    # -- create ------------------------------------------------------------------------

    def create(self) -> str:
        """A new live session (retrying while Consul is unavailable); starts its heartbeats.

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
        self.confirmed = {}
        session_id = self.retry.call(lambda: self._create_session(checks), what="create-session")
        self.session_id = session_id
        self.generation += 1
        self.state = SessionState.LIVE
        self.lost.clear()
        self.lease.begin(self.generation, min(self.confirmed.values()) + self.budget.lease)
        log.info("session-created", session=session_id, ttl=self.budget.session_ttl,
                 generation=self.generation, lease=round(self.budget.lease, 3),
                 heartbeat=round(self.budget.heartbeat, 3))
        self._spawn(self._heartbeat, session_id, "renew")
        if self.check_ttl:
            self._spawn(self._heartbeat, session_id, "pass")
        return session_id

    def _create_session(self, checks: list[str] | None) -> str:
        if self.check_ttl:  # a fresh pass: the lease counts from it
            self._send("pass", "")
        sent = now()
        session_id = self.api.create_session(
            name=self.name, ttl=int(self.budget.session_ttl), behavior="release",
            lock_delay=self.budget.lock_delay, checks=checks,
        )
        self.confirmed["renew"] = sent
        return session_id

    def _destroy_lost(self, session_id: str) -> None:
        try:
            self.retry.call(lambda: self.api.destroy_session(session_id), what="destroy-lost-session")
            log.info("lost-session-destroyed", session=session_id)
        except ConsulRejected as exc:
            log.warning("session-destroy-failed", session=session_id, error=str(exc))

    def _register_check(self) -> None:
        self.check_id = self.api.register_ttl_check(self.service_id, self.name, self.check_ttl)
        self._send("pass", "")

    def _spawn(self, fn: Callable[..., None], *args: str) -> None:
        self._greenlets = [g for g in self._greenlets if not g.dead]
        greenlet = gevent.spawn(fn, *args)
        greenlet.name = f"{fn.__name__}:{'/'.join(a[:8] for a in args)}"
        self._greenlets.append(greenlet)
        # a crashed heartbeat cannot keep the lease: give the session up, the next one restarts it
        supervise(greenlet, f"heartbeat-{args[-1]}",
                  on_crash=lambda error: self.mark_lost(args[0], f"heartbeat crashed: {error!r}"))

    # -- liveness ----------------------------------------------------------------------

    def _send(self, signal: str, session_id: str) -> None:
        """One liveness signal; on success remember when it was sent."""
        sent = now()
        if signal == "pass":
            self.liveness_api.pass_check(self.check_id or "")
            self.passes += 1
        else:
            self.liveness_api.renew_session(session_id)
            self.renewals += 1
        self.confirmed[signal] = max(sent, self.confirmed.get(signal, sent))

    def _heartbeat(self, session_id: str, signal: str) -> None:
        """Send ``signal`` every heartbeat, on time even while earlier ones await their answer.

        Under load an answer can take longer than a heartbeat; it still counts (from when it
        was sent) when it comes, and the next signal does not wait for it.
        """
        in_flight = gevent.pool.Pool(SIGNALS_IN_FLIGHT)
        failing = [False]
        try:
            while self._current(session_id):
                if not in_flight.full():
                    in_flight.spawn(self._signal_once, session_id, signal, failing)
                if self.lost.wait(self.budget.heartbeat):
                    return
        finally:
            in_flight.kill(block=False)

    def _signal_once(self, session_id: str, signal: str, failing: list[bool]) -> None:
        try:
            self._send(signal, session_id)
        except SessionInvalid as exc:
            self.mark_lost(session_id, f"{signal}: {exc}")
            return
        except (ConsulUnavailable, ConsulRejected) as exc:
            if not failing[0]:
                log.warning("liveness-signal-failed", signal=signal, error=str(exc))
            failing[0] = True
            if not self.lease.valid(self.generation):  # the deadline timer's twin, in case it lags
                self.mark_lost(session_id, self._ran_out_reason(0.0))
            return
        if failing[0]:
            log.info("liveness-signal-restored", signal=signal)
        failing[0] = False
        if self._current(session_id) and len(self.confirmed) == (2 if self.check_ttl else 1):
            self.lease.extend(self.generation, min(self.confirmed.values()) + self.budget.lease)

    def _lease_ran_out(self, overdue: float) -> None:
        """The lease's deadline passed (called in the hub): declare the session lost."""
        gevent.spawn(self.mark_lost, self.session_id, self._ran_out_reason(overdue))

    def _ran_out_reason(self, overdue: float) -> str:
        last = min(self.confirmed.values()) if self.confirmed else None
        silent = f"{now() - last:.2f}s" if last is not None else "ever"
        reason = f"lease ran out: no confirmed liveness signal for {silent} (lease {self.budget.lease:.2f}s)"
        if overdue > STALL_GRACE:
            reason += f", found {overdue:.2f}s late: the process was stalled"
        return reason

    def _current(self, session_id: str | None) -> bool:
        return session_id is not None and self.session_id == session_id and self.state is SessionState.LIVE

    # -- loss and destroy --------------------------------------------------------------

    def mark_lost(self, session_id: str | None, reason: str) -> None:
        """Declare ``session_id`` lost (idempotent; ignores stale ids). Never blocks."""
        if not self._current(session_id):
            return
        self.state = SessionState.LOST
        self.losses += 1
        self.last_loss_reason = reason
        self.lease.end()
        log.error("session-lost", session=session_id, reason=reason)
        self.lost.set()

    def destroy(self) -> None:
        """Destroy the session (releasing its locks at once) and the health check; best effort."""
        session_id = self.session_id
        self.state = SessionState.DESTROYED
        self.lease.end()
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

    def abandon(self) -> None:
        """Stop every greenlet without a word to Consul, as a crash would (tests)."""
        self.state = SessionState.DESTROYED
        self.lease.end()
        self.lost.set()
        self._join_greenlets()

    def _join_greenlets(self) -> None:
        greenlets, self._greenlets = self._greenlets, []
        current = gevent.getcurrent()
        gevent.killall([g for g in greenlets if g is not current], block=True, timeout=2.0)
