"""The request dispatcher: route a request about a workload item to the member that owns it.

::

    dispatcher = RequestDispatcher(node, handler, queue_size=1000, workers=32,
                                   forward_timeout=5.0, owner_wait=10.0)
    dispatcher.mount(endpoint)        # POST /dispatch (peers) and POST /request (clients)
    dispatcher.start()
    dispatcher.submit("dg0001", {"op": "get"})     # runs where dg0001 is owned
    dispatcher.submit(None, {"op": "ping"})        # runs here
    dispatcher.submit(ALL, {"op": "stats"})        # every live member: {"results", "errors"}

What it guarantees:

* **Bounded.** Requests enter a bounded :class:`gevent.queue.Queue`; a full queue rejects at
  once with :class:`DispatcherBusy`. A fixed pool of ``workers`` greenlets serves the queue;
  requests forwarded in by peers are served in the HTTP greenlet under a semaphore of the
  same size (separate from the pool, so two nodes forwarding to each other cannot deadlock).
* **Served by the owner.** The owner of an item is the holder of ``<prefix>/owners/<item>``
  (the worker's ownership lock; value = instance id; only while it has a ``Session``), read
  from a watched view of ``owners/`` and re-read straight from Consul after any doubt. The
  handler runs here only while this node's worker runs the item (:meth:`Node.owned`);
  otherwise the request is POSTed to the owner's ``external_host:rest_port/dispatch``
  (from its membership record) with ``forward_timeout``.
* **Never forwarded twice.** A forwarded request carries ``X-Voltha-Forwarded``; the
  receiving node serves it itself or answers "not owner" (HTTP 503, retryable) - it never
  forwards again. On a retryable failure (not owner, connection refused or dropped) the
  sender waits until ownership moves away from that member (bounded by ``owner_wait``),
  re-reads it and forwards **once** more. A forward that timed out waiting for its answer is
  **not** retried, because the owner may have served it: at most once beats twice.
* **Handover and unassigned items** wait (on the owners view, re-reading Consul every
  :data:`OWNER_RECHECK` s) up to ``owner_wait`` for an owner, then fail with
  :class:`OwnerUnavailable`.
* **Broadcast** (:data:`ALL`) runs the handler on every live member in parallel and returns
  ``{"results": {member: result}, "errors": {member: message}}``; it never raises for one
  member's failure.
* **Access.** ``/dispatch`` accepts a request only with a matching ``X-Voltha-Dispatch-Token``
  when a shared ``token`` is configured, otherwise only from the internal/external address
  of a live member.

If this node's session is lost, the worker fences its items, so :meth:`Node.owned` empties
and local requests wait for the new owner like any handover. :meth:`stop` fails queued
requests with :class:`~voltha_gevent.errors.Stopped`. Counters live in
:class:`DispatcherStats` (exported by ``/metrics``).
"""

from __future__ import annotations

import hmac
import json
import socket
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.queue
import structlog

from ..consul_api import KVEntry
from ..errors import ConsulRejected, ConsulUnavailable, Stopped, VolthaError
from ..keys import held_owners, valid_name
from ..watch import Watch, WatchKind

if TYPE_CHECKING:
    from ..http import HttpEndpoint
    from ..membership import MemberRecord
    from ..node import Node

log = structlog.get_logger(__name__)

#: The item name that means "every live member" (never a valid item name).
ALL = "*"
#: Header a forwarded request carries (value: the sender's instance id): never forward it again.
FORWARDED_HEADER = "X-Voltha-Forwarded"
#: Header carrying the shared token, when one is configured.
TOKEN_HEADER = "X-Voltha-Dispatch-Token"
#: While waiting for an owner, re-read Consul at least this often (seconds) besides the view.
OWNER_RECHECK = 0.25
#: While this node holds an item's lock but its work is still starting, re-check this often.
LOCAL_RECHECK = 0.02
#: Latency histogram bucket bounds, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Handler = Callable[[str | None, Any], Any]
"""``handler(item, payload) -> JSON-able result``; ``item`` is None (local) or :data:`ALL`."""
Forward = Callable[["MemberRecord", dict[str, Any], float], Any]
"""``forward(member, envelope, timeout) -> result``; raises :class:`ForwardFailed`."""


# --------------------------------------------------------------------------- errors


class DispatchError(VolthaError):
    """Root of the dispatcher's errors."""


class DispatcherBusy(DispatchError):
    """The request queue (or the inbound limit) is full: try later."""

    template = "dispatcher busy: {detail}"


