"""Sending a request to its owner over HTTP, and telling "surely not served" from "maybe served".

A failure is **retryable** (another member may be asked) only when non-delivery is proven:

* the TCP connection was never made (refused, unresolvable host, connect timeout): not one
  byte of the request left this process;
* the peer answered HTTP :data:`~.wire.NOT_OWNER_STATUS` with reason ``not-owner``, which a
  dispatcher gives only before it runs anything.

Anything else may hide a served request and is never re-sent: a read timeout (``timeout``),
a connection dropped or reset after the request was written (``connection-lost``), a 5xx or
an unreadable answer (``peer-error``). A peer that was busy or refused us did not run the
request either (``busy``, ``denied``, ``invalid-request``), but the same owner would refuse
again, so those are reported, not retried. Needs a monkey-patched process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ForwardFailed
from .wire import (
    FORWARDED_HEADER,
    NOT_OWNER_REASON,
    NOT_OWNER_STATUS,
    REASON_BUSY,
    REASON_DENIED,
    REASON_INVALID,
    TOKEN_HEADER,
)

if TYPE_CHECKING:
    from ..membership import MemberRecord

Forward = Callable[["MemberRecord", dict[str, Any], float], Any]
"""``forward(member, envelope, timeout) -> result``; raises :class:`ForwardFailed`."""

#: Reasons of answers that prove the peer did not run the request.
_NOT_RUN_REASONS = frozenset({NOT_OWNER_REASON, REASON_BUSY, REASON_DENIED, REASON_INVALID})
#: Status code a receiver answered "not owner" with before 409 (a peer of an older release).
_LEGACY_NOT_OWNER_STATUS = 503


class HttpForwarder:
    """The default :data:`Forward`: POST the envelope to ``<owner>/dispatch`` (pooled connections)."""

    def __init__(self, sender: str, token: str | None, pool_size: int) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self._requests = requests
        self.sender = sender
        self.token = token
        self.session = requests.Session()
        # max_retries=0: urllib3 must never re-send a request on its own
        adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(1, pool_size), max_retries=0)
        self.session.mount("http://", adapter)

    def __call__(self, member: MemberRecord, envelope: dict[str, Any], timeout: float) -> Any:
        host = member.external_host or member.internal_host
        url = f"http://{_url_host(host)}:{member.rest_port}/dispatch"
        headers = {FORWARDED_HEADER: self.sender, "Content-Type": "application/json"}
        if self.token:
            headers[TOKEN_HEADER] = self.token
        name = member.instance_id
        try:
            answer = self.session.post(url, data=json.dumps(envelope), headers=headers, timeout=timeout)
        except self._requests.RequestException as exc:
            raise _transport_failure(exc, name, timeout) from exc
        try:
            body = answer.json()
        except ValueError as exc:
            raise ForwardFailed(f"HTTP {answer.status_code}, not JSON", member=name, reason="peer-error",
                                status=answer.status_code) from exc
        if answer.status_code == 200 and isinstance(body, dict):
            return body.get("result")
        raise answer_failure(name, answer.status_code, body)

    def close(self) -> None:
        self.session.close()


def answer_failure(member: str, status: int, body: Any) -> ForwardFailed:
    """The :class:`ForwardFailed` for a peer's error answer ``status`` / ``body``."""
    fields = body if isinstance(body, dict) else {}
    reason = str(fields.get("reason") or "peer-error")
    detail = str(fields.get("error") or f"HTTP {status}")
    if reason == NOT_OWNER_REASON and status in (NOT_OWNER_STATUS, _LEGACY_NOT_OWNER_STATUS):
        return ForwardFailed(detail, member=member, reason=reason, retryable=True, status=status)
    not_run = reason in _NOT_RUN_REASONS
    return ForwardFailed(detail, member=member, reason=reason, maybe_served=not not_run, status=status)


def _transport_failure(exc: Exception, member: str, timeout: float) -> ForwardFailed:
    """Classify a ``requests`` failure: retryable only when the connection was never made."""
    import requests

    if never_connected(exc):
        return ForwardFailed(f"{type(exc).__name__}: {exc}", member=member, reason="connect-failed",
                             retryable=True)
    if isinstance(exc, requests.Timeout):
        return ForwardFailed(f"no answer within {timeout} s; it may have been served", member=member,
                             reason="timeout")
    return ForwardFailed(f"{type(exc).__name__} after sending; it may have been served: {exc}",
                         member=member, reason="connection-lost")


def never_connected(exc: BaseException) -> bool:
    """True when ``exc`` (from ``requests``) proves no TCP connection was made for the request.

    urllib3 reports a failed connect as ``ConnectTimeoutError`` or its subclass
    ``NewConnectionError`` (refused, unresolvable), wrapped in ``MaxRetryError`` since
    retries are off. Errors after connecting (``ProtocolError``, ``ReadTimeoutError``) are not.
    """
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, ConnectTimeoutError)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
