"""The peer protocol: headers, reasons and JSON answers exchanged between dispatchers.

A sender POSTs ``{"item": name | null | "*", "payload": ...}`` to ``<owner>/dispatch`` with
:data:`FORWARDED_HEADER`. The receiver answers JSON ``{"result": ...}`` (200) or
``{"error": message, "reason": REASON, "maybe_served": bool}``. Exactly one answer proves the
request was **not** served and may go to another member: HTTP :data:`NOT_OWNER_STATUS` with
reason :data:`NOT_OWNER_REASON`, which a node gives only before running anything. Every
other failure may hide a served request, so the sender never re-sends it.
"""

from __future__ import annotations

import json
from typing import Any

#: The item name that means "every live member" (never a valid item name).
ALL = "*"
#: Header a forwarded request carries (value: the sender's instance id): never forward it again.
FORWARDED_HEADER = "X-Voltha-Forwarded"
#: Header carrying the shared token, when one is configured.
TOKEN_HEADER = "X-Voltha-Dispatch-Token"
#: The "not owner" answer: the receiver did not run the request and will not.
NOT_OWNER_STATUS = 409
NOT_OWNER_REASON = "not-owner"

#: ``reason`` values of error answers, to the caller and between peers.
REASON_BUSY = "busy"
REASON_DENIED = "denied"
REASON_INVALID = "invalid-request"
REASON_HANDLER_FAILED = "handler-failed"
REASON_INTERRUPTED = "interrupted"

#: Largest request body read (1 MiB): a bigger one is answered 413 unread, so a client cannot
#: make a node buffer (and echo) tens of megabytes.
MAX_BODY_BYTES = 1024 * 1024


#: Deepest nesting of arrays/objects accepted in a body: deeper ones are a 400. The parser's
#: own limit is the recursion limit, and a body just under it would make the answer's encoder
#: (deeper in the stack) fail with a 500 instead.
MAX_JSON_DEPTH = 100


class BodyTooLarge(Exception):
    """The request's Content-Length exceeds :data:`MAX_BODY_BYTES`; nothing was read."""


Answer = tuple[int, str, bytes]
"""``(status, content type, body)``, what :class:`~voltha_gevent.http.HttpEndpoint` routes return."""


def answer(status: int, **body: Any) -> Answer:
    """A JSON answer; keys sorted so equal answers are equal bytes."""
    return status, "application/json", (json.dumps(body, sort_keys=True, default=str) + "\n").encode()


def read_json(environ: dict[str, Any]) -> Any:
    """The request body as JSON; None when absent or malformed (nested too deeply for the
    parser included: that is the client's fault, a 400, not a server error).

    Raises :class:`BodyTooLarge` when the body is longer than :data:`MAX_BODY_BYTES`.
    """
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > MAX_BODY_BYTES:
        raise BodyTooLarge(f"body of {length} bytes is larger than {MAX_BODY_BYTES}")
    try:
        data = json.loads(environ["wsgi.input"].read(length) or b"null")
    except (ValueError, KeyError, RecursionError):
        return None
    return data if _depth(data) <= MAX_JSON_DEPTH else None


def _depth(data: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion (a scalar is 0)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest


def header(environ: dict[str, Any], name: str) -> str:
    """A request header from a WSGI environ ('' when absent)."""
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))
