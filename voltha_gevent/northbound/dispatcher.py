"""The request dispatcher: route a request about a workload item to the member that owns it.

::

    dispatcher = node.add_dispatcher(handler, queue_size=1000, workers=32,
                                     forward_timeout=5.0, owner_wait=10.0)   # built and attached
    dispatcher.mount(endpoint)        # POST /dispatch (peers) and POST /request (clients)
    dispatcher.start()
    dispatcher.submit("dg0001", {"op": "get"}, timeout=5)   # runs where dg0001 is owned
    dispatcher.submit(None, {"op": "ping"})                 # runs here
    dispatcher.submit(ALL, {"op": "stats"})                 # every live member: {"results", "errors"}

What it guarantees (each module says how):

* **Bounded** (:mod:`.workers`). Requests enter a bounded queue; a full queue rejects at
  once with :class:`DispatcherBusy`. A fixed pool of ``workers`` greenlets serves the queue;
  requests forwarded in by peers are served in the HTTP greenlet under a semaphore of the
  same size (:mod:`.inbound`; apart from the pool, so two nodes forwarding to each other
  cannot deadlock).
* **At most once** (:mod:`.routing`, :mod:`.forwarding`, :mod:`.wire`): served by the owner,
  never forwarded twice by a receiver, re-sent to a new owner only when non-delivery is
  proven (connect failure, "not owner" answer); any other failure reaches the caller.
* **A caller's timeout cancels an undelivered request** (:mod:`.pending`): :meth:`submit`
  that times out before the request reached a handler or a peer cancels it for good; after
  that, the caller learns the request may still run.
* **Revocation waits for the item's requests** (:mod:`.local`): :meth:`quiesce`, called by
  the revocation path between ``on_revoked`` and the release of ``owners/<item>``.
* **Access** (:mod:`.access`) and the HTTP answers (:mod:`.routes`).

If this node's session is lost, the worker fences its items, :meth:`Node.owned` empties and
local requests wait for the new owner like any handover. :meth:`stop` fails queued requests
with :class:`~voltha_gevent.errors.Stopped`. A graceful shutdown runs ``dispatcher.stop()``,
``node.stop()`` (its revocations call :meth:`quiesce`), ``dispatcher.linger()``, then closes
the HTTP endpoint. Counters live in :class:`DispatcherStats`
(exported by ``/metrics`` of the node it is attached to).

What it takes (:mod:`.node_view`): a :class:`DispatchNode` (the node's id, members and the
items it runs; the revoke-barrier hook) and an :class:`~.owners.OwnersLookup` (who owns what:
``OwnersView(api, watch_api, keys, wait=...)``). It sets nothing on the node;
``Node.add_dispatcher`` builds one with the node's owners view and attaches it, and
``Node.attach_dispatcher`` attaches one built by hand.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import Stopped
from ..keys import valid_name
from . import routes
from .access import PeerAccess
from .errors import InvalidRequest
from .forwarding import Forward, HttpForwarder
from .inbound import LINGER_QUIET, LINGER_TIMEOUT, Inbound
from .local import Handler, LocalServing
from .owners import OwnersLookup
from .pending import PendingRequest
from .routing import Router
from .stats import DispatcherStats
from .wire import ALL, Answer
from .workers import WorkerPool

if TYPE_CHECKING:
    from ..http import HttpEndpoint
    from ..membership import MemberRecord
    from .node_view import DispatchNode

log = structlog.get_logger(__name__)


class RequestDispatcher:
    """Queue, worker pool and routing of requests for one node (see the module docstring)."""

    def __init__(self, node: DispatchNode, handler: Handler, *, owners: OwnersLookup, queue_size: int = 1000,
                 workers: int = 32, forward_timeout: float = 5.0, owner_wait: float = 10.0,
                 token: str | None = None, forward: Forward | None = None) -> None:
        if queue_size < 1 or workers < 1 or forward_timeout <= 0 or owner_wait < 0:
            raise ValueError("queue_size and workers must be >= 1, forward_timeout > 0, owner_wait >= 0")
        self.node = node
        self.handler = handler
        self.queue_size = queue_size
        self.workers = workers
        self.forward_timeout = forward_timeout
        self.owner_wait = owner_wait
        self.token = token or None
        self.instance_id = node.instance_id
        self.log = log.bind(instance_id=self.instance_id)
        self.stats = DispatcherStats()
        self.owners = owners
        self.local = LocalServing(node, handler, self.stats)
        self.access = PeerAccess(node.members, self.token)
        self.router = Router(self.instance_id, node.members, self.owners, self.local, self._forward_to,
                             self.stats, owner_wait=owner_wait, forward_timeout=forward_timeout)
        self.pool = WorkerPool(self._route, self.stats, queue_size=queue_size, workers=workers,
                               instance_id=self.instance_id)
        self.queue = self.pool.queue
        self._forward = forward
        self._http: HttpForwarder | None = None
        self.inbound = Inbound(self.instance_id, self.local, self.stats, workers=workers,
                               slot_wait=forward_timeout / 2, start_wait=min(owner_wait, forward_timeout / 2))
        self._stopped = True
        self._barrier_added = False

    # Lifecycle

    def start(self) -> RequestDispatcher:
        """Start the owners view and the worker pool; idempotent.

        The first start adds :meth:`quiesce` to ``node.add_revoke_barrier``, so a revocation
        waits for the item's requests before ``owners/<item>`` is released.
        """
        if self._stopped:
            self._stopped = False
            if self._forward is None:
                self._http = HttpForwarder(self.instance_id, self.token, self.workers)
                self._forward = self._http
            self._add_revoke_barrier()
            self.owners.start()
            self.pool.start()
            self.log.info("dispatcher-started", workers=self.workers, queue_size=self.queue_size)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Fail queued requests, let in-flight ones finish (up to ``timeout``), stop; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self.pool.stop(timeout)
        self.local.stop(max(0.0, deadline - time.monotonic()))
        self.owners.stop()
        if self._http is not None:
            self._http.close()
            self._forward, self._http = None, None
        self.log.info("dispatcher-stopped")

    def _add_revoke_barrier(self) -> None:
        if not self._barrier_added:
            self.node.add_revoke_barrier(self.quiesce)
            self._barrier_added = True

    @property
    def queue_depth(self) -> int:
        return self.pool.depth

    # Submitting

    def submit_async(self, item: str | None, payload: Any = None) -> PendingRequest:
        """Queue a request; its handle (an ``AsyncResult`` with ``cancel()``).

        Raises :class:`DispatcherBusy` when full, :class:`InvalidRequest` for a bad item name.
        """
        if item is not None and item != ALL and not valid_name(item):
            raise InvalidRequest(f"{item!r} is not a valid item name")
        if self._stopped:
            raise Stopped("dispatcher is not running")
        request = PendingRequest(item, payload)
        self.pool.put(request)
        return request

    def submit(self, item: str | None, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Queue a request and wait for its result (the handler's, wherever it ran).

        ``item``: an item name, None (run here) or :data:`ALL` (every live member). Past
        ``timeout``: :class:`DispatchTimeout`; ``delivered`` False means it was cancelled and
        never runs, True that it had been handed to a handler or a peer and may still run.
        """
        request = self.submit_async(item, payload)
        try:
            request.wait(timeout)
        finally:
            if not request.ready():  # timed out, or the caller itself was killed or timed out
                request.cancel(timeout)
        return request.get(block=False)

    def broadcast(self, payload: Any = None, *, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`submit` to :data:`ALL`: ``{"results": {...}, "errors": {...}}``."""
        return dict(self.submit(ALL, payload, timeout=timeout))

    # Serving

    def route(self, item: str | None, payload: Any) -> Any:
        """Serve one request in the calling greenlet (no queue, no cancellation)."""
        return self._route(PendingRequest(item, payload))

    def _route(self, request: PendingRequest) -> Any:
        if request.item is None or request.item == ALL:
            request.begin_delivery()
            if request.item is None:
                return self.local.run(None, request.payload)
            return self.router.broadcast(request.payload)
        return self.router.route_item(request.item, request.payload, request)

    def _forward_to(self, member: MemberRecord, envelope: dict[str, Any]) -> Any:
        forward = self._forward
        if forward is None:
            raise Stopped("dispatcher is not running")
        return forward(member, envelope, self.forward_timeout)

    # Revocation

    def quiesce(self, item: str, timeout: float) -> bool:
        """Stop serving ``item`` here and wait for its requests in flight; True when none runs.

        Call it when the item is being revoked, after ``on_revoked`` and before
        ``owners/<item>`` is released. New requests for the item are not served here from the
        call on (answered "not owner", or routed to the next owner); runs in flight get
        ``timeout`` s, then are killed (their callers get :class:`RequestInterrupted`).
        Returns within ``timeout`` + :data:`~.local.QUIESCE_KILL_WAIT`; False only when a run
        survived its kill. Serving resumes by itself when the item is owned here again.
        """
        return self.local.quiesce(item, timeout)

    def resume(self, item: str) -> None:
        """End a quiesce of ``item`` by hand; not needed after a revocation (see :meth:`quiesce`)."""
        self.local.resume(item)

    # The receiving side

    def serve_forwarded(self, envelope: dict[str, Any], sender: str = "") -> Any:
        """Serve a request a peer forwarded: here or not at all (raises :class:`NotOwner`)."""
        return self.inbound.serve(envelope)

    def linger(self, quiet: float = LINGER_QUIET, timeout: float = LINGER_TIMEOUT) -> bool:
        """After ``Node.stop()``, before closing the HTTP endpoint: answer peers "not owner"
        until none forwarded a request here for ``quiet`` s (at most ``timeout``).

        Peers whose view still names this node then re-send to the new owner instead of
        meeting a reset connection, which they would have to report as "may have been served".
        """
        return self.inbound.linger(quiet, timeout)

    # HTTP routes

    def mount(self, endpoint: HttpEndpoint, *, client_route: str | None = "/request") -> None:
        """Mount ``/dispatch`` (peers) and, unless None, ``client_route`` (clients) on ``endpoint``."""
        endpoint.route("/dispatch", self.dispatch_route)
        if client_route:
            endpoint.route(client_route, self.client_route)

    def dispatch_route(self, environ: dict[str, Any]) -> Answer:
        """``POST /dispatch``: a request forwarded by a peer (see :mod:`.routes`)."""
        return routes.dispatch_route(environ, self.access, self.serve_forwarded, self.stats)

    def client_route(self, environ: dict[str, Any]) -> Answer:
        """``POST /request`` ``{"item": name | null | "*", "payload": ...}``: submit and wait."""
        limit = self.owner_wait + 2 * self.forward_timeout + 5.0
        return routes.client_route(environ, lambda item, payload, t: self.submit(item, payload, timeout=t),
                                   limit)
