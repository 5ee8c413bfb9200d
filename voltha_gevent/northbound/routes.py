"""The dispatcher's WSGI routes: ``POST /dispatch`` (peers) and ``POST /request`` (clients).

Every error answer is JSON ``{"error": message, "reason": REASON, "maybe_served": bool}``;
``maybe_served`` false means the request surely did not run and may be sent again.

``/dispatch`` (a peer forwarded the request; it is served here or not at all):

==========  ===================  ==============================================================
status      reason               meaning
==========  ===================  ==============================================================
200         (``result``)         served here
409         ``not-owner``        not run: this node does not serve the item (any more)
503         ``busy``             not run: too many forwarded requests in progress
403 / 400   ``denied`` / ...     not run: access check failed / malformed request
413         ``too-large``        not run: body over ``MAX_BODY_BYTES`` (1 MiB), not read
500         ``handler-failed``   the handler ran and raised
500         ``interrupted``      the handler was killed by the item's revocation (partly run)
==========  ===================  ==============================================================

``/request`` (a client; submitted and waited for) adds: 404 ``unknown-item`` (not in the
workload, answered at once); 503 ``busy``, ``no-owner``,
``stopped`` (not run); 502 ``connect-failed`` / ``not-owner`` (not run, retried once
already), ``connection-lost`` / ``peer-error`` / ``handler-failed`` (may have run); 504
``timeout`` (forward unanswered: may have run) and ``cancelled`` (never ran).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import Stopped
from .errors import (
    DispatcherBusy,
    DispatchTimeout,
    ForwardFailed,
    InvalidRequest,
    NotOwner,
    OwnerUnavailable,
    RequestInterrupted,
    UnknownItem,
)
from .wire import (
    FORWARDED_HEADER,
    NOT_OWNER_REASON,
    NOT_OWNER_STATUS,
    REASON_BUSY,
    REASON_DENIED,
    REASON_HANDLER_FAILED,
    REASON_INTERRUPTED,
    REASON_INVALID,
    Answer,
    BodyTooLarge,
    answer,
    header,
    read_json,
)

if TYPE_CHECKING:
    from .access import PeerAccess
    from .stats import DispatcherStats

log = structlog.get_logger(__name__)

#: ``reason`` of a 413 answer (body over :data:`~.wire.MAX_BODY_BYTES`, not read).
REASON_TOO_LARGE = "too-large"

ServeForwarded = Callable[[dict[str, Any], str], Any]
Submit = Callable[[Any, Any, float], Any]


def dispatch_route(environ: dict[str, Any], access: PeerAccess, serve: ServeForwarded,
                   stats: DispatcherStats) -> Answer:
    """``POST /dispatch``: a request forwarded by a peer, served here or answered "not run"."""
    if environ.get("REQUEST_METHOD") != "POST":
        return _not_run(400, REASON_INVALID, "POST only")
    if not access.allowed(environ):
        stats.denied += 1
        log.warning("dispatch-denied", remote=environ.get("REMOTE_ADDR"))
        return _not_run(403, REASON_DENIED, "not a member address and no valid token")
    sender = header(environ, FORWARDED_HEADER)
    if not sender:
        return _not_run(400, REASON_INVALID, f"{FORWARDED_HEADER} missing: clients use the request route")
    try:
        envelope = read_json(environ)
    except BodyTooLarge as exc:
        return _not_run(413, REASON_TOO_LARGE, str(exc))
    if not isinstance(envelope, dict):
        return _not_run(400, REASON_INVALID, "body is not a JSON object")
    try:
        result = serve(envelope, sender)
    except NotOwner as exc:
        # retryable=True: senders of older releases retry only answers flagged so
        return answer(NOT_OWNER_STATUS, error=str(exc), reason=NOT_OWNER_REASON, maybe_served=False,
                      retryable=True)
    except DispatcherBusy as exc:
        return _not_run(503, REASON_BUSY, str(exc))
    except InvalidRequest as exc:
        return _not_run(400, REASON_INVALID, str(exc))
    except RequestInterrupted as exc:
        return answer(500, error=str(exc), reason=REASON_INTERRUPTED, maybe_served=True)
    except Exception as exc:  # noqa: BLE001 - the application handler's failure goes back
        stats.failed += 1
        return answer(500, error=repr(exc), reason=REASON_HANDLER_FAILED, maybe_served=True)
    return answer(200, result=result)


def client_route(environ: dict[str, Any], submit: Submit, limit: float) -> Answer:
    """``POST /request`` ``{"item": name | null | "*", "payload": ...}``: submit and wait."""
    if environ.get("REQUEST_METHOD") != "POST":
        return _not_run(400, REASON_INVALID, "POST only")
    try:
        body = read_json(environ)
    except BodyTooLarge as exc:
        return _not_run(413, REASON_TOO_LARGE, str(exc))
    if not isinstance(body, dict):
        return _not_run(400, REASON_INVALID, "body is not a JSON object")
    try:
        result = submit(body.get("item"), body.get("payload"), limit)
    except Exception as exc:  # noqa: BLE001 - every failure is mapped to an answer
        return error_answer(exc)
    return answer(200, result=result)


def error_answer(exc: Exception) -> Answer:
    """The ``/request`` answer for a failed request: status, reason, whether it may have run."""
    if isinstance(exc, InvalidRequest):
        return _not_run(400, REASON_INVALID, str(exc))
    if isinstance(exc, DispatcherBusy):
        return _not_run(503, REASON_BUSY, str(exc))
    if isinstance(exc, UnknownItem):
        return _not_run(404, "unknown-item", str(exc))
    if isinstance(exc, OwnerUnavailable):
        return _not_run(503, "no-owner", str(exc))
    if isinstance(exc, Stopped):  # in flight when the dispatcher stopped, it says it may have run
        maybe = bool(getattr(exc, "maybe_served", False))
        return answer(503, error=str(exc), reason="stopped", maybe_served=maybe)
    if isinstance(exc, ForwardFailed):
        status = {"timeout": 504, REASON_BUSY: 503}.get(exc.reason, 502)
        return answer(status, error=str(exc), reason=exc.reason, maybe_served=exc.maybe_served)
    if isinstance(exc, DispatchTimeout):
        return answer(504, error=str(exc), reason="timeout" if exc.delivered else "cancelled",
                      maybe_served=exc.delivered)
    if isinstance(exc, RequestInterrupted):
        return answer(500, error=str(exc), reason=REASON_INTERRUPTED, maybe_served=True)
    return answer(500, error=repr(exc), reason=REASON_HANDLER_FAILED, maybe_served=True)


def _not_run(status: int, reason: str, error: str) -> Answer:
    return answer(status, error=error, reason=reason, maybe_served=False)
