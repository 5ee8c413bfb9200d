"""The coordinator: one per process, owns all Consul traffic for coordination.

It composes the duties that live for one session - the membership record, the election
and any session-scoped duties the embedding adds (the worker) - and owns their greenlets:

1. create a session (retrying while Consul is down) and start the duties with it;
2. wait until the session is lost or shutdown is asked;
3. on loss, **at once** (in the coordinator's own greenlet): halt the leader, tell every
   duty the session ended so it stops acting on its locks (the worker fences its work),
   stop the membership; then go back to 1 with a new session;
4. on shutdown: the same halts, then destroy the session (so the leader lock and the
   membership record go at once, not after a TTL) and stop every greenlet.

Every halt - loss, shutdown, a crash of the session loop, :meth:`Coordinator.abandon` -
goes through :meth:`Coordinator._halt`; every duty implements :class:`SessionDuty`.

Nothing keeps acting on locks of a dead session: every duty is halted before a new session
exists. The coordinator never monkey-patches; the CLI entry point does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import gevent
import gevent.event
import gevent.lock
import structlog

from .client_settings import CALL_TIMEOUT, SESSION_CALL_TIMEOUT, liveness_call_timeout, long_poll_timeout
from .config import Config
from .consul_api import ClientFactory, ConsulAPI
from .consul_api import client_factory as real_client_factory
from .election import Election
from .entries import KVEntry
from .errors import ConsulRejected, Stopped
from .keys import Keys
from .leader_state import LeaderContext, LeaderSettings
from .lock import LockSession
from .membership import MemberParseStats, MemberRecord, MembershipKeeper, parse_members
from .retrying import BACKOFF, Retrying
from .session import SessionKeeper
from .supervision import LOOP_KILL_TIMEOUT, supervise
from .watch import Watch, WatchFactory

log = structlog.get_logger(__name__)


class SessionDuty(Protocol):
    """Work that lives for one session at a time (the worker, value updates): every duty
    implements all four; the coordinator halts them all through one path."""

    def session_started(self, session_id: str) -> None:
        """A new session is live: start acting with it."""

    def session_ended(self, *, lost: bool) -> None:
        """Stop acting on every lock of the session now; called before any new session.
        ``lost``: the session is gone, so nothing is released (its locks went with it)."""

    def abandon(self) -> None:
        """Stop at once as a crash would: no handler runs, nothing is said to Consul (tests)."""

    def keeps_locks(self) -> bool:
        """True while some work could not be stopped: its locks must outlive a shutdown."""


class Coordinator:
    """Session, membership and leader election for one instance."""

    def __init__(
        self,
        config: Config,
        leader_class: Callable[[LeaderContext], Any] | None = None,
        *,
        client_factory: ClientFactory | None = None,
        duties: tuple[SessionDuty, ...] = (),
    ) -> None:
        self.config = config
        self.keys = Keys(config.prefix)
        self.instance_id = config.instance_id
        self.leader_class = leader_class
        factory = client_factory or real_client_factory(config.client_settings())
        self._stop = gevent.event.Event()
        self.retry = Retrying(stop=self._stop)
        denied = self.retry.note_denied  # every 403, wherever met, is logged and shown on /health
        self.api = ConsulAPI(factory(CALL_TIMEOUT), on_denied=denied)
        self.watch_api = ConsulAPI(factory(long_poll_timeout(config.watch_wait)), on_denied=denied)
        #: Every watch of the coordinator and its session's locks is made here.
        self.watch_factory = WatchFactory(self.watch_api, config.watch_wait)
        self.session_api = ConsulAPI(factory(SESSION_CALL_TIMEOUT), on_denied=denied)
        budget = config.budget()
        liveness_timeout = liveness_call_timeout(budget.lease)
        # A real client may run in the heartbeat thread (a client of its own per session,
        # made there); the in-memory fake is not thread-safe: its heartbeats stay greenlets.
        threaded = client_factory is None

        def liveness_api() -> ConsulAPI:
            return ConsulAPI(factory(liveness_timeout), on_denied=denied)

        self.session = SessionKeeper(
            self.session_api,
            self.retry,
            name=f"voltha-{config.instance_id}",
            budget=budget,
            liveness_api=None if threaded else liveness_api(),
            make_liveness_api=liveness_api if threaded else None,
            max_loop_stall=config.max_loop_stall,
        )
        self.record = MemberRecord(
            instance_id=config.instance_id,
            internal_host=config.internal_host,
            external_host=config.advertised_host,
            rest_port=config.rest_port,
            capacity=config.capacity,
            started_at=time.time(),
        )
        self.duties: list[SessionDuty] = list(duties)
        self.membership: MembershipKeeper | None = None
        self.election: Election | None = None
        self.member_stats = MemberParseStats()
        self._members: dict[str, MemberRecord] = {}
        #: When this node last saw the member set change (a new leader's first soak counts from it)
        self.members_changed_at = 0.0
        self._members_watch = self.watch_factory.tree(self.keys.members, self._on_members,
                                                      name="members-view")
        self._leader_changed = gevent.event.Event()
        self._main: gevent.Greenlet | None = None
        self._ended_generation = 0
        self._transition = gevent.lock.RLock()
        self.started = False

    # Lifecycle

    def add_duty(self, duty: SessionDuty) -> None:
        """Register a session-scoped duty; only before :meth:`start`."""
        if self.started:
            raise RuntimeError("add duties before start()")
        self.duties.append(duty)

    def start(self) -> Coordinator:
        """Start the coordinator's greenlets; idempotent."""
        if not self.started:
            self.started = True
            self._stop.clear()
            self._members_watch.start()
            self._start_main()
            log.info("coordinator-started", instance_id=self.instance_id, prefix=self.config.prefix)
        return self

    def shutdown(self, timeout: float = 5.0) -> None:
        """Halt the leader and duties, destroy the session, stop every greenlet. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._end_session(lost=False)
        if any(duty.keeps_locks() for duty in self.duties):
            # Destroying the session would release the owner lock of work that still runs.
            # Stop proving the session alive instead: Consul drops it one check TTL later
            # (plus lock-delay before anyone else takes the locks), by which time a process
            # that exits after stop() has taken the stuck work with it.
            log.critical("stopping-with-stuck-work", instance_id=self.instance_id)
            self.session.abandon()
        else:
            self.session.destroy()
        self._members_watch.stop()
        main, self._main = self._main, None
        if main is not None and main is not gevent.getcurrent():
            main.kill(block=True, timeout=timeout)
        log.info("coordinator-stopped", instance_id=self.instance_id)

    def abandon(self) -> None:
        """Stop every greenlet at once without a word to Consul, as a crash would (tests).

        The session, its locks and the membership record stay in Consul until the session
        expires or is invalidated; work is killed without ``on_revoked``.
        """
        self._stop.set()
        self._ended_generation = self.session.generation
        self.session.abandon()
        self._halt(lost=True, crash=True)
        self._members_watch.stop()
        main, self._main = self._main, None
        if main is not None and main is not gevent.getcurrent():
            main.kill(block=True, timeout=LOOP_KILL_TIMEOUT)
        log.warning("coordinator-abandoned", instance_id=self.instance_id)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _start_main(self) -> None:
        self._main = gevent.spawn(self._run)
        self._main.name = "coordinator"
        supervise(self._main, "coordinator", restart=self._restart_main)

    def _restart_main(self) -> None:
        """Supervision: the session loop crashed; halt what it started and run it again."""
        if self._stop.is_set():
            return
        self.session.mark_lost(self.session.session_id, "coordinator crashed")
        self._end_session(lost=True)
        self._start_main()

    # The session loop

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._transition:
                try:
                    session_id = self.session.create()
                except Stopped:
                    return
                except ConsulRejected as exc:
                    # A configuration problem (wrong scheme, bad request): report it and keep
                    # trying at the slowest step, so fixing Consul needs no restart.
                    self.retry.stats.errors += 1
                    self.retry.stats.last_error = str(exc)
                    log.error("session-create-rejected", error=str(exc))
                    if self._stop.wait(BACKOFF.slowest):
                        return
                    continue
                self._start_session(session_id)
            gevent.wait([self.session.lost, self._stop], count=1)
            if not self._stop.is_set():
                self._end_session(lost=True)
                log.info("rejoining", instance_id=self.instance_id)

    def _start_session(self, session_id: str) -> None:
        locks = LockSession(self.api, self.watch_factory, session_id, self.config.lock_delay,
                            on_session_invalid=self._session_invalid(session_id))
        self.membership = MembershipKeeper(locks, self.keys, self.record)
        self.election = Election(locks, self.keys.leader, self.instance_id,
                                 make_leader=self._make_leader if self.leader_class else None,
                                 on_change=self._leader_changed.set)
        self.membership.start()
        self.election.start()
        for duty in self.duties:
            duty.session_started(session_id)

    def _end_session(self, *, lost: bool) -> None:
        """Halt everything that acts on the current session's locks; once per session.

        Serialised with session creation by ``_transition``: a new session's duties never
        start while the old ones are still being halted (halting yields to other greenlets).
        """
        with self._transition:
            if self._ended_generation == self.session.generation:
                return
            self._ended_generation = self.session.generation
            self._halt(lost=lost)

    def _halt(self, *, lost: bool, crash: bool = False) -> None:
        """The one halting path: the leader and the campaign first, then every duty, the
        membership record last. ``lost``: the session is gone (nothing is released);
        ``crash``: as a crash would (:meth:`abandon`), duties stop without their handlers."""
        if self.election is not None:
            self.election.stop(release=not lost)
        for duty in self.duties:
            try:
                if crash:
                    duty.abandon()
                else:
                    duty.session_ended(lost=lost)
            except Exception as exc:  # noqa: BLE001 - one duty's failure must not skip the others
                log.error("duty-stop-failed", duty=type(duty).__name__, error=repr(exc), exc_info=True)
        if self.membership is not None:
            self.membership.stop(release=False)

    def _session_invalid(self, session_id: str) -> Callable[[str], None]:
        return lambda detail: self.session.mark_lost(session_id, f"consul: {detail}")

    def _make_leader(self, epoch: int) -> Any:
        assert self.leader_class is not None
        session_id = self.session.session_id or ""
        return self.leader_class(LeaderContext(
            api=self.api, watch_api=self.watch_api, keys=self.keys, retry=self.retry, epoch=epoch,
            session_id=session_id, settings=LeaderSettings.from_config(self.config),
            give_up=lambda reason: self.session.mark_lost(session_id, reason),
            members_changed_at=self.members_changed_at,
        ))

    def set_draining(self, draining: bool) -> None:
        """Say in this node's member record whether it hands its items over (the leader then
        assigns it none); kept for later sessions of this process, gone with the process."""
        self.record = replace(self.record, draining=draining)
        if self.membership is not None:
            self.membership.update(self.record)
        log.info("draining" if draining else "undrained", instance_id=self.instance_id)

    def advertise_rest_port(self, port: int) -> None:
        """Publish the port this node's HTTP endpoint actually bound (``rest_port`` 0 picks a
        free one): peers forward requests to the record's port, so it must be the bound one."""
        self.record = replace(self.record, rest_port=port)
        if self.membership is not None:
            self.membership.update(self.record)

    # Members view

    def _on_members(self, entries: list[KVEntry]) -> None:
        members = parse_members(self.keys, entries, self.member_stats)
        if set(members) != set(self._members):
            log.info("membership-changed", members=sorted(members))
            self.members_changed_at = time.monotonic()
        self._members = members

    def members(self) -> dict[str, MemberRecord]:
        """Live members as last seen (instance id -> record)."""
        return dict(self._members)

    # State

    @property
    def session_id(self) -> str | None:
        return self.session.session_id if self.session.live else None

    @property
    def is_leader(self) -> bool:
        return bool(self.election and self.election.is_leader and self.session.live)

    @property
    def leader_id(self) -> str | None:
        return self.election.leader_id if self.election is not None else None

    @property
    def epoch(self) -> int:
        return self.election.epoch if self.election is not None else 0

    @property
    def leader(self) -> Any:
        return self.election.leader if self.election is not None else None

    @property
    def healthy(self) -> bool:
        """Session live and membership record held: what ``/health`` reports."""
        return bool(self.session.live and self.membership and self.membership.held)

    def wait_for_leader(self, timeout: float | None = None) -> str | None:
        """Block until some instance leads (or ``timeout``); its id, or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.leader_id is None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._leader_changed.clear()
            if self.leader_id is None:
                self._leader_changed.wait(remaining)
        return self.leader_id

    def watches(self) -> list[Watch]:
        """Every watch of the coordinator and of the current session's duties."""
        found = [self._members_watch]
        for lock in (self.membership and self.membership.lock, self.election and self.election.lock):
            if lock:
                found.append(lock.watch)
        leader = self.leader
        if leader is not None:
            found.extend(leader.watches)
        return found
