"""The receiving side: a request a peer forwarded is served here or not at all, and a node that
left keeps answering "not owner" until its peers stop forwarding to it.

Guarantees:

* **Never forwarded on.** A forwarded request runs here (when :class:`~.local.LocalServing`
  serves its item, waiting briefly for an item still starting here) or is refused with
  :class:`NotOwner` before anything ran, which the sender may re-send elsewhere.
* **Bounded.** At most ``workers`` forwarded requests are served at once (a semaphore apart
  from the worker pool, so two nodes forwarding to each other cannot deadlock); past that,
  :class:`DispatcherBusy` (not run).
* **A clean leave.** :meth:`Inbound.linger`, called after the node left (``Node.stop()``)
  and before its HTTP endpoint closes, keeps answering until no request arrived for
  ``quiet`` seconds: a peer whose view still names this node gets a "not owner" and
  re-sends to the new owner. Closing at once would reset its connection mid-request, a
  failure it must report as "may have been served".
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.lock
import structlog

from ..keys import valid_name
from .errors import DispatcherBusy, InvalidRequest, NotOwner
from .local import LocalServing
from .stats import DispatcherStats
from .wire import ALL

log = structlog.get_logger(__name__)

#: :meth:`Inbound.linger` returns once no forwarded request arrived for this long (seconds).
LINGER_QUIET = 0.5
#: ... or after this long at most (seconds).
LINGER_TIMEOUT = 3.0


class Inbound:
    """Serves requests forwarded by peers, in the HTTP greenlet that received them."""

    def __init__(self, instance_id: str, local: LocalServing, stats: DispatcherStats, *, workers: int,
                 slot_wait: float, start_wait: float) -> None:
        self.instance_id = instance_id
        self.local = local
        self.stats = stats
        self.workers = workers
        self.slot_wait = slot_wait  # for a free slot, before answering busy
        self.start_wait = start_wait  # for an item still starting here, before answering not-owner
        self._slots = gevent.lock.BoundedSemaphore(workers)
        self._last_arrival = -float("inf")

    def serve(self, envelope: dict[str, Any]) -> Any:
        """Serve a forwarded request here, or raise :class:`NotOwner` before running anything."""
        self._last_arrival = time.monotonic()
        item = envelope.get("item")
        if item is not None and item != ALL and not (isinstance(item, str) and valid_name(item)):
            raise InvalidRequest(f"{item!r} is not a valid item name")
        if not self._slots.acquire(timeout=self.slot_wait):
            self.stats.rejected += 1
            raise DispatcherBusy(f"{self.workers} forwarded requests in progress")
        try:
            if item is not None and item != ALL and not self.local.await_serving(item, self.start_wait):
                raise NotOwner("not run here, never forwarded on", item=item, instance_id=self.instance_id)
            self.stats.received += 1
            return self.local.run(item, envelope.get("payload"))
        except NotOwner:  # not served here, or quiesced before the handler began
            self.stats.not_owner += 1
            raise
        finally:
            self._slots.release()

    def linger(self, quiet: float = LINGER_QUIET, timeout: float = LINGER_TIMEOUT) -> bool:
        """Wait until no request arrived for ``quiet`` s since the call (at most ``timeout``).

        True when it got quiet; False when peers were still forwarding at ``timeout``.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            now = time.monotonic()
            quiet_at = max(self._last_arrival, started) + quiet
            if now >= quiet_at or now >= deadline:
                got_quiet = now >= quiet_at
                log.info("dispatcher-lingered", instance_id=self.instance_id, quiet=got_quiet,
                         waited=round(now - started, 3))
                return got_quiet
            gevent.sleep(min(quiet_at, deadline) - now)
