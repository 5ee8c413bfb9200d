"""Prometheus metrics of one node, read from its live state at scrape time.

Nothing here counts on its own: the session, lease, retry helper, worker, leader, watches
and dispatcher keep their plain counters, and :class:`NodeCollector` turns a snapshot of them
into metric families when ``/metrics`` is scraped. So a node has no global registry (several
nodes can live in one test process) and no hot path pays for metrics.

The collector reads a :class:`NodeMetricsView` - the counters objects and read-only callables
the :class:`~voltha_gevent.node.Node` hands it (``node.metrics_view``) - and never the node
itself: what a metric shows is named in one place, the view's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from . import heap

if TYPE_CHECKING:
    from .exec_work import ExecStats
    from .leader_state import LeaderStats
    from .lease import Lease
    from .northbound.stats import DispatcherStats
    from .retrying import RetryStats
    from .revocation import RevocationStats
    from .watch import WatchStats
    from .worker import WorkerStats

PREFIX = "voltha"


class SessionCounters(Protocol):
    """The session keeper's counters."""

    @property
    def renewals(self) -> int: ...

    @property
    def losses(self) -> int: ...


class DispatcherFigures(Protocol):
    """What the collector reads of a request dispatcher."""

    @property
    def stats(self) -> DispatcherStats: ...

    @property
    def queue_depth(self) -> int: ...


class LeaderFigures(NamedTuple):
    """The leader's counters and the size of its workload view, while this node leads."""

    stats: LeaderStats
    workload_items: int


@dataclass(frozen=True)
class NodeMetricsView:
    """Everything ``/metrics`` shows of one node, read-only; the :class:`Node` builds it.

    Counters objects are read at scrape time (they are the live ones); callables answer the
    values that change with the node's state (leadership, owned items, the attached dispatcher).
    """

    is_leader: Callable[[], bool]
    epoch: Callable[[], int]
    healthy: Callable[[], bool]
    members: Callable[[], Collection[str]]
    owned: Callable[[], Collection[str]]
    pending: Callable[[], Collection[str]]
    stuck: Callable[[], Collection[str]]
    session: SessionCounters
    lease: Lease
    retry: RetryStats
    worker: WorkerStats
    revocations: RevocationStats
    leader: Callable[[], LeaderFigures | None]
    watches: Callable[[], dict[str, WatchStats]]
    dispatcher: Callable[[], DispatcherFigures | None]
    exec_stats: ExecStats | None = None  # exec mode (voltha_gevent.exec_work)


class NodeCollector:
    """A prometheus_client collector over one node's :class:`NodeMetricsView`."""

    def __init__(self, view: NodeMetricsView) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        view = self.view
        yield from _node_metrics(view)
        yield from _worker_metrics(view.worker, view.revocations, len(view.stuck()))
        yield from _lease_metrics(view.lease)
        yield from _heap_metrics()
        leader = view.leader()
        if leader is not None:
            yield from _leader_metrics(leader)
        yield from _watch_metrics(view.watches())
        dispatcher = view.dispatcher()
        if dispatcher is not None:
            yield from _dispatcher_metrics(dispatcher)
        if view.exec_stats is not None:
            yield from _exec_metrics(view.exec_stats)


def _node_metrics(view: NodeMetricsView) -> Iterator[Metric]:
    yield _gauge("is_leader", "1 while this node holds the leader lock", float(view.is_leader()))
    yield _gauge("leader_epoch", "LockIndex of the leader key as last seen", float(view.epoch()))
    yield _gauge("healthy", "1 while the session is live and the membership record held",
                 float(view.healthy()))
    yield _gauge("members", "live members as seen by this node", float(len(view.members())))
    yield _gauge("owned_items", "items this node runs", float(len(view.owned())))
    yield _gauge("pending_items", "items assigned whose lock is not held yet", float(len(view.pending())))
    yield _counter("session_renewals", "successful session renewals", view.session.renewals)
    yield _counter("session_losses", "sessions declared lost", view.session.losses)
    retry = view.retry
    yield _counter("consul_errors", "failed Consul calls seen by the retry helper", retry.errors)
    yield _counter("consul_retries", "Consul calls retried", retry.retries)
    yield _counter("consul_permission_denied", "Consul answers 403", retry.permission_denied)


def _worker_metrics(worker: WorkerStats, revocations: RevocationStats, stuck: int) -> Iterator[Metric]:
    yield _counter("handler_failures", "application handlers that raised",
                   worker.handler_failures + revocations.handler_failures)
    yield _counter("work_killed", "work killed: the stop budget ran out", revocations.killed)
    yield _counter("items_fenced", "items revoked because the session was lost", worker.fenced)
    yield _gauge("items_stuck", "items whose work would not stop (lock kept)", float(stuck))
    yield _counter("owner_release_retries", "owner-lock releases retried", revocations.release_retries)
    yield _counter("documents_skipped", "own assignment documents that could not be read",
                   worker.skipped_documents)


