"""Drain and pins: the pure placement rules, and a fake cluster that drains and pins."""

from __future__ import annotations

import json

import pytest

from voltha_gevent.config import Config
from voltha_gevent.errors import ConfigError
from voltha_gevent.keys import Keys, drained_members, parse_pins
from voltha_gevent.placement import Placement, placed_assignment
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"dg{i:02d}" for i in range(12)]
KEYS = Keys("service/voltha")
MEMBERS = {"a": 1.0, "b": 1.0, "c": 1.0}


# --------------------------------------------------------------------------- pure placement


def test_a_draining_member_gets_nothing_and_only_its_items_move():
    before = placed_assignment(MEMBERS, ITEMS)
    after = placed_assignment(MEMBERS, ITEMS, before, Placement(draining=frozenset({"b"})))
    assert set(after) == set(ITEMS) and "b" not in after.values()
    moved = {item for item in ITEMS if before[item] != after[item]}
    assert moved == {item for item, m in before.items() if m == "b"}


def test_a_pin_wins_while_its_member_is_live_and_not_draining():
    base = placed_assignment(MEMBERS, ITEMS)
    item = next(i for i, m in base.items() if m != "c")
    pinned = placed_assignment(MEMBERS, ITEMS, base, Placement(pins={item: "c"}))
    assert pinned[item] == "c"
    # dormant when the member drains or is not live: the ring places the item (never on it)
    dormant = Placement(draining=frozenset({"c"}), pins={item: "c"})
    drained = placed_assignment(MEMBERS, ITEMS, pinned, dormant)
    assert drained[item] in ("a", "b") and "c" not in drained.values()
    gone = placed_assignment({"a": 1.0, "b": 1.0}, ITEMS, pinned, Placement(pins={item: "c"}))
    assert gone[item] in ("a", "b")
    # a pin of an item outside the workload places nothing
    assert "ghost" not in placed_assignment(MEMBERS, ITEMS, base, Placement(pins={"ghost": "a"}))


def test_everyone_draining_leaves_only_active_pins_assigned():
    placement = Placement(draining=frozenset(MEMBERS), pins={"dg00": "a"})
    assert placed_assignment(MEMBERS, ITEMS, None, placement) == {}
    assert placed_assignment(MEMBERS, ITEMS, None, Placement(draining=frozenset({"b", "c"}),
                                                               pins={"dg00": "b"})) == \
        placed_assignment({"a": 1.0}, ITEMS)


def test_keys_parse_drains_and_pins_and_skip_bad_names():
    class Entry:
        def __init__(self, key: str, value: str) -> None:
            self.key, self.value = key, value

        def text(self) -> str:
            return self.value

    names = [KEYS.drain("n1"), KEYS.drain("bad/nested"), KEYS.drains]
    assert drained_members(KEYS.drains, names) == {"n1"}
    entries = [Entry(KEYS.pin("dg00"), "n2\n"), Entry(KEYS.pin("dg01"), "not a name"), Entry(KEYS.pins, "")]
    assert parse_pins(KEYS.pins, entries) == {"dg00": "n2"}


# --------------------------------------------------------------------------- a fake cluster


@pytest.fixture
def cluster():
    with FakeCluster(FakeConsul()) as c:
        c.add_items(*ITEMS)
        for name in ("a", "b", "c"):
            c.add_node(name)
        assert c.wait_until(lambda: c.converged(set(ITEMS)))
        yield c


def owned_by(cluster: FakeCluster) -> dict[str, set[str]]:
    return {name: node.owned() for name, node in cluster.nodes.items()}


def test_node_drain_hands_everything_over_and_stays_a_member(cluster):
    victim = next(n for n, node in cluster.nodes.items() if not node.is_leader and node.owned())
    node = cluster.nodes[victim]
    moving = node.owned()
    assert node.drain(timeout=10)
    assert node.owned() == set() and node.status()["draining"] is True
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    assert not owned_by(cluster)[victim]
    for other in cluster.nodes.values():
        assert other.members()[victim].draining  # still a member, marked draining
    leader = cluster.leader().coordinator.leader
    assert leader.stats.handovers >= len(moving)
    assert cluster.ledger.violations == []
    node.undrain()
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)) and bool(node.owned()), 10)


def test_the_leader_drains_and_keeps_leading(cluster):
    leader = cluster.leader()
    assert leader.drain(timeout=10)
    assert leader.is_leader and leader.owned() == set()
    assert leader.coordinator.leader.handover_from == {}  # granted before drain() returned
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    assert cluster.leader() is leader and cluster.ledger.violations == []


def test_an_operator_drain_key_and_a_pin(cluster):
    client = cluster.fake.client()
    target = next(n for n, node in cluster.nodes.items() if not node.is_leader)
    client.kv.put(KEYS.drain(target), json.dumps({"since": 0}))
    assert cluster.wait_until(lambda: not cluster.nodes[target].owned() and cluster.converged(set(ITEMS)))
    # a pin to the drained member is dormant; to a live one it wins
    client.kv.put(KEYS.pin("dg00"), target)
    other = next(n for n in cluster.nodes if n != target)
    client.kv.put(KEYS.pin("dg01"), other)
    assert cluster.wait_until(lambda: "dg01" in cluster.nodes[other].owned()
                              and cluster.converged(set(ITEMS)))
    assert not cluster.nodes[target].owned()
    client.kv.delete(KEYS.drain(target))  # undrain: the dormant pin applies again
    assert cluster.wait_until(lambda: "dg00" in cluster.nodes[target].owned()
                              and cluster.converged(set(ITEMS)))
    assert cluster.ledger.violations == []


def test_drain_gives_up_at_its_timeout_when_nothing_can_move():
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items(*ITEMS)
        node = cluster.add_node("solo")
        assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
        node.coordinator.leader.stop()  # no leader acts on the mark: the items stay
        assert node.drain(timeout=0.5) is False
        assert node.owned() == set(ITEMS)


def test_drain_timeout_is_a_validated_setting():
    assert Config.load(environ={}).drain_timeout == 30.0
    assert Config.load(flags={"drain-timeout": "0"}, environ={}).drain_timeout == 0.0
    with pytest.raises(ConfigError) as info:
        Config.load(environ={"VOLTHA_DRAIN_TIMEOUT": "-1"})
    assert info.value.setting == "drain_timeout"
