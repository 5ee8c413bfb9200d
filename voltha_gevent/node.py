"""The embedding facade: one :class:`Node` per process runs coordinator, leader and worker.

::

    from gevent import monkey; monkey.patch_all()   # the application's job, first thing
    import voltha_gevent

    node = voltha_gevent.Node(config, on_assigned=start_device_group, on_revoked=stop_device_group)
    node.start()
    node.wait_settled(30)      # this node runs exactly what it is assigned
    ...
    node.stop()

The library never monkey-patches. With a real Consul client it needs the socket module
patched (python-consul2 uses ``requests``, whose blocking sockets would otherwise stall every
greenlet), and :meth:`Node.start` fails with :class:`NotMonkeyPatched` when it is not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.monkey
import structlog

from . import supervision
from .config import Config
from .consul_api import ClientFactory
from .coordinator import Coordinator
from .errors import VolthaError
from .http import HttpEndpoint
from .leader import Leader
from .leader_state import LeaderContext
from .lease import Lease, Ownership
from .lifecycle import StartStop
from .membership import MemberRecord
from .metrics import LeaderFigures, NodeMetricsView
from .revocation import RevokeBarrier
from .seed import seed_workload
from .value_updates import attach as attach_value_updates
from .watch import WatchStats
from .worker import AssignmentHandler, CallbackHandler, Worker, WorkerSettings

if TYPE_CHECKING:
    from .northbound import RequestDispatcher
    from .northbound.local import Handler as RequestHandler

log = structlog.get_logger(__name__)

#: How often :meth:`Node.drain` looks whether this node still holds an item (seconds).
DRAIN_RECHECK = 0.1


class NotMonkeyPatched(VolthaError):
    """gevent's monkey-patching is required and was not done."""

    template = "{detail}"


def _ignore_assigned(item: str, value: bytes | None) -> None:
    """Default handler: nothing to start."""


def _ignore_revoked(item: str) -> None:
    """Default handler: nothing to stop."""


