"""The leader's soak (voltha_gevent.soak): its clock, and the plan it makes meanwhile."""

from __future__ import annotations

import time

import gevent
import gevent.event

from voltha_gevent.assignment import AssignmentPolicy
from voltha_gevent.placement import Placement
from voltha_gevent.soak import DRAFT_AFTER, PlanDraft, PlanInputs, Soak, plan
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = {f"dg{i:03d}" for i in range(300)}
WEIGHTS = {"a": 1.0, "b": 1.0, "c": 1.0}


def inputs(**change) -> PlanInputs:
    base = {"weights": dict(WEIGHTS), "items": set(ITEMS), "current": {}, "placement": Placement()}
    return PlanInputs(**{**base, **change})


def test_a_prepared_plan_is_reused_once_for_equal_inputs() -> None:
    draft = PlanDraft(AssignmentPolicy())
    draft.prepare(inputs())
    prepared = draft._desired
    assert draft.desired(inputs()) is prepared  # equal by value, other objects
    assert draft.reused == 1
    again = draft.desired(inputs())  # used once: planned afresh
    assert again is not prepared and again == prepared and draft.reused == 1


def test_any_changed_input_plans_afresh() -> None:
    policy = AssignmentPolicy()
    base = plan(inputs(), policy)
    changes = {
        "weights": {"a": 1.0, "b": 1.0},
        "items": ITEMS | {"new"},
        "current": {item: "a" for item in sorted(ITEMS)[:50]},
        "placement": Placement(draining=frozenset({"c"})),
    }
    for name, value in changes.items():
        draft = PlanDraft(policy)
        draft.prepare(inputs())
        desired = draft.desired(inputs(**{name: value}))
        assert draft.reused == 0, name
        assert desired == plan(inputs(**{name: value}), policy), name
        assert desired != base, name


def soak_with(soak: float, changed: gevent.event.Event, planned: list[float]) -> Soak:
    return Soak(soak, 0.0, changed, gevent.event.Event(), plan_ahead=lambda: planned.append(time.monotonic()))


def test_the_soak_plans_once_after_a_quiet_start_and_ends_on_time() -> None:
    changed, planned = gevent.event.Event(), []
    started = time.monotonic()
    assert soak_with(0.4, changed, planned).wait()
    took = time.monotonic() - started
    assert len(planned) == 1
    assert planned[0] - started >= DRAFT_AFTER * 0.4 - 0.01
    assert 0.39 <= took < 0.6  # planning ahead does not lengthen the soak


def test_a_burst_of_changes_restarts_the_soak_without_planning_each_time() -> None:
    changed, planned = gevent.event.Event(), []

    def burst() -> None:
        for _ in range(5):
            gevent.sleep(0.04)  # quicker than DRAFT_AFTER x soak = 0.1 s
            changed.set()

    gevent.spawn(burst)
    started = time.monotonic()
    assert soak_with(0.4, changed, planned).wait()
    assert len(planned) == 1  # only the quiet stretch after the burst plans
    assert time.monotonic() - started >= 0.2 + 0.39


def test_a_failover_reassignment_takes_the_plan_made_during_its_soak() -> None:
    items = [f"dg{i:03d}" for i in range(60)]
    with FakeCluster(FakeConsul(), soak=0.5) as cluster:
        cluster.add_items(*items)
        for name in ("a", "b", "c"):
            cluster.add_node(name)
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        leader_node = cluster.leader()
        victim = next(n for n in ("a", "b", "c") if n != leader_node.instance_id)
        leader = leader_node.coordinator.leader
        reused = leader.draft.reused
        cluster.crash(victim)
        assert cluster.wait_until(lambda: cluster.converged(set(items)), 10)
        assert leader.draft.reused == reused + 1
        survivors = {n for n in ("a", "b", "c") if n != victim}
        assert set(leader.desired.values()) == survivors
        assert cluster.ledger.violations == []
