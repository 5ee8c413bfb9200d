"""Who owns an item, as the dispatcher sees it: a watched view of ``owners/`` plus direct reads.

The view may lag Consul; the router re-reads Consul after any doubt (no owner, an owner that
is not a live member, a proven non-delivery). If the watch stops, reads fall back to Consul.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import gevent.event
import structlog

from ..entries import KVEntry
from ..errors import ConsulRejected, ConsulUnavailable
from ..keys import held_owners
from ..watch import WatchFactory

if TYPE_CHECKING:
    from ..consul_api import ConsulAPI
    from ..keys import Keys

log = structlog.get_logger(__name__)


class OwnersLookup(Protocol):
    """What the router needs to know about owners (a stub in tests)."""

    def get(self, item: str) -> str | None:
        """The owner as last seen (may lag)."""

    def read(self, item: str) -> str | None:
        """The owner as Consul says now."""

    def wait_change(self, timeout: float) -> bool:
        """Block until the view changes next (or ``timeout``)."""

    def in_workload(self, item: str) -> bool:
        """False only when Consul says ``workload/<item>`` does not exist."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class OwnersView:
    """Who holds each ``owners/<item>`` lock: a watched cache plus direct reads.

    ``api`` answers the direct reads, ``watch_api`` (a long-poll client) the watch of
    ``owners/``, whose blocking queries wait ``wait`` seconds.
    """

    def __init__(self, api: ConsulAPI, watch_api: ConsulAPI, keys: Keys, *, wait: float) -> None:
        self.api = api
        self.keys = keys
        self._owners: dict[str, str] = {}
        self._changed = gevent.event.Event()
        watches = WatchFactory(watch_api, wait)
        self.watch = watches.tree(keys.owners, self._on_change, name="dispatcher-owners")

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    def get(self, item: str) -> str | None:
        """The owner as the view last saw it (a direct read until the view is delivered)."""
        if not self.watch.delivered.is_set():
            return self.read(item)
        return self._owners.get(item)

    def read(self, item: str) -> str | None:
        """The owner as Consul says now; None when unlocked, absent or unreadable."""
        try:
            _, entry = self.api.get(self.keys.owner(item))
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("owner-read-failed", item=item, error=str(exc))
            return None
        return _holder(entry)

    def wait_change(self, timeout: float) -> bool:
        """Block until the view changes next (or ``timeout``)."""
        return self._changed.wait(max(0.0, timeout))

    def in_workload(self, item: str) -> bool:
        """False only when Consul says ``workload/<item>`` does not exist; True when it exists
        or cannot be read (then the router waits for an owner as before)."""
        try:
            _, entry = self.api.get(self.keys.item(item))
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("workload-read-failed", item=item, error=str(exc))
            return True
        return entry is not None

    def _on_change(self, entries: list[KVEntry]) -> None:
        # a lock whose holder value is unreadable names no member to forward to
        self._owners = {item: holder for item, holder in held_owners(self.keys.owners, entries).items()
                        if holder}
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()


def _holder(entry: KVEntry | None) -> str | None:
    if entry is None or not entry.session:
        return None
    return entry.text() or None