class Node(StartStop):
    """A member of the cluster: session, membership, election, leader duties and work."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        on_assigned: Callable[[str, bytes | None], None] | None = None,
        on_revoked: Callable[[str], None] | None = None,
        handler: AssignmentHandler | None = None,
        client_factory: ClientFactory | None = None,
        leader_class: Callable[[LeaderContext], Any] = Leader,
        http: tuple[str, int] | None = None,
        value_updates: bool | None = None,
    ) -> None:
        """``http=(bind, port)``: serve ``/health``, ``/status``, ``/metrics`` (and routes mounted
        on :attr:`http` before :meth:`start`) from ``start()`` on; port 0 picks a free one, and
        the member record advertises the bound port. ``value_updates``: see
        :mod:`voltha_gevent.value_updates` (None: only when the handler has ``on_updated``)."""
        if handler is not None and (on_assigned or on_revoked):
            raise ValueError("pass either handler or on_assigned/on_revoked, not both")
        self.config = config or Config.load()
        self._real_consul = client_factory is None
        self.coordinator = Coordinator(self.config, leader_class, client_factory=client_factory)
        self.handler = handler or CallbackHandler(
            on_assigned or _ignore_assigned, on_revoked or _ignore_revoked
        )
        coordinator = self.coordinator
        self.worker = Worker(coordinator.api, coordinator.watch_api, coordinator.keys,
                             coordinator.instance_id, coordinator.session, self.handler,
                             WorkerSettings.from_config(self.config))
        coordinator.add_duty(self.worker)
        self.worker.values = attach_value_updates(self.worker, value_updates)
        if self.worker.values is not None:
            coordinator.add_duty(self.worker.values)
        self._seeder: gevent.Greenlet | None = None
        self._dispatcher: RequestDispatcher | None = None
        #: What ``/metrics`` shows of this node (:func:`voltha_gevent.metrics.render` takes it).
        self.metrics_view = self._metrics_view()
        #: The node's own HTTP endpoint (``http=`` or :meth:`serve_http`), else None.
        self.http: HttpEndpoint | None = HttpEndpoint(self, *http) if http is not None else None
        self._http_serving = False

    def start(self) -> Node:
        if self._real_consul and not gevent.monkey.is_module_patched("socket"):
            raise NotMonkeyPatched(
                "voltha_gevent.Node talks to Consul through requests: call "
                "gevent.monkey.patch_all() before importing anything else"
            )
        if self.http is not None and not self._http_serving:
            self.serve_http()  # bound before joining: the first record already has the port
        supervision.forget(self.instance_id)
        starter = gevent.spawn(self.coordinator.start)  # the root of this node's greenlets
        supervision.bind_instance(starter, self.instance_id)
        starter.get()
        if self.config.seed_workload and self._seeder is None:
            self._seeder = self._start_seeding()
        return self

    def _start_seeding(self) -> gevent.Greenlet:
        """``seed_workload``: this node creates the demo items, once, whoever leads."""
        coordinator = self.coordinator
        seeder = gevent.spawn(seed_workload, coordinator.api, coordinator.keys, self.config.seed_workload,
                              coordinator.retry)
        seeder.name = "seed-workload"
        supervision.bind_instance(seeder, self.instance_id)
        supervision.supervise(seeder, "seed-workload")
        return seeder

    def drain(self, timeout: float | None = None, *, cancel: gevent.event.Event | None = None) -> bool:
        """Hand every item over gracefully while staying a member (and the leader, if it leads).

        Marks this node's member record ``draining``: the leader assigns it nothing and moves
        its items one by one through the usual handover, so each is interrupted only for
        that handover (stopping instead would add the leader's soak). Then waits until this
        node holds nothing - and, when it leads, has granted what it handed over (a leader
        that stopped between its own release and those grants would leave them to the next
        leader's soak) - ``timeout`` seconds (None: no limit) or ``cancel`` is set; True when
        done. The mark lasts until :meth:`undrain` or the process ends.
        """
        self.coordinator.set_draining(True)
        deadline = None if timeout is None else time.monotonic() + timeout
        cancel = cancel or gevent.event.Event()
        while self._held():
            remaining = DRAIN_RECHECK if deadline is None else min(DRAIN_RECHECK, deadline - time.monotonic())
            if remaining <= 0 or cancel.wait(remaining):
                log.warning("drain-incomplete", instance_id=self.instance_id, held=len(self._held()))
                return False
        log.info("drained", instance_id=self.instance_id)
        return True

    def undrain(self) -> None:
        """Take items again (undoes :meth:`drain`; an operator's ``drain/<member>`` key stays)."""
        self.coordinator.set_draining(False)

    @property
    def draining(self) -> bool:
        """This node asked to hand its items over (:meth:`drain`)."""
        return self.coordinator.record.draining

    def _held(self) -> set[str]:
        """Items this node runs, is assigned, takes up or still revokes, or (leading) has not
        yet granted to the member it hands them over to."""
        leader = self.coordinator.leader if self.is_leader else None
        moving = leader.handover_from if isinstance(leader, Leader) else {}  # a custom leader: none
        handing = {i for i, m in moving.items() if m == self.instance_id}
        return self.owned() | self.pending() | self.revoking() | self.worker.assigned | handing

    def serve_http(self, bind: str = "127.0.0.1", port: int = 0) -> HttpEndpoint:
        """Serve this node's :class:`~voltha_gevent.http.HttpEndpoint` now and advertise the
        bound port in the member record (before or after :meth:`start`).

        Why here and not left to the application: the request dispatcher forwards to the
        ``rest_port`` of the owner's record, so the record must carry the port really bound;
        ``bind``/``port`` are ignored when ``http=`` was given to the constructor.
        :class:`~voltha_gevent.errors.VolthaError` when the address cannot be bound.
        """
        if self.http is None:
            self.http = HttpEndpoint(self, bind, port)
        if not self._http_serving:
            self.http.start()
            self._http_serving = True
            self.coordinator.advertise_rest_port(self.http.port)
        return self.http

    def add_dispatcher(self, handler: RequestHandler, **settings: Any) -> RequestDispatcher:
        """A :class:`~voltha_gevent.northbound.RequestDispatcher` for this node, attached.

        Built with this node's view of ``owners/`` (its Consul clients, keys and watch wait)
        and ``settings`` (``queue_size``, ``workers``, ``forward_timeout``, ``owner_wait``,
        ``token``, ``forward``); then :meth:`attach_dispatcher`. Mount and start it yourself.
        """
        from .northbound import OwnersView, RequestDispatcher

        coordinator = self.coordinator
        owners = OwnersView(coordinator.api, coordinator.watch_api, coordinator.keys,
                            wait=self.config.watch_wait)
        dispatcher = RequestDispatcher(self, handler, owners=owners, **settings)
        self.attach_dispatcher(dispatcher)
        return dispatcher

    def attach_dispatcher(self, dispatcher: RequestDispatcher) -> None:
        """Serve ``dispatcher``'s counters on this node's ``/metrics`` (one per node).

        For a dispatcher built by hand (``RequestDispatcher(node, handler, owners=...)``);
        :meth:`add_dispatcher` calls it. The dispatcher adds its own revoke barrier when it starts.
        """
        if self._dispatcher is not None and self._dispatcher is not dispatcher:
            raise ValueError("a dispatcher is attached to this node already")
        self._dispatcher = dispatcher

    @property
    def dispatcher(self) -> RequestDispatcher | None:
        """The attached request dispatcher, if any (:meth:`attach_dispatcher`)."""
        return self._dispatcher

    def stop(self, timeout: float = 5.0, *, keep_http: bool = False) -> None:
        """Revoke all work, leave the cluster (destroying the session), stop greenlets, then
        the HTTP endpoint it serves - unless ``keep_http`` (a dispatcher still has to
        ``linger()`` on it; stop ``node.http`` yourself after that)."""
        if self._seeder is not None:
            self._seeder.kill(block=True, timeout=timeout)
        self.coordinator.shutdown(timeout)
        if self.http is not None and self._http_serving and not keep_http:
            self.http.stop()
            self._http_serving = False

    # Views

    @property
    def instance_id(self) -> str:
        return self.coordinator.instance_id

    @property
    def is_leader(self) -> bool:
        return self.coordinator.is_leader

    @property
    def leader_id(self) -> str | None:
        return self.coordinator.leader_id

    @property
    def epoch(self) -> int:
        return self.coordinator.epoch

    @property
    def lease(self) -> Lease:
        """This node's session lease (one object for every session of the process): what an
        ownership's validity derives from; read it, never begin or end it."""
        return self.coordinator.session.lease

    @property
    def healthy(self) -> bool:
        """Session live, membership record held, no item stuck, no component crashed."""
        crashes = supervision.health_of(self.instance_id)
        crashed = bool(crashes.down) or crashes.failed.is_set()
        return self.coordinator.healthy and not self.stuck() and not crashed

    @property
    def failed(self) -> gevent.event.Event:
        """Set when a component kept crashing: the process should exit (``run`` exits 1)."""
        return supervision.health_of(self.instance_id).failed

    def unhealthy_reason(self) -> str | None:
        """Why :attr:`healthy` is False (None when it is True)."""
        crashes = supervision.health_of(self.instance_id)
        if crashes.failure:
            return f"failed: {crashes.failure}"
        if crashes.down:
            return "crashed: " + "; ".join(f"{c}: {e}" for c, e in sorted(crashes.down.items()))
        stuck = self.stuck()
        if stuck:
            names = ", ".join(sorted(stuck)[:10])
            return f"work would not stop for {len(stuck)} item(s), owner locks kept: {names}"
        session = self.coordinator.session
        if not session.live:
            because = f": {session.last_loss_reason}" if session.last_loss_reason else ""
            return f"session {session.state.value}{because}"
        if not self.coordinator.healthy:
            membership = self.coordinator.membership
            holder = membership.held_by if membership is not None else None
            if holder:
                return (f"instance id {self.instance_id} is in use by another process (session "
                        f"{holder}); waiting for it to go")
            return "membership record not held"
        return None

    def ownership(self, item: str) -> Ownership | None:
        """The item's :class:`~voltha_gevent.lease.Ownership` while this node runs it, else None.

        Local state only (no Consul call). Inside ``on_assigned`` (and greenlets it spawns)
        :func:`voltha_gevent.current_ownership` gives the same without the item name.
        """
        return self.worker.ownership(item)

    def stuck(self) -> set[str]:
        """Items whose work would not stop; their owner locks are kept until it does."""
        return self.worker.stuck()

    def add_revoke_barrier(self, barrier: RevokeBarrier) -> None:
        """``barrier(item, timeout) -> bool`` runs when an item is revoked, after ``on_revoked``
        and before its owner lock is released: it waits until nothing of the item runs in it
        (e.g. requests being served). False makes the item stuck (lock kept)."""
        self.worker.add_revoke_barrier(barrier)

    def members(self) -> dict[str, MemberRecord]:
        return self.coordinator.members()

    def owned(self) -> set[str]:
        return self.worker.owned()

    def pending(self) -> set[str]:
        return self.worker.pending()

    def revoking(self) -> set[str]:
        return self.worker.revoking()

    def wait_for_leader(self, timeout: float | None = None) -> str | None:
        return self.coordinator.wait_for_leader(timeout)

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until this node runs exactly the items assigned to it and has been assigned
        some (or the workload is empty); False at ``timeout`` (see :meth:`Worker.wait_settled`)."""
        return self.worker.wait_settled(timeout)

    def status(self) -> dict[str, Any]:
        """This node's view, as ``/status`` serves it."""
        coordinator = self.coordinator
        leader = coordinator.leader
        return {
            "instance_id": self.instance_id,
            "healthy": self.healthy,
            "session": coordinator.session.state.value,
            "leader": self.leader_id,
            "epoch": self.epoch,
            "is_leader": self.is_leader,
            "draining": self.draining,
            "members": {m: asdict(r) for m, r in sorted(self.members().items())},
            "owned": sorted(self.owned()),
            "pending": sorted(self.pending()),
            "revoking": sorted(self.revoking()),
            "stuck": sorted(self.stuck()),
            "lease_remaining": round(coordinator.session.lease.remaining(), 3),
            "fencing_budget": self.config.budget().formula(),
            "leader_state": leader.state.value if leader is not None else None,
        }

    def _metrics_view(self) -> NodeMetricsView:
        """The counters and read-only callables the metrics collector reads (and nothing else)."""
        session = self.coordinator.session
        return NodeMetricsView(
            is_leader=lambda: self.is_leader, epoch=lambda: self.epoch, healthy=lambda: self.healthy,
            members=self.members, owned=self.owned, pending=self.pending, stuck=self.stuck,
            session=session, lease=session.lease, retry=self.coordinator.retry.stats,
            worker=self.worker.stats, revocations=self.worker.revocations.stats,
            leader=self._leader_figures, watches=self.watch_stats,
            dispatcher=lambda: self._dispatcher,
            exec_stats=getattr(self.handler, "exec_stats", None),
        )

    def _leader_figures(self) -> LeaderFigures | None:
        leader = self.coordinator.leader
        if leader is None:
            return None
        return LeaderFigures(leader.stats, len(leader.view.items))

    def watch_stats(self) -> dict[str, WatchStats]:
        """Counters of every live watch of this node, by watch name."""
        watches = list(self.coordinator.watches())
        watches.extend(self.worker.watches())
        return {w.name: w.stats for w in watches}
