"""Long-lived state out of the cyclic garbage collector's way (``gc.freeze``).

Why. A node's heap is mostly state that lives as long as its items run: an item task, its
greenlets, its ownership and lease bookkeeping, and on the leader a picture of every item.
CPython's full collection walks every tracked object and runs whenever enough objects have
survived the young collections - here, during every burst of work, exactly when the node is
busiest. Measured at 100,000 items on 10 node processes (2 cores): full collections of
0.2-0.9 s in every node during each cold start, leave, join and failover, every one of them
collecting nothing, and a failover of one member took 6.0-6.4 s instead of 5.2-5.7 s: the
survivors spent a third of their CPU walking their own running items. During such a pause
no greenlet runs and the heartbeat thread cannot take the GIL.

What. When the worker settles - it runs exactly what it is assigned - whatever is alive is
long-lived by definition: :func:`settled` clears the young generations and freezes the rest
(``gc.freeze``: moved to a permanent generation that collections skip). Frozen objects are
still freed by reference counting as usual; only a *reference cycle* among them that becomes
garbage waits, until the next refresh: at a settle at least :data:`REFRESH_EVERY` seconds
after the last one, everything is unfrozen, collected once (``heap-refreshed``: objects
collected, seconds) and frozen again. Measured with the fake Consul, moving 2,000 items
between nodes three times left no cyclic garbage at all, so a refresh finds little.

The collector is the process's, so this is process-wide: the state here is shared by every
node of the process, and a settle of any of them freezes the embedding application's
objects as well (harmless in the same way). ``Config(freeze_heap=False)``
(``VOLTHA_FREEZE_HEAP=0``) turns it off.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

#: Seconds between two refreshes (unfreeze, one full collection, freeze) at the soonest.
REFRESH_EVERY = 600.0


@dataclass
class HeapStats:
    freezes: int = 0
    refreshes: int = 0
    collected: int = 0  # objects the refreshes collected
    last_refresh: float = 0.0  # time.monotonic() of the last refresh (or first freeze), 0 before


STATS = HeapStats()


def settled(now: float | None = None) -> None:
    """The node runs what it is assigned: freeze what is alive (refresh first when due).

    The first call of a process only freezes, and the refresh period counts from it: a
    full collection right after a cold start would cost the most while other nodes still
    start their items on the same cores.
    """
    now = time.monotonic() if now is None else now
    if not STATS.last_refresh:
        STATS.last_refresh = now
    elif now - STATS.last_refresh >= REFRESH_EVERY:
        refresh(now)
        return
    gc.collect(1)  # young garbage is not frozen with the rest (cheap: young objects only)
    gc.freeze()
    STATS.freezes += 1


def refresh(now: float | None = None) -> int:
    """Unfreeze, collect everything once, freeze again; the number of objects collected."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    STATS.refreshes += 1
    STATS.freezes += 1
    STATS.collected += collected
    STATS.last_refresh = time.monotonic() if now is None else now
    log.info("heap-refreshed", collected=collected, frozen=gc.get_freeze_count(),
             seconds=round(time.perf_counter() - started, 3))
    return collected


def frozen() -> int:
    """Objects in the permanent generation now."""
    return gc.get_freeze_count()


__all__ = ["REFRESH_EVERY", "STATS", "HeapStats", "frozen", "refresh", "settled"]
