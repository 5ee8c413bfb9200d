"""voltha_gevent.heap: what is alive when the work settles is frozen out of full collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from dataclasses import replace

import pytest
import structlog

from voltha_gevent import heap
from voltha_gevent.metrics import render
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster


@pytest.fixture(autouse=True)
def fresh_stats() -> Iterator[None]:
    saved = replace(heap.STATS)
    heap.STATS.__init__()  # type: ignore[misc]
    gc.unfreeze()
    yield
    gc.unfreeze()
    heap.STATS.__dict__.update(saved.__dict__)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_first_settle_freezes_without_a_full_collection() -> None:
    keep = [Cycle() for _ in range(100)]
    heap.settled(now=1000.0)
    assert heap.frozen() >= 100
    assert heap.STATS.refreshes == 0 and heap.STATS.last_refresh == 1000.0
    assert all(gc.is_tracked(c) for c in keep)


def test_frozen_cycles_wait_for_the_refresh_which_collects_them() -> None:
    garbage = [Cycle() for _ in range(50)]
    alive = [weakref.ref(c) for c in garbage]
    heap.settled(now=1000.0)
    del garbage
    gc.collect()
    assert all(ref() is not None for ref in alive)  # frozen: full collections do not see them
    heap.settled(now=1000.0 + heap.REFRESH_EVERY / 2)  # not due: freezes only
    assert heap.STATS.refreshes == 0
    assert all(ref() is not None for ref in alive)
    with structlog.testing.capture_logs() as logs:
        heap.settled(now=1000.0 + heap.REFRESH_EVERY + 1)
    assert heap.STATS.refreshes == 1
    assert heap.STATS.collected >= 50
    assert all(ref() is None for ref in alive)
    refreshed = [e for e in logs if e["event"] == "heap-refreshed"]
    assert len(refreshed) == 1 and refreshed[0]["collected"] >= 50
    assert heap.frozen() > 0  # frozen again afterwards


def test_young_garbage_is_collected_not_frozen() -> None:
    heap.settled(now=1000.0)
    young = [Cycle() for _ in range(30)]
    alive = [weakref.ref(c) for c in young]
    del young
    heap.settled(now=1001.0)  # not a refresh: the young generations are collected, then frozen
    assert heap.STATS.refreshes == 0
    assert all(ref() is None for ref in alive)


def test_a_node_freezes_when_its_work_settles_and_reports_it() -> None:
    items = [f"dg{i:02d}" for i in range(20)]
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*items)
        node = cluster.add_node("a")
        assert node.wait_settled(10)
        assert cluster.wait_until(lambda: heap.STATS.freezes >= 1, 5)
        assert heap.frozen() > 0
        text = render(node.metrics_view).decode()
        assert "voltha_heap_frozen_objects" in text and "voltha_heap_refreshes_total 0.0" in text


def test_freeze_heap_false_leaves_the_collector_alone() -> None:
    items = [f"dg{i:02d}" for i in range(20)]
    with FakeCluster(FakeConsul(), freeze_heap=False) as cluster:
        cluster.add_items(*items)
        node = cluster.add_node("a")
        assert node.wait_settled(10)
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 5)
    assert heap.STATS.freezes == 0
    assert heap.frozen() == 0
