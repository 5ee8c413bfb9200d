"""The dispatcher's counters and latency histogram (exported by ``/metrics``)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Latency histogram bucket bounds, seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class LatencyHistogram:
    """Cumulative-free bucket counts of request latencies (seconds)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count)]`` as Prometheus wants them, ending with ``+Inf``."""
        out, running = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class DispatcherStats:
    local: int = 0
    """Handler runs on this node (own requests and requests forwarded in)."""
    forwarded: int = 0
    """Requests this node forwarded to an owner and got an answer for."""
    received: int = 0
    """Requests forwarded in by peers and accepted to run here."""
    failed: int = 0
    """Requests answered with an error (handler error, no owner, forward failure)."""
    rejected: int = 0
    """Requests refused because the queue or the inbound limit was full."""
    retries: int = 0
    """Second forwards after a proven non-delivery (connect failure, "not owner")."""
    not_owner: int = 0
    """Forwarded-in requests answered "not owner"."""
    denied: int = 0
    """Forwarded-in requests refused by the access check."""
    broadcasts: int = 0
    cancelled: int = 0
    """Requests whose caller gave up before delivery: never run."""
    interrupted: int = 0
    """Handler runs killed because their item's revocation could not wait longer."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
