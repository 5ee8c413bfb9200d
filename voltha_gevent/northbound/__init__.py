"""The northbound side: requests from clients, routed to the member that owns their item.

Public surface: :class:`RequestDispatcher` and what its callers meet (errors, the request
handle, the wire constants, the default HTTP forwarder). Modules, one per concern:
``dispatcher`` (queue, workers, lifecycle), ``pending`` (a request and its cancellation),
``routing`` (where it runs; at most once), ``forwarding`` (HTTP to the owner; what proves
non-delivery), ``local`` (serving here; quiesce on revocation), ``owners`` (who owns what),
``access`` (who may forward to us), ``routes`` (WSGI), ``wire`` (the peer protocol),
``node_view`` (what it may see of its node).
"""

from __future__ import annotations

from .dispatcher import RequestDispatcher
from .errors import (
    DispatcherBusy,
    DispatchError,
    DispatchTimeout,
    ForwardFailed,
    InvalidRequest,
    NotOwner,
    OwnerUnavailable,
    RequestInterrupted,
    UnknownItem,
)
from .forwarding import HttpForwarder
from .local import QUIESCE_KILL_WAIT
from .node_view import DispatchNode
from .owners import OwnersLookup, OwnersView
from .pending import PendingRequest, RequestState
from .stats import DispatcherStats
from .wire import ALL, FORWARDED_HEADER, NOT_OWNER_REASON, NOT_OWNER_STATUS, TOKEN_HEADER

__all__ = [
    "ALL",
    "FORWARDED_HEADER",
    "NOT_OWNER_REASON",
    "NOT_OWNER_STATUS",
    "QUIESCE_KILL_WAIT",
    "TOKEN_HEADER",
    "DispatchError",
    "DispatchNode",
    "DispatchTimeout",
    "DispatcherBusy",
    "DispatcherStats",
    "ForwardFailed",
    "HttpForwarder",
    "InvalidRequest",
    "NotOwner",
    "OwnersLookup",
    "OwnersView",
    "OwnerUnavailable",
    "UnknownItem",
    "PendingRequest",
    "RequestDispatcher",
    "RequestInterrupted",
    "RequestState",
]
