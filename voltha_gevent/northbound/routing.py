"""Where a request runs: here, at the owner (forwarded once, retried once), or on every member.

Guarantees (at most once):

* **Served by the owner.** The handler runs here only while :class:`~.local.LocalServing`
  serves the item; otherwise the request is sent to the holder of ``owners/<item>``.
* **Re-sent only when non-delivery is proven.** A forward that failed before connecting, or
  that the peer answered "not owner", is sent **once** more, after ownership moved away from
  that member (bounded by ``owner_wait``). Every other failure (read timeout, connection
  lost after sending, a peer error) goes back to the caller: the owner may have served it.
* **Cancellable until delivered.** The route checks the caller's cancellation before every
  step and marks the point of no return (:meth:`PendingRequest.begin_delivery`) just before
  the handler starts or a forward is sent; a proven non-delivery makes it cancellable again.
* **Handover and unassigned items** wait (on the owners view, re-reading Consul every
  :data:`OWNER_RECHECK` s) up to ``owner_wait`` for an owner, then fail with
  :class:`OwnerUnavailable`. An item nobody holds is first looked up in the workload (one
  read per request): one that is not there fails at once with :class:`UnknownItem`.
* **Broadcast** runs the handler on every live member in parallel and returns
  ``{"results": {member: result}, "errors": {member: message}}``; it never raises for one
  member's failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import structlog

from .errors import ForwardFailed, NotOwner, OwnerUnavailable, UnknownItem
from .local import LOCAL_RECHECK, LocalServing
from .owners import OwnersLookup
from .pending import PendingRequest
from .stats import DispatcherStats
from .wire import ALL

if TYPE_CHECKING:
    from ..membership import MemberRecord

log = structlog.get_logger(__name__)

#: While waiting for an owner, re-read Consul at least this often (seconds) besides the view.
OWNER_RECHECK = 0.25

Send = Callable[["MemberRecord", dict[str, Any]], Any]
"""``send(member, envelope) -> result``: one forward with the dispatcher's timeout."""


class Router:
    """Routes one request at a time, in the calling greenlet."""

    def __init__(self, instance_id: str, members: Callable[[], dict[str, MemberRecord]],
                 owners: OwnersLookup, local: LocalServing, send: Send, stats: DispatcherStats, *,
                 owner_wait: float, forward_timeout: float) -> None:
        self.instance_id = instance_id
        self.members = members
        self.owners = owners
        self.local = local
        self.send = send
        self.stats = stats
        self.owner_wait = owner_wait
        self.forward_timeout = forward_timeout
        self.log = log.bind(instance_id=instance_id)

    def route_item(self, item: str, payload: Any, request: PendingRequest) -> Any:
        """Serve ``item``'s request here or at its owner; at most once (module docstring)."""
        deadline = time.monotonic() + self.owner_wait
        excluded: str | None = None  # proven not to have served it: skipped while it looks the owner
        retried, fresh, looked_up = False, False, False
        while True:
            request.raise_if_cancelled()
            if self.local.serves(item):
                request.begin_delivery()
                try:
                    return self.local.run(item, payload)
                except NotOwner:  # quiesced before the handler began: not run, route it again
                    request.not_delivered()
                    fresh = True
                    continue
            owner = self.owners.read(item) if fresh else self.owners.get(item)
            if fresh and owner != excluded:
                excluded = None  # ownership moved since: any owner may be tried again
            member = self._member(owner) if owner not in (None, excluded, self.instance_id) else None
            if member is None:
                if owner is None and not looked_up:
                    looked_up = True
                    if not self.owners.in_workload(item):
                        raise UnknownItem("not in the workload", item=item)
                self._wait_for_owner(item, owner, deadline)
                fresh = owner != self.instance_id  # our own lock: the view shows its release
                continue
            request.begin_delivery()
            try:
                result = self.send(member, {"item": item, "payload": payload})
            except ForwardFailed as exc:
                if not exc.retryable or retried:
                    raise
                request.not_delivered()
                self.log.info("forward-retrying", item=item, member=owner, reason=exc.reason)
                self.stats.retries += 1
                retried, excluded, fresh = True, owner, True
                continue
            self.stats.forwarded += 1
            return result

    def broadcast(self, payload: Any) -> dict[str, Any]:
        """Run on every live member (here included) in parallel; per-member results and errors."""
        self.stats.broadcasts += 1
        members = self.members()
        jobs: dict[str, gevent.Greenlet] = {}
        envelope = {"item": ALL, "payload": payload}
        for name in sorted({*members, self.instance_id}):
            if name == self.instance_id:
                jobs[name] = gevent.spawn(_outcome, self.local.run, ALL, payload)
            else:
                jobs[name] = gevent.spawn(_outcome, self.send, members[name], envelope)
        gevent.joinall(list(jobs.values()), timeout=self.forward_timeout + 1.0)
        results, errors = {}, {}
        for name, job in jobs.items():
            if not job.ready():
                job.kill(block=False)
                errors[name] = f"no answer within {self.forward_timeout} s"
                continue
            ok, value = job.value
            if ok:
                results[name] = value
            else:
                errors[name] = str(value) or repr(value)
        return {"results": results, "errors": errors}

    def _member(self, owner: str | None) -> MemberRecord | None:
        return self.members().get(owner) if owner else None

    def _wait_for_owner(self, item: str, owner: str | None, deadline: float) -> None:
        """Wait a little for ownership to settle; :class:`OwnerUnavailable` past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            why = "item in handover here" if owner == self.instance_id else (
                f"owner {owner} unreachable or not a live member" if owner else "no member holds it")
            raise OwnerUnavailable(f"{why} after {self.owner_wait} s", item=item)
        step = LOCAL_RECHECK if owner == self.instance_id else OWNER_RECHECK
        self.owners.wait_change(min(remaining, step))


def _outcome(call: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """``call``'s result or exception as a value: a member's failure is part of the broadcast's
    answer, not a greenlet crash for gevent's hub to print."""
    try:
        return True, call(*args)
    except Exception as exc:  # noqa: BLE001 - reported per member in the answer
        return False, exc
