"""Who may forward requests to ``/dispatch``: holders of the shared token, else live members.

With a shared token configured, a request must carry it in :data:`~.wire.TOKEN_HEADER`
(compared in constant time) and the address does not matter. Without one, the request must
come from the internal or external address of a live member (as named in its membership
record, or what that name resolves to). Anything sharing a member's address (127.0.0.1 in a
test) passes the address check: set a token whenever untrusted processes share a host.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from .wire import TOKEN_HEADER, header

if TYPE_CHECKING:
    from ..membership import MemberRecord

log = structlog.get_logger(__name__)


class PeerAccess:
    """The access check of forwarded requests; caches resolved member addresses."""

    def __init__(self, members: Callable[[], dict[str, MemberRecord]], token: str | None) -> None:
        self.members = members
        self.token = token
        self._addresses: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())

    def allowed(self, environ: dict[str, Any]) -> bool:
        """True when the request may be served (token matches, or comes from a member)."""
        if self.token:
            return hmac.compare_digest(header(environ, TOKEN_HEADER).encode(), self.token.encode())
        remote = str(environ.get("REMOTE_ADDR", "")).removeprefix("::ffff:")
        return remote in self._member_addresses()

    def _member_addresses(self) -> frozenset[str]:
        """Internal and external hosts of live members, and what they resolve to (cached)."""
        hosts = frozenset(h for r in self.members().values() for h in (r.internal_host, r.external_host) if h)
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