def _lease_metrics(lease: Lease) -> Iterator[Metric]:
    yield _gauge("lease_remaining_seconds", "seconds the session lease still runs", lease.remaining())
    yield _counter("lease_expiries", "leases that ran out (no confirmed liveness)", lease.expiries)
    yield _counter("lease_stalls", "leases found expired late: the process was stalled", lease.stalls)


def _heap_metrics() -> Iterator[Metric]:
    yield _gauge("heap_frozen_objects", "objects frozen out of the garbage collector's way (process)",
                 float(heap.frozen()))
    yield _counter("heap_refreshes", "unfreeze + full collection + freeze runs (process)",
                   heap.STATS.refreshes)


def _leader_metrics(leader: LeaderFigures) -> Iterator[Metric]:
    stats = leader.stats
    yield _gauge("workload_items", "workload items (leader view)", float(leader.workload_items))
    yield _counter("reassignments", "reassignment runs of this leader", stats.reassignments)
    yield _gauge("reassignment_duration_seconds", "duration of the last reassignment", stats.last_duration)
    yield _counter("items_moved", "items moved between live members", stats.moved)
    yield SummaryMetricFamily(f"{PREFIX}_handover_seconds",
                              "time an item waited for its grant (old owner's release)",
                              count_value=stats.handovers, sum_value=stats.handover_total_seconds)
    yield _counter("handover_timeouts", "handovers past the timeout", stats.handover_timeouts)
    yield _counter("entries_skipped", "malformed entries skipped", stats.skipped_entries)


def _watch_metrics(watches: dict[str, WatchStats]) -> Iterator[Metric]:
    rearms = CounterMetricFamily(f"{PREFIX}_watch_rearms", "blocking-query re-arms", labels=["watch"])
    changes = CounterMetricFamily(f"{PREFIX}_watch_changes", "changes delivered", labels=["watch"])
    size = CounterMetricFamily(f"{PREFIX}_watch_bytes", "bytes of Consul answers a watch read",
                               labels=["watch"])
    for name, stats in sorted(watches.items()):
        rearms.add_metric([name], stats.rearms)
        changes.add_metric([name], stats.changes)
        size.add_metric([name], stats.bytes_read)
    yield rearms
    yield changes
    yield size


def _exec_metrics(exec_stats: ExecStats) -> Iterator[Metric]:
    yield _counter("exec_started", "exec mode: child processes started", exec_stats.started)
    yield _counter("exec_exited", "exec mode: children that ended while their item was owned",
                   exec_stats.exited)
    yield _counter("exec_restarts", "exec mode: children started again after one ended", exec_stats.restarts)
    yield _counter("exec_value_restarts", "exec mode: children restarted for a changed value",
                   exec_stats.value_restarts)
    yield _counter("exec_value_signals", "exec mode: reload signals sent for a changed value",
                   exec_stats.value_signals)


def _dispatcher_metrics(dispatcher: DispatcherFigures) -> Iterator[Metric]:
    """The request dispatcher's counters (voltha_gevent.northbound.dispatcher.DispatcherStats)."""
    stats = dispatcher.stats
    yield _counter("dispatch_local", "requests whose handler ran on this node", stats.local)
    yield _counter("dispatch_forwarded", "requests forwarded to their owner and answered", stats.forwarded)
    yield _counter("dispatch_received", "requests forwarded here by peers and served", stats.received)
    yield _counter("dispatch_failed", "requests answered with an error", stats.failed)
    yield _counter("dispatch_rejected", "requests refused because the dispatcher was full", stats.rejected)
    yield _counter("dispatch_cancelled", "requests whose caller gave up before delivery (never run)",
                   stats.cancelled)
    yield _counter("dispatch_interrupted", "requests killed while running (revocation or stop)",
                   stats.interrupted)
    yield _gauge("dispatch_queue_depth", "requests waiting in the queue", float(dispatcher.queue_depth))
    latency = stats.latency
    yield HistogramMetricFamily(f"{PREFIX}_dispatch_latency_seconds", "request latency, queue to answer",
                                buckets=latency.cumulative(), sum_value=latency.total)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)


def render(view: NodeMetricsView) -> bytes:
    """A node's metrics (``node.metrics_view``) in Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(view))  # type: ignore[arg-type]  # a collector by duck typing
    return generate_latest(registry)
