"""The dispatcher's errors: one root, and fields that say whether the request may have run.

``maybe_served`` is the field an at-most-once caller needs: False means the request surely
did not run anywhere and may be sent again; True means it may have run (wholly or partly),
so sending it again could run it twice.
"""

from __future__ import annotations

from ..errors import VolthaError


class DispatchError(VolthaError):
    """Root of the dispatcher's errors."""

    maybe_served = False


class DispatcherBusy(DispatchError):
    """The request queue (or the inbound limit) is full: try later. Nothing ran."""

    template = "dispatcher busy: {detail}"


class InvalidRequest(DispatchError):
    """The request names no valid item. Nothing ran."""

    template = "invalid request: {detail}"


class OwnerUnavailable(DispatchError):
    """No member owned the item within ``owner_wait`` (handover, unassigned, unknown item)."""

    template = "no owner for item {item}: {detail}"


class UnknownItem(DispatchError):
    """The item is not in the workload: no member will ever own it, so waiting ``owner_wait``
    for an owner would only delay the answer. Nothing ran."""

    template = "unknown item {item}: {detail}"


class NotOwner(DispatchError):
    """A forwarded request reached a node that does not serve the item (any more): not run."""

    template = "{instance_id} does not own {item}: {detail}"


class ForwardFailed(DispatchError):
    """Forwarding to ``member`` failed.

    ``retryable`` only when non-delivery is proven (the connection failed before anything was
    sent, or the peer answered "not owner"); ``maybe_served`` is then False. ``reason`` names
    the failure (``connect-failed``, ``not-owner``, ``timeout``, ``connection-lost``, ...).
    """

    template = "forwarding to {member} failed ({reason}): {detail}"

    def __init__(self, detail: str, *, member: str, reason: str, retryable: bool = False,
                 maybe_served: bool = True, status: int | None = None) -> None:
        super().__init__(detail, member=member, reason=reason, retryable=retryable,
                         maybe_served=maybe_served and not retryable, status=status)


class DispatchTimeout(DispatchError):
    """The caller's own timeout passed before the request was answered.

    ``delivered`` False: the request was cancelled before it reached a handler or a peer and
    will never run. True: it was already handed over and may still run; nobody waits for it.
    """

    template = "no answer within {timeout} s: {detail}"

    def __init__(self, detail: str, *, timeout: float | None, delivered: bool) -> None:
        super().__init__(detail, timeout=timeout, delivered=delivered, maybe_served=delivered)


class RequestInterrupted(DispatchError):
    """The handler was killed while it served the request: its item was being revoked and the
    request outlived the revocation's wait, or the dispatcher stopped. It may have partly run."""

    template = "request for {item} killed while running: {detail}"
    maybe_served = True


__all__ = [
    "DispatchError",
    "DispatchTimeout",
    "DispatcherBusy",
    "ForwardFailed",
    "InvalidRequest",
    "NotOwner",
    "OwnerUnavailable",
    "RequestInterrupted",
    "UnknownItem",
]
