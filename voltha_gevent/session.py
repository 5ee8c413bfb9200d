"""This process's one Consul session: create, prove it alive, notice its end, destroy.

Every lock the node holds (membership record, leader key, ownership of items) is tied to
this session, and the node trusts the session only as long as its :class:`~voltha_gevent.
lease.Lease` runs. Two liveness signals go out every ``budget.heartbeat`` seconds, each on
its own schedule so a slow one never delays the other, from a thread of their own when the
client is real (:mod:`~voltha_gevent.heartbeat`: a busy event loop must not end a session):

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
from typing import Any, Protocol

import gevent
import gevent.event
import structlog

from .budget import FencingBudget
from .consul_api import ConsulAPI
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid
from .heartbeat import Heartbeats
from .lease import STALL_GRACE, Lease, now
from .retrying import Retrying

log = structlog.get_logger(__name__)

#: Default of ``max_loop_stall``: the heartbeat thread stops proving the session alive once
#: the event loop has not turned for this long (a wedged node must lose its items).
MAX_LOOP_STALL = 20.0


class SessionView(Protocol):
    """What a session-scoped component (the worker) may see of the node's session: its id
    and generation, whether it is live, its lease - and the one action it may take,
    declaring it lost (Consul said so, e.g. an owner lock answered "invalid session")."""

    session_id: str | None
    generation: int
    lease: Lease

    @property
    def live(self) -> bool: ...

    def mark_lost(self, session_id: str | None, reason: str) -> None: ...


class SessionState(Enum):
    """IDLE -> LIVE (created) -> LOST (invalid, or the lease ran out) | DESTROYED (by us)."""

    IDLE = "idle"
    LIVE = "live"
    LOST = "lost"
    DESTROYED = "destroyed"


class SessionKeeper:
    """Creates one session at a time and keeps its lease; ``generation`` counts sessions made.

    ``api`` serves create and destroy; the heartbeats use connections of their own (a
    timeout up to the lease: a late answer still counts): ``liveness_api``, shared, in
    greenlets of this hub, or - when ``make_liveness_api`` is given - a client that function
    builds inside the heartbeat thread, one per session.
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
        make_liveness_api: Callable[[], ConsulAPI] | None = None,
        max_loop_stall: float = MAX_LOOP_STALL,
    ) -> None:
        self.api = api
        self.liveness_api = liveness_api or api
        self.make_liveness_api = make_liveness_api
        self.max_loop_stall = max_loop_stall
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
        self.heartbeats: Heartbeats | None = None
        self._main_loop: Any = None

    @property
    def live(self) -> bool:
        return self.state is SessionState.LIVE

    @property
    def check_ttl(self) -> float:
        return self.budget.check_ttl

    # Create

    def create(self) -> str:
        """A new live session (retrying while Consul is unavailable); starts its heartbeats.

        A session declared lost is destroyed first: Consul may still count it alive (up to
        2 x TTL, longer across a Raft leader change) and its locks would hold up the items
        this node has already fenced.
        """
        self._join_greenlets()  # a lost session's heartbeats were only told to stop
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
        threaded = self.make_liveness_api is not None
        log.info("session-created", session=session_id, ttl=self.budget.session_ttl,
                 generation=self.generation, lease=round(self.budget.lease, 3),
                 heartbeat=round(self.budget.heartbeat, 3), heartbeat_thread=threaded)
        self._start_heartbeats(session_id)
        return session_id

    def _create_session(self, checks: list[str] | None) -> str:
        if self.check_ttl:  # a fresh pass: the lease counts from it
            self._send(self.api, "pass", "")
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
        self._send(self.api, "pass", "")

    # Liveness

    def _start_heartbeats(self, session_id: str) -> None:
        self._main_loop = gevent.get_hub().loop
        failing: dict[str, bool] = {}
        generation = self.generation

        def beat(api: ConsulAPI, signal: str) -> None:
            try:
                self._signal_once(api, session_id, generation, signal, failing)
            except Exception as exc:  # noqa: BLE001 - a broken beat cannot keep the lease
                log.error("heartbeat-crashed", signal=signal, error=repr(exc))
                self._in_main(self.mark_lost, session_id, f"heartbeat crashed: {exc!r}")

        signals = ("renew", "pass") if self.check_ttl else ("renew",)
        threaded = self.make_liveness_api is not None
        self.heartbeats = Heartbeats(
            beat, signals, self.budget.heartbeat, self.make_liveness_api or (lambda: self.liveness_api),
            threaded=threaded, max_loop_stall=self.max_loop_stall, name=self.name,
        ).start()

    def _send(self, api: ConsulAPI, signal: str, session_id: str) -> None:
        """One liveness signal; on success remember when it was sent."""
        sent = now()
        if signal == "pass":
            api.pass_check(self.check_id or "")
            self.passes += 1
        else:
            api.renew_session(session_id)
            self.renewals += 1
        self.confirmed[signal] = max(sent, self.confirmed.get(signal, sent))

    def _signal_once(self, api: ConsulAPI, session_id: str, generation: int, signal: str,
                     failing: dict[str, bool]) -> None:
        """Send one signal and act on its answer (in the heartbeat thread or greenlet).

        Under load an answer can take longer than a heartbeat; it still counts (from when it
        was sent) when it comes. A loss is handed to the main hub, never acted on here.
        """
        if not self._current(session_id):
            return
        try:
            self._send(api, signal, session_id)
        except SessionInvalid as exc:
            self._in_main(self.mark_lost, session_id, f"{signal}: {exc}")
            return
        except (ConsulUnavailable, ConsulRejected) as exc:
            if not failing.get(signal):
                log.warning("liveness-signal-failed", signal=signal, error=str(exc))
            failing[signal] = True
            if not self.lease.valid(generation):  # the deadline timer's twin, in case it lags
                self._in_main(self.mark_lost, session_id, self._ran_out_reason(0.0))
            return
        if failing.get(signal):
            log.info("liveness-signal-restored", signal=signal)
        failing[signal] = False
        if self._current(session_id) and len(self.confirmed) == (2 if self.check_ttl else 1):
            self.lease.extend(generation, min(self.confirmed.values()) + self.budget.lease)

    def _in_main(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` in the main hub: now when already there, else as its next callback."""
        if self._main_loop is None or gevent.get_hub().loop is self._main_loop:
            fn(*args)
        else:
            self._main_loop.run_callback_threadsafe(fn, *args)

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

    # Loss and destroy

    def mark_lost(self, session_id: str | None, reason: str) -> None:
        """Declare ``session_id`` lost (idempotent; ignores stale ids). Never blocks."""
        if not self._current(session_id):
            return
        self.state = SessionState.LOST
        self.losses += 1
        self.last_loss_reason = reason
        self.lease.end()
        if self.heartbeats is not None:
            self.heartbeats.halt()
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
        heartbeats, self.heartbeats = self.heartbeats, None
        if heartbeats is not None:
            heartbeats.stop()