class InvalidRequest(DispatchError):
    """The request names no valid item."""

    template = "invalid request: {detail}"


class OwnerUnavailable(DispatchError):
    """No member owned the item within ``owner_wait`` (handover, unassigned, unknown item)."""

    template = "no owner for item {item}: {detail}"


class NotOwner(DispatchError):
    """A forwarded request reached a node that does not run the item (any more)."""

    template = "{instance_id} does not own {item}: {detail}"


class ForwardFailed(DispatchError):
    """Forwarding to ``member`` failed; ``retryable`` when the request surely was not served."""

    template = "forwarding to {member} failed: {detail}"


class DispatchTimeout(DispatchError):
    """The caller's own timeout passed before the request was answered."""

    template = "no answer within {timeout} s: {detail}"


# --------------------------------------------------------------------------- stats


@dataclass
class LatencyHistogram:
    """Cumulative-free bucket counts of request latencies (seconds)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count)]`` as Prometheus wants them, ending with ``+Inf``."""
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class DispatcherStats:
    local: int = 0
    """Handler runs on this node (own requests and requests forwarded in)."""
    forwarded: int = 0
    """Requests this node forwarded to an owner and got an answer for."""
    received: int = 0
    """Requests forwarded in by peers and served here."""
    failed: int = 0
    """Requests answered with an error (handler error, no owner, forward failure)."""
    rejected: int = 0
    """Requests refused because the queue or the inbound limit was full."""
    retries: int = 0
    """Second forwards after a retryable failure."""
    not_owner: int = 0
    """Forwarded-in requests answered "not owner"."""
    denied: int = 0
    """Forwarded-in requests refused by the access check."""
    broadcasts: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


# --------------------------------------------------------------------------- owners


class OwnersView:
    """Who holds each ``owners/<item>`` lock: a watched cache plus direct reads."""

    def __init__(self, node: Node) -> None:
        coordinator = node.coordinator
        self.api = coordinator.api
        self.keys = coordinator.keys
        self._owners: dict[str, str] = {}
        self._changed = gevent.event.Event()
        self.watch = Watch(coordinator.watch_api, self.keys.owners, self._on_change, kind=WatchKind.TREE,
                           wait=coordinator.config.watch_wait, name="dispatcher-owners")

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def get(self, item: str) -> str | None:
        """The owner as the view last saw it (a direct read until the view is delivered)."""
        if not self.watch.delivered.is_set():
            return self.read(item)
        return self._owners.get(item)

    def read(self, item: str) -> str | None:
        """The owner as Consul says now; None when unlocked, absent or unreadable."""
        try:
            _, entry = self.api.get(self.keys.owner(item))
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("owner-read-failed", item=item, error=str(exc))
            return None
        return _holder(entry)

    def wait_change(self, timeout: float) -> bool:
        """Block until the view changes next (or ``timeout``)."""
        return self._changed.wait(max(0.0, timeout))

    def _on_change(self, entries: list[KVEntry]) -> None:
        # a lock whose holder value is unreadable names no member to forward to
        self._owners = {item: holder for item, holder in held_owners(self.keys.owners, entries).items()
                        if holder}
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()


def _holder(entry: KVEntry | None) -> str | None:
    if entry is None or not entry.session:
        return None
    return entry.text() or None


# --------------------------------------------------------------------------- HTTP forwarding


class HttpForwarder:
    """The default :data:`Forward`: POST the envelope to ``<owner>/dispatch`` (pooled connections).

    Connection failures (refused, dropped before an answer) are retryable; a read timeout is
    not (the owner may have served the request). Needs a monkey-patched process.
    """

    def __init__(self, sender: str, token: str | None, pool_size: int) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self._requests = requests
        self.sender = sender
        self.token = token
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=16, pool_maxsize=max(1, pool_size)))

    def __call__(self, member: MemberRecord, envelope: dict[str, Any], timeout: float) -> Any:
        requests = self._requests
        host = member.external_host or member.internal_host
        url = f"http://{_url_host(host)}:{member.rest_port}/dispatch"
        headers = {FORWARDED_HEADER: self.sender, "Content-Type": "application/json"}
        if self.token:
            headers[TOKEN_HEADER] = self.token
        name = member.instance_id
        try:
            answer = self.session.post(url, data=json.dumps(envelope), headers=headers, timeout=timeout)
        except requests.ReadTimeout as exc:
            raise ForwardFailed(f"no answer within {timeout} s", member=name, retryable=False) from exc
        except requests.RequestException as exc:
            raise ForwardFailed(f"{type(exc).__name__}: {exc}", member=name, retryable=True) from exc
        try:
            body = answer.json()
        except ValueError as exc:
            raise ForwardFailed(f"HTTP {answer.status_code}, not JSON", member=name, retryable=False) from exc
        if answer.status_code == 200 and isinstance(body, dict):
            return body.get("result")
        detail = body.get("error", f"HTTP {answer.status_code}") if isinstance(body, dict) else str(body)
        retryable = bool(isinstance(body, dict) and body.get("retryable"))
        raise ForwardFailed(detail, member=name, retryable=retryable, status=answer.status_code)

    def close(self) -> None:
        self.session.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --------------------------------------------------------------------------- the dispatcher


