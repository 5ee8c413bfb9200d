"""One blocking query on ``owners/``, shared by every item waiting for a previous owner.

Started when the first item has to wait and stopped when the last one stops waiting, so
a worker holds at most one extra long poll however many items are in handover (one long
poll per item would exhaust Consul's per-client connection limit in a big handover).
"""

from __future__ import annotations

import gevent.event
import structlog

from .consul_api import ConsulAPI, KVEntry
from .keys import held_owners
from .watch import Watch, WatchKind

log = structlog.get_logger(__name__)


class OwnerWaits:
    """Wake items when their owner lock looks free."""

    def __init__(self, watch_api: ConsulAPI, owners_prefix: str, *, wait: float) -> None:
        self.watch_api = watch_api
        self.owners_prefix = owners_prefix
        self.wait_seconds = wait
        self.waiting: dict[str, gevent.event.Event] = {}
        self.held: set[str] | None = None  # items whose owner lock is held, once read
        self.watch: Watch | None = None

    def looks_free(self, item: str) -> bool:
        """True when the latest view shows no holder (False while there is no view yet)."""
        self._ensure_watch(item)
        return self.held is not None and item not in self.held

    def wait(self, item: str, timeout: float) -> None:
        event = self.waiting.setdefault(item, gevent.event.Event())
        self._ensure_watch(item)
        event.clear()
        if self.held is not None and item not in self.held:
            return
        event.wait(timeout)

    def done(self, item: str) -> None:
        self.waiting.pop(item, None)
        if not self.waiting and self.watch is not None:
            watch, self.watch = self.watch, None
            self.held = None
            watch.stop()

    def stop(self) -> None:
        for item in list(self.waiting):
            self.done(item)

    def _ensure_watch(self, item: str) -> None:
        self.waiting.setdefault(item, gevent.event.Event())
        if self.watch is None:
            log.info("waiting-for-previous-owners", first=item)
            self.watch = Watch(self.watch_api, self.owners_prefix, self._on_owners, kind=WatchKind.TREE,
                               wait=self.wait_seconds, name="worker-owner-waits").start()
            self.watch.wait_delivered(self.wait_seconds)

    def _on_owners(self, entries: list[KVEntry]) -> None:
        self.held = set(held_owners(self.owners_prefix, entries))
        for item, event in list(self.waiting.items()):
            if item not in self.held:
                event.set()
