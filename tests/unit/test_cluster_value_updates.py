"""Live workload values on the mocked Consul: on_updated, revoke + assign, no watch by default,
a value change racing a handover, and an on_updated that will not stop.

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event

import voltha_gevent
from voltha_gevent.node import Node
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"dg{i:02d}" for i in range(10)]


class Recorder:
    """Records starts, stops and updates; ``seen[item]`` is the latest value the work knows."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bytes | None]] = []
        self.seen: dict[str, bytes | None] = {}

    def on_assigned(self, item: str, value: bytes | None) -> None:
        self.events.append(("assigned", item, value))
        self.seen[item] = value

    def on_revoked(self, item: str) -> None:
        self.events.append(("revoked", item, None))
        self.seen.pop(item, None)

    def of(self, item: str) -> list[tuple[str, bytes | None]]:
        return [(kind, value) for kind, name, value in self.events if name == item]


class Updatable(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[int | None] = []

    def on_updated(self, item: str, value: bytes | None) -> None:
        ownership = voltha_gevent.current_ownership()
        self.tokens.append(ownership.token if ownership else None)
        self.events.append(("updated", item, value))
        self.seen[item] = value


def node(cluster: FakeCluster, name: str, handler: Any, **kw: Any) -> Node:
    made = Node(cluster.settings_config(name), handler=handler, client_factory=cluster.client_factory(name),
                **kw)
    cluster.nodes[name] = made
    return made.start()


def settled(cluster: FakeCluster) -> bool:
    """Every item runs exactly once and nothing is pending or being revoked."""
    owned = [item for n in cluster.nodes.values() for item in n.owned()]
    busy = any(n.pending() or n.revoking() for n in cluster.nodes.values())
    return not busy and sorted(owned) == ITEMS


def put(cluster: FakeCluster, item: str, value: str) -> None:
    cluster.fake.client().kv.put(f"service/voltha/workload/{item}", value)


def test_on_updated_gets_the_new_value_in_place_under_the_items_ownership() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("a", "b", value="v1")
        handler = Updatable()
        n1 = node(cluster, "n1", handler)
        assert n1.wait_settled(10) and n1.owned() == {"a", "b"}
        token = n1.ownership("a").token
        put(cluster, "a", "v2")
        assert cluster.wait_until(lambda: handler.seen.get("a") == b"v2", 5)
        assert handler.of("a") == [("assigned", b"v1"), ("updated", b"v2")]
        assert handler.tokens == [token]  # current_ownership() inside on_updated: the item's own
        assert n1.ownership("a").value == b"v2" and n1.ownership("a").token == token
        assert handler.of("b") == [("assigned", b"v1")]  # untouched items hear nothing
        put(cluster, "a", "v2")  # the same value again: no new ModifyIndex, nothing to tell
        put(cluster, "b", "v3")
        assert cluster.wait_until(lambda: handler.seen.get("b") == b"v3", 5)
        assert handler.of("a") == [("assigned", b"v1"), ("updated", b"v2")]


def test_without_on_updated_value_updates_true_revokes_and_assigns_on_the_same_node() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("a", "b", value="v1")
        handler = Recorder()
        n1 = node(cluster, "n1", handler, value_updates=True)
        assert n1.wait_settled(10)
        token = n1.ownership("a").token
        put(cluster, "a", "v2")
        assert cluster.wait_until(lambda: handler.of("a") == [("assigned", b"v1"), ("revoked", None),
                                                               ("assigned", b"v2")], 5), handler.events
        assert cluster.wait_until(lambda: n1.ownership("a") is not None, 5)
        assert n1.ownership("a").token > token  # the lock was let go and taken again
        assert handler.of("b") == [("assigned", b"v1")]
        gevent.sleep(0.5)
        assert len(handler.of("a")) == 3  # no restart loop


def test_by_default_a_handler_without_on_updated_costs_no_watch_and_hears_nothing() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("a", value="v1")
        handler = Recorder()
        n1 = node(cluster, "n1", handler)
        assert n1.wait_settled(10)
        assert n1.worker.values is None and "value-updates" not in [w.name for w in n1.worker.watches()]
        cluster.fake.reset_request_count()
        put(cluster, "a", "v2")
        gevent.sleep(0.5)
        assert handler.of("a") == [("assigned", b"v1")]
        listings = Node(cluster.settings_config("n9"), handler=Updatable(),
                        client_factory=cluster.client_factory("n9"))
        assert listings.worker.values is not None  # on_updated alone turns the watch on
        off = Node(cluster.settings_config("n8"), handler=Updatable(), value_updates=False,
                   client_factory=cluster.client_factory("n8"))
        assert off.worker.values is None


def test_a_value_change_during_a_handover_reaches_the_new_owner() -> None:
    """Items move from n1 to a joining n2 while every value is rewritten, staggered across the
    handover: whoever owns an item at the end knows its last value."""
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS, value="v0")
        handlers = {"n1": Updatable(), "n2": Updatable()}
        n1 = node(cluster, "n1", handlers["n1"])
        assert n1.wait_settled(10) and n1.owned() == set(ITEMS)
        node(cluster, "n2", handlers["n2"])
        for round_ in range(1, 13):
            for item in ITEMS:
                put(cluster, item, f"v{round_}")
            gevent.sleep(0.08)  # spread over the soak (0.2 s) and the handovers
        assert cluster.wait_until(lambda: settled(cluster), 10)
        assert n1.owned() and cluster.nodes["n2"].owned()  # the handover really happened

        def everyone_knows() -> bool:
            return all(handlers[name].seen.get(item) == b"v12"
                       for name, running in cluster.nodes.items() for item in running.owned())

        assert cluster.wait_until(everyone_knows, 5), {n: h.seen for n, h in handlers.items()}


def test_an_on_updated_that_will_not_stop_is_killed_before_the_lock_is_released() -> None:
    with FakeCluster(FakeConsul(), stop_timeout=0.5) as cluster:
        cluster.add_items("a", value="v1")
        started, killed = gevent.event.Event(), gevent.event.Event()

        class Stubborn(Recorder):
            def on_updated(self, item: str, value: bytes | None) -> None:
                started.set()
                try:
                    while True:
                        gevent.sleep(0.05)  # ignores ownership.valid()
                finally:
                    killed.set()

        n1 = node(cluster, "n1", Stubborn())
        assert n1.wait_settled(10)
        put(cluster, "a", "v2")
        assert started.wait(5)
        cluster.remove_items("a")
        assert killed.wait(5)
        assert cluster.wait_until(lambda: not n1.owned() and not n1.revoking(), 5)
        assert n1.stuck() == set()
        released = cluster.fake.dump("service/voltha/owners/")
        assert released["service/voltha/owners/a"][1] is None  # let go, after the kill