@dataclass
class _Request:
    item: str | None
    payload: Any
    result: gevent.event.AsyncResult
    enqueued: float


class RequestDispatcher:
    """Queue, worker pool and routing of requests for one :class:`~voltha_gevent.Node`."""

    def __init__(
        self,
        node: Node,
        handler: Handler,
        *,
        queue_size: int = 1000,
        workers: int = 32,
        forward_timeout: float = 5.0,
        owner_wait: float = 10.0,
        token: str | None = None,
        forward: Forward | None = None,
    ) -> None:
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
        self.stats = DispatcherStats()
        self.owners = OwnersView(node)
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=queue_size)
        self._forward = forward
        self._http: HttpForwarder | None = None
        self._pool = gevent.pool.Group()
        self._inbound = gevent.lock.BoundedSemaphore(workers)
        self._stopped = True
        self._busy = 0
        self._idle = gevent.event.Event()
        self._idle.set()
        self._addresses: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        node.dispatcher = self  # type: ignore[attr-defined]  # read by the metrics collector

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> RequestDispatcher:
        """Start the owners view and the worker pool; idempotent."""
        if self._stopped:
            self._stopped = False
            if self._forward is None:
                self._http = HttpForwarder(self.instance_id, self.token, self.workers)
                self._forward = self._http
            self.owners.start()
            for number in range(self.workers):
                worker = self._pool.spawn(self._serve_loop)
                worker.name = f"dispatch-worker-{number}"
                worker.link_exception(self._crashed)
            log.info("dispatcher-started", workers=self.workers, queue_size=self.queue_size)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Fail queued requests, let in-flight ones finish (up to ``timeout``), stop; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        while not self.queue.empty():
            request = self.queue.get_nowait()
            request.result.set_exception(Stopped("dispatcher stopped"))
        self._idle.wait(timeout)
        self._pool.kill(block=True, timeout=timeout)
        self.owners.stop()
        if self._http is not None:
            self._http.close()
            self._forward, self._http = None, None
        log.info("dispatcher-stopped")

    def _crashed(self, greenlet: gevent.Greenlet) -> None:
        log.critical("dispatch-worker-crashed", worker=greenlet.name, error=repr(greenlet.exception))

    @property
    def queue_depth(self) -> int:
        return self.queue.qsize()

    # -- submitting --------------------------------------------------------------------

    def submit_async(self, item: str | None, payload: Any = None) -> gevent.event.AsyncResult:
        """Queue a request; its :class:`AsyncResult`. Raises :class:`DispatcherBusy` when full."""
        if item is not None and item != ALL and not valid_name(item):
            raise InvalidRequest(f"{item!r} is not a valid item name")
        if self._stopped:
            raise Stopped("dispatcher is not running")
        request = _Request(item, payload, gevent.event.AsyncResult(), time.monotonic())
        try:
            self.queue.put_nowait(request)
        except gevent.queue.Full:
            self.stats.rejected += 1
            raise DispatcherBusy(f"{self.queue_size} requests queued") from None
        return request.result

    def submit(self, item: str | None, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Queue a request and wait for its result (the handler's, wherever it ran).

        ``item``: an item name, None (run here) or :data:`ALL` (every live member).
        """
        result = self.submit_async(item, payload)
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise DispatchTimeout("still queued or in flight", timeout=timeout) from exc

    def broadcast(self, payload: Any = None, *, timeout: float | None = None) -> dict[str, Any]:
        """:meth:`submit` to :data:`ALL`: ``{"results": {...}, "errors": {...}}``."""
        return dict(self.submit(ALL, payload, timeout=timeout))

    # -- serving -----------------------------------------------------------------------

    def _serve_loop(self) -> None:
        while not self._stopped:
            request = self.queue.get()
            self._busy += 1
            self._idle.clear()
            try:
                self._serve(request)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    def _serve(self, request: _Request) -> None:
        try:
            value = self.route(request.item, request.payload)
        except gevent.GreenletExit:
            request.result.set_exception(Stopped("dispatcher stopped"))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            self.stats.failed += 1
            log.info("request-failed", item=request.item, error=str(exc) or repr(exc))
            request.result.set_exception(exc)
        else:
            request.result.set(value)
        finally:
            self.stats.latency.observe(time.monotonic() - request.enqueued)

    def route(self, item: str | None, payload: Any) -> Any:
        """Serve one request in the calling greenlet (the workers call this)."""
        if item is None:
            return self._run_local(None, payload)
        if item == ALL:
            return self._broadcast(payload)
        return self._route_item(item, payload)

    def _run_local(self, item: str | None, payload: Any) -> Any:
        self.stats.local += 1
        return self.handler(item, payload)

    def _route_item(self, item: str, payload: Any) -> Any:
        deadline = time.monotonic() + self.owner_wait
        excluded: str | None = None  # failed retryably: not tried again while it still looks the owner
        retried, fresh = False, False
        while True:
            if item in self.node.owned():
                return self._run_local(item, payload)
            owner = self.owners.read(item) if fresh else self.owners.get(item)
            if fresh and owner != excluded:
                excluded = None  # ownership moved since: any owner may be tried again
            member = self._member(owner) if owner not in (None, excluded, self.instance_id) else None
            if member is None:
                self._wait_for_owner(item, owner, deadline)
                fresh = True
                continue
            try:
                result = self._forward_to(member, {"item": item, "payload": payload})
            except ForwardFailed as exc:
                if not exc.fields.get("retryable") or retried:
                    raise
                log.info("forward-retrying", item=item, member=owner, error=str(exc))
                self.stats.retries += 1
                retried, excluded, fresh = True, owner, True
                continue
            self.stats.forwarded += 1
            return result

    def _member(self, owner: str | None) -> MemberRecord | None:
        return self.node.members().get(owner) if owner else None

    def _wait_for_owner(self, item: str, owner: str | None, deadline: float) -> None:
        """Wait a little for ownership to settle; :class:`OwnerUnavailable` past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = "item in handover here" if owner == self.instance_id else (
                f"owner {owner} unreachable or not a live member" if owner else "no member holds it")
            raise OwnerUnavailable(f"{why} after {self.owner_wait} s", item=item)
        step = LOCAL_RECHECK if owner == self.instance_id else OWNER_RECHECK
        self.owners.wait_change(min(remaining, step))

    def _forward_to(self, member: MemberRecord, envelope: dict[str, Any]) -> Any:
        forward = self._forward
        if forward is None:
            raise Stopped("dispatcher is not running")
        return forward(member, envelope, self.forward_timeout)

    def _broadcast(self, payload: Any) -> dict[str, Any]:
        self.stats.broadcasts += 1
        members = self.node.members()
        names = sorted({*members, self.instance_id})
        jobs = {}
        for name in names:
            if name == self.instance_id:
                jobs[name] = gevent.spawn(self._run_local, ALL, payload)
            else:
                jobs[name] = gevent.spawn(self._forward_to, members[name], {"item": ALL, "payload": payload})
        gevent.joinall(list(jobs.values()), timeout=self.forward_timeout + 1.0)
        results, errors = {}, {}
        for name, job in jobs.items():
            if not job.ready():
                job.kill(block=False)
                errors[name] = f"no answer within {self.forward_timeout} s"
            elif job.successful():
                results[name] = job.value
            else:
                errors[name] = str(job.exception) or repr(job.exception)
        return {"results": results, "errors": errors}

    # -- the receiving side ------------------------------------------------------------

    def serve_forwarded(self, envelope: dict[str, Any], sender: str = "") -> Any:
        """Serve a request a peer forwarded: here or not at all (raises :class:`NotOwner`)."""
        item = envelope.get("item")
        if item is not None and item != ALL and not (isinstance(item, str) and valid_name(item)):
            raise InvalidRequest(f"{item!r} is not a valid item name")
        if not self._inbound.acquire(timeout=self.forward_timeout / 2):
            self.stats.rejected += 1
            raise DispatcherBusy(f"{self.workers} forwarded requests in progress")
        try:
            if item is not None and item != ALL:
                self._await_local(item)
            self.stats.received += 1
            return self._run_local(item, envelope.get("payload"))
        finally:
            self._inbound.release()

    def _await_local(self, item: str) -> None:
        """Return once the item runs here; a lock still being taken or started gets a short wait."""
        deadline = time.monotonic() + min(self.owner_wait, self.forward_timeout / 2)
        while item not in self.node.owned():
            if item not in self.node.pending() or time.monotonic() >= deadline:
                self.stats.not_owner += 1
                raise NotOwner("forwarded here, never forwarded on", item=item, instance_id=self.instance_id)
            gevent.sleep(LOCAL_RECHECK)

    # -- HTTP routes -------------------------------------------------------------------

    def mount(self, endpoint: HttpEndpoint, *, client_route: str | None = "/request") -> None:
        """Mount ``/dispatch`` (peers) and, unless None, ``client_route`` (clients) on ``endpoint``."""
        endpoint.route("/dispatch", self.dispatch_route)
        if client_route:
            endpoint.route(client_route, self.client_route)

    def dispatch_route(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        """``POST /dispatch``: a request forwarded by a peer."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(400, error="POST only")
        if not self._allowed(environ):
            self.stats.denied += 1
            log.warning("dispatch-denied", remote=environ.get("REMOTE_ADDR"))
            return _answer(403, error="not a member address and no valid token", reason="denied")
        sender = environ.get("HTTP_" + FORWARDED_HEADER.upper().replace("-", "_"), "")
        if not sender:
            return _answer(400, error=f"{FORWARDED_HEADER} missing: clients use the request route")
        envelope = _read_json(environ)
        if not isinstance(envelope, dict):
            return _answer(400, error="body is not a JSON object")
        try:
            result = self.serve_forwarded(envelope, sender)
        except NotOwner as exc:
            return _answer(503, error=str(exc), reason="not-owner", retryable=True)
        except DispatcherBusy as exc:
            return _answer(503, error=str(exc), reason="busy")
        except InvalidRequest as exc:
            return _answer(400, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - the application handler's failure goes back
            self.stats.failed += 1
            return _answer(500, error=repr(exc), reason="handler-failed")
        return _answer(200, result=result)

    def client_route(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        """``POST /request`` ``{"item": name | null | "*", "payload": ...}``: submit and wait."""
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(400, error="POST only")
        body = _read_json(environ)
        if not isinstance(body, dict):
            return _answer(400, error="body is not a JSON object")
        limit = self.owner_wait + 2 * self.forward_timeout + 5.0
        try:
            result = self.submit(body.get("item"), body.get("payload"), timeout=limit)
        except InvalidRequest as exc:
            return _answer(400, error=str(exc))
        except (DispatcherBusy, OwnerUnavailable, Stopped) as exc:
            return _answer(503, error=str(exc), reason=type(exc).__name__)
        except (ForwardFailed, DispatchTimeout) as exc:
            return _answer(502, error=str(exc), reason=type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - the application handler's failure goes back
            return _answer(500, error=repr(exc), reason="handler-failed")
        return _answer(200, result=result)

    def _allowed(self, environ: dict[str, Any]) -> bool:
        if self.token:
            offered = environ.get("HTTP_" + TOKEN_HEADER.upper().replace("-", "_"), "")
            return hmac.compare_digest(offered.encode(), self.token.encode())
        remote = str(environ.get("REMOTE_ADDR", "")).removeprefix("::ffff:")
        return remote in self._member_addresses()

    def _member_addresses(self) -> frozenset[str]:
        """Internal and external hosts of live members, and what they resolve to (cached)."""
        hosts = frozenset(h for r in self.node.members().values()
                          for h in (r.internal_host, r.external_host) if h)
        if hosts != self._addresses[0]:
            self._addresses = (hosts, frozenset(hosts | _resolve(hosts)))
        return self._addresses[1]


def _resolve(hosts: frozenset[str]) -> set[str]:
    found: set[str] = set()
    for host in hosts:
        try:
            found.update(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except OSError as exc:
            log.warning("member-host-unresolvable", host=host, error=str(exc))
    return found


def _read_json(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return json.loads(environ["wsgi.input"].read(length) or b"null")
    except (ValueError, KeyError):
        return None


def _answer(status: int, **body: Any) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(body, sort_keys=True, default=str) + "\n").encode()
