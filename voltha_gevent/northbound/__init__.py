"""The northbound side: requests from clients, routed to the member that owns their item."""

from __future__ import annotations

from .dispatcher import (
    ALL,
    FORWARDED_HEADER,
    TOKEN_HEADER,
    DispatcherBusy,
    DispatchError,
    DispatcherStats,
    DispatchTimeout,
    ForwardFailed,
    HttpForwarder,
    InvalidRequest,
    NotOwner,
    OwnerUnavailable,
    RequestDispatcher,
)

__all__ = [
    "ALL",
    "FORWARDED_HEADER",
    "TOKEN_HEADER",
    "DispatchError",
    "DispatchTimeout",
    "DispatcherBusy",
    "DispatcherStats",
    "ForwardFailed",
    "HttpForwarder",
    "InvalidRequest",
    "NotOwner",
    "OwnerUnavailable",
    "RequestDispatcher",
]
