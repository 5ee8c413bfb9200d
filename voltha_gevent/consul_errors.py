"""Reading Consul's failures: a rolled-back transaction's answer, a network error's gist.

Text in, project errors out; no I/O and no client library.
:func:`voltha_gevent.consul_api.translate` picks the case by python-consul2's exception class
and hands the text here.
"""

from __future__ import annotations

import json
import re

import requests

from .errors import PermissionDenied, TransactionFailed


def status_of(exc: Exception) -> int | None:
    """The HTTP status a python-consul2 error text starts with, if any."""
    head = str(exc).split(" ", 1)[0]
    return int(head) if head.isdigit() else None


#: Markers of a requests/urllib3 error text and the short name logged for them.
_NETWORK_GISTS = (
    ("Connection refused", "ConnectionRefused"),
    ("Name or service not known", "UnknownHost"),
    ("Temporary failure in name resolution", "UnknownHost"),
    ("Failed to resolve", "UnknownHost"),
    ("Network is unreachable", "NetworkUnreachable"),
    ("No route to host", "NoRouteToHost"),
    ("Connection reset", "ConnectionReset"),
    ("RemoteDisconnected", "ConnectionClosed"),
    ("Connection aborted", "ConnectionClosed"),
    ("timed out", "Timeout"),
)
_POOL_ADDRESS = re.compile(r"host='([^']+)', port=(\d+)")


def network_gist(exc: Exception) -> str:
    """A network error in a few words, e.g. ``ConnectionRefused 127.0.0.1:8500``.

    requests wraps urllib3's errors, whose text repeats the pool's and the connection's repr
    (300 characters per log line, the same on every retry); the chained exception keeps the
    full text for a traceback.
    """
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        kind = type(exc).__name__
    else:
        kind = next((gist for marker, gist in _NETWORK_GISTS if marker in text), "")
    found = _POOL_ADDRESS.search(text)
    where = f"{found.group(1)}:{found.group(2)}" if found else ""
    if not kind:
        return f"{type(exc).__name__}: {text[:160]}" if not where else f"{type(exc).__name__} {where}"
    return f"{kind} {where}".strip()


def txn_failure(text: str) -> TransactionFailed | PermissionDenied:
    """The error of a rolled-back transaction from its ``"409 {...Errors...}"`` text.

    Every failed operation refused by the ACLs makes it :class:`PermissionDenied`.
    """
    body = text.split(" ", 1)[1] if " " in text else ""
    errors: list[tuple[int, str]] = []
    try:
        for err in json.loads(body).get("Errors") or []:
            errors.append((int(err.get("OpIndex", -1)), str(err.get("What", ""))))
    except (ValueError, AttributeError, TypeError):
        errors.append((-1, body))
    detail = "; ".join(f"op {i}: {what}" for i, what in errors) or body
    if errors and all("permission denied" in what.lower() for _, what in errors):
        return PermissionDenied(f"transaction: {detail}")
    return TransactionFailed(detail, errors=errors)


__all__ = ["network_gist", "status_of", "txn_failure"]
