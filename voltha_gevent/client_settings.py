"""How to reach Consul and how long a call may take.

:class:`ClientSettings` (built by :mod:`voltha_gevent.config`; the ACL token is left out of
its ``repr``), every Consul call timeout (ordinary calls, session calls, liveness signals,
admin commands, long polls), and Consul's duration text.
Pure data: :func:`voltha_gevent.consul_api.make_client` turns the settings into a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Default timeout of ordinary (non-blocking) calls.
CALL_TIMEOUT = 10.0
#: Timeout of session create and destroy calls.
SESSION_CALL_TIMEOUT = 5.0
#: Floor of the liveness calls' timeout (see :func:`liveness_call_timeout`).
LIVENESS_CALL_TIMEOUT_MIN = 0.5
#: Timeout of every admin command's call: an operator waits this long at most per request.
ADMIN_CALL_TIMEOUT = 5.0
#: Margin added to a long poll's timeout on top of wait + wait/16 of server jitter.
LONG_POLL_MARGIN = 5.0


def duration(seconds: float) -> str:
    """``seconds`` as a Go duration string for Consul, exactly (``2.5`` -> ``"2.5s"``, never rounded)."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def liveness_call_timeout(lease: float) -> float:
    """Timeout of the liveness calls (check pass, renew): the lease, since an answer later
    than that could not have kept the lease anyway (at least :data:`LIVENESS_CALL_TIMEOUT_MIN`)."""
    return max(LIVENESS_CALL_TIMEOUT_MIN, lease)


def long_poll_timeout(wait: float) -> float:
    """The HTTP timeout that lets a blocking query of ``wait`` seconds finish, and no more."""
    return wait + wait / 16.0 + LONG_POLL_MARGIN


@dataclass(frozen=True)
class ClientSettings:
    """How to reach Consul; built by :mod:`voltha_gevent.config`."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    dc: str | None = None


__all__ = ["ADMIN_CALL_TIMEOUT", "CALL_TIMEOUT", "LIVENESS_CALL_TIMEOUT_MIN", "LONG_POLL_MARGIN",
           "SESSION_CALL_TIMEOUT", "ClientSettings", "duration", "liveness_call_timeout", "long_poll_timeout"]
