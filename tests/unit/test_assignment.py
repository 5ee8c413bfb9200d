"""Exact properties of voltha_gevent.assignment, asserted on real values."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing

from voltha_gevent.assignment import (
    AssignmentDiff,
    AssignmentPolicy,
    _new_state,  # private: checks an internal invariant
    desired_assignment,
    diff_assignment,
    plain_bounded_assignment,
)
from voltha_gevent.hash_ring import plain_ring_assignment
from voltha_gevent.load_stats import load_stats

EPS = AssignmentPolicy().epsilon
SETTINGS = settings(max_examples=25, deadline=None)


def _members(n: int, weight: float = 1.0, prefix: str = "m") -> dict[str, float]:
    return {f"{prefix}{i}": weight for i in range(n)}


def _items(k: int, prefix: str = "item-") -> list[str]:
    return [f"{prefix}{i}" for i in range(k)]


def _band(k: int, members: dict[str, float], eps: float = EPS) -> dict[str, tuple[int, int]]:
    """The documented [floor, cap] of every member, recomputed independently."""
    total = sum(members.values())
    out = {}
    for name, weight in members.items():
        share = k * weight / total
        out[name] = (min(math.ceil((1 - eps) * share), math.floor(share)), math.ceil((1 + eps) * share))
    return out


def _assert_valid(result: dict[str, str], members: dict[str, float], items: list[str]) -> None:
    """Every item exactly once, only live members, every load inside the band."""
    assert sorted(result) == sorted(set(items))
    assert set(result.values()) <= set(members)
    loads = Counter(result.values())
    for name, (low, high) in _band(len(set(items)), members).items():
        assert low <= loads[name] <= high, (name, loads[name], low, high)


members_st = st.dictionaries(
    st.integers(0, 60).map(lambda i: f"node-{i}"),
    st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0]),
    min_size=1,
    max_size=25,
)
items_st = st.tuples(st.integers(0, 1200), st.integers(0, 5000)).map(
    lambda t: [f"dev-{i}" for i in range(t[1], t[1] + t[0])]
)


# ------------------------------------------------------------------ basic contract


def test_no_members_or_no_items_gives_empty() -> None:
    assert desired_assignment({}, _items(10)) == {}
    assert desired_assignment(_members(3), []) == {}
    assert desired_assignment({}, [], {"a": "m0"}) == {}


def test_single_member_gets_everything() -> None:
    assert desired_assignment({"solo": 1.0}, ["a", "b", "c"]) == {"a": "solo", "b": "solo", "c": "solo"}


def test_duplicate_items_are_assigned_once() -> None:
    result = desired_assignment(_members(3), ["x", "y", "x", "y", "z"])
    assert sorted(result) == ["x", "y", "z"]


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_invalid_weight_is_rejected(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        desired_assignment({"a": 1.0, "b": weight}, ["x"])


@pytest.mark.parametrize("kwargs", [{"epsilon": -0.1}, {"epsilon": 1.0}, {"vnodes": 0}])
def test_invalid_policy_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AssignmentPolicy(**kwargs)


@SETTINGS
@given(members=members_st, items=items_st)
def test_every_item_once_on_a_live_member_within_band(members: dict[str, float], items: list[str]) -> None:
    _assert_valid(desired_assignment(members, items), members, items)


# ---------------------------------------------------------------------- determinism


@SETTINGS
@given(members=members_st, items=items_st, seed=st.integers(0, 2**32 - 1))
def test_deterministic_across_input_order(members: dict[str, float], items: list[str], seed: int) -> None:
    rng = random.Random(seed)
    current = {item: rng.choice(sorted(members) + ["ghost"]) for item in items if rng.random() < 0.7}
    first = desired_assignment(members, items, current)

    shuffled_members = list(members.items())
    rng.shuffle(shuffled_members)
    shuffled_items = list(items)
    rng.shuffle(shuffled_items)
    shuffled_current = list(current.items())
    rng.shuffle(shuffled_current)
    again = desired_assignment(dict(shuffled_members), iter(shuffled_items), dict(shuffled_current))
    assert again == first


_HASHSEED_SCRIPT = """
import hashlib, json
from voltha_gevent.assignment import desired_assignment
members = {f"m{i}": 1.0 + (i % 3) for i in range(17)}
items = {f"it-{i}" for i in range(3000)}
first = desired_assignment(members, items)
del members["m4"]
second = desired_assignment(members, items, first)
blob = json.dumps([sorted(first.items()), sorted(second.items())]).encode()
print(hashlib.sha256(blob).hexdigest())
"""


def test_independent_of_pythonhashseed() -> None:
    """Sets of items and dict orders vary with the hash seed; the result must not."""
    root = Path(__file__).resolve().parents[2]
    digests = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(root))
        out = subprocess.run(
            [sys.executable, "-c", _HASHSEED_SCRIPT], env=env, check=True, capture_output=True, text=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_plain_ring_matches_uhashring_get_node() -> None:
    """Our bisect walk over get_points() is exactly uhashring's own lookup."""
    members = _members(7)
    items = _items(2000)
    ring = HashRing(nodes=list(members), vnodes=160)
    expected = {item: ring.get_node(item) for item in items}
    assert plain_ring_assignment(members, items) == expected


@SETTINGS
@given(members=members_st, items=items_st)
def test_arc_ranges_find_exactly_the_ring_owners_items(members: dict[str, float], items: list[str]) -> None:
    """The fill step finds a member's ring-arc items by bisecting sorted hashes (no pass
    over all items); that must equal the per-item ring lookup, wrap-around arc included."""
    state = _new_state(members, items, EPS, 160)
    by_owner: dict[int, list[int]] = {m: [] for m in range(len(state.ring.names))}
    for item in range(len(state.items)):
        by_owner[state.ring_owner(item)].append(item)
    assert {m: state.natural_items(m) for m in by_owner} == by_owner
    assert state.ring.owners[0] in by_owner  # some member owns the wrapping arc


# ----------------------------------------------------------------------- weights


def test_weight_two_member_gets_twice_the_share() -> None:
    members = _members(9)
    members["big"] = 2.0
    result = desired_assignment(members, _items(2200))
    loads = Counter(result.values())
    assert loads["big"] == pytest.approx(400, rel=EPS)  # share = 2200 * 2 / 11
    for name in _members(9):
        assert loads[name] == pytest.approx(200, rel=EPS)
    assert 1.9 <= loads["big"] / (sum(loads[n] for n in _members(9)) / 9) <= 2.1


def test_weights_are_unit_free() -> None:
    members = {"a": 1.0, "b": 2.0, "c": 3.5}
    scaled = {name: weight * 10 for name, weight in members.items()}
    items = _items(1500)
    assert desired_assignment(members, items) == desired_assignment(scaled, items)


# -------------------------------------------------------------------------- balance


def test_balance_2000_items_20_members() -> None:
    """Measured: the initial assignment is exactly 100 each; band is [95, 105]."""
    members = _members(20)
    stats = load_stats(desired_assignment(members, _items(2000)), members)
    assert stats.max_over_mean <= 1.02
    assert stats.min_over_mean >= 0.98


def test_bounded_baseline_respects_capacity_but_not_floor() -> None:
    members = _members(20)
    result = plain_bounded_assignment(members, _items(2000), epsilon=0.05)
    loads = Counter(result.values())
    assert sorted(result) == sorted(_items(2000))
    assert max(loads.values()) <= 105
    assert load_stats(result, members).min_over_mean < 0.95  # why desired_assignment fills floors


# ----------------------------------------------------------------------- stickiness


@SETTINGS
@given(members=members_st, items=items_st)
def test_unchanged_inputs_move_nothing(members: dict[str, float], items: list[str]) -> None:
    first = desired_assignment(members, items)
    again = desired_assignment(members, items, first)
    assert again == first
    diff = diff_assignment(first, again)
    assert diff == AssignmentDiff(grants={}, revokes={}, unchanged=len(first))
    assert diff.empty


@SETTINGS
@given(members=members_st, items=items_st, seed=st.integers(0, 2**32 - 1))
def test_leave_moves_only_the_leavers_items(members: dict[str, float], items: list[str], seed: int) -> None:
    if len(members) < 2:
        return
    before = desired_assignment(members, items)
    leaver = random.Random(seed).choice(sorted(members))
    after_members = {name: w for name, w in members.items() if name != leaver}
    after = desired_assignment(after_members, items, before)
    _assert_valid(after, after_members, items)
    # Capacities only grow on a leave, and the leaver's orphans go to members under
    # their (grown) floors first.  So other items move only if rounding lifted the
    # survivors' floors by more than the leaver held, and then only that excess.
    orphans = {item for item, owner in before.items() if owner == leaver}
    loads = Counter(before.values())
    deficit = sum(max(0, low - loads[name]) for name, (low, _) in _band(len(items), after_members).items())
    moved = {item for item in before if after[item] != before[item]}
    assert orphans <= moved
    assert len(moved - orphans) <= max(0, deficit - len(orphans))


def test_leave_at_scale_moves_exactly_the_optimum() -> None:
    members = _members(50)
    items = _items(5000)
    before = desired_assignment(members, items)
    del members["m17"]
    after = desired_assignment(members, items, before)
    diff = diff_assignment(before, after)
    assert set(diff.moves) == {item for item, owner in before.items() if owner == "m17"}
    assert all(old == "m17" for old, _ in diff.moves.values())


@pytest.mark.parametrize("n", [5, 20, 50])
def test_join_moves_about_k_over_n_plus_one_all_to_the_newcomer(n: int) -> None:
    members = _members(n)
    items = _items(4000)
    before = desired_assignment(members, items)
    members["newcomer"] = 1.0
    after = desired_assignment(members, items, before)
    moves = diff_assignment(before, after).moves
    optimum = len(items) / (n + 1)
    assert (1 - EPS) * optimum - 1 <= len(moves) <= 1.15 * optimum
    assert {new for _, new in moves.values()} == {"newcomer"}
    _assert_valid(after, members, items)


def _owner_of_first_point(members: dict[str, float]) -> str:
    """A joiner name that owns the ring's first point, i.e. the arc wrapping past 2**128."""
    for i in range(1000):
        name = f"newcomer-{i}"
        ring = HashRing(nodes={m: {"vnodes": 160, "weight": 1} for m in [*members, name]})
        if ring.get_points()[0][1] == name:
            return name
    raise AssertionError("no candidate owns the first point")


def test_join_takes_the_items_hashing_into_the_newcomers_arcs() -> None:
    """With no capacity shrink to shed and enough such items, every item the newcomer
    receives is one that hashes into its own ring arcs, including the arc that wraps
    past the last point (the newcomer is chosen to own the first point)."""
    members = _members(20)
    items = _items(4000)
    before = desired_assignment(members, items)
    newcomer = _owner_of_first_point(members)
    members[newcomer] = 1.0
    after = desired_assignment(members, items, before)
    moves = diff_assignment(before, after).moves
    ring_owner = plain_ring_assignment(members, items)
    assert len(moves) == 181  # the newcomer's floor: ceil(0.95 * 4000 / 21)
    assert sum(1 for owner in ring_owner.values() if owner == newcomer) >= 181
    assert all(ring_owner[item] == newcomer for item in moves)


@SETTINGS
@given(members=members_st, items=items_st, seed=st.integers(0, 2**32 - 1))
def test_join_moves_stay_under_bound(members: dict[str, float], items: list[str], seed: int) -> None:
    before = desired_assignment(members, items)
    weight = random.Random(seed).choice([1.0, 2.0])
    after_members = dict(members, joiner=weight)
    after = desired_assignment(after_members, items, before)
    _assert_valid(after, after_members, items)
    optimum = len(items) * weight / sum(after_members.values())
    # ceil() in the band costs at most one item per member when shares are tiny.
    assert len(diff_assignment(before, after).moves) <= 1.15 * optimum + len(after_members)


def test_dead_members_and_unknown_items_in_current_are_ignored() -> None:
    members = _members(10)
    items = _items(1000)
    base = desired_assignment(members, items)
    polluted = dict(base)
    polluted.update({f"gone-{i}": "m3" for i in range(50)})  # unknown items
    polluted.update({item: "dead-member" for item in items[:100]})  # dead owner
    cleaned = {item: owner for item, owner in base.items() if item not in items[:100]}
    assert desired_assignment(members, items, polluted) == desired_assignment(members, items, cleaned)
    result = desired_assignment(members, items, polluted)
    _assert_valid(result, members, items)
    assert all(result[item] == base[item] for item in items[100:])


def test_over_capacity_current_is_trimmed_to_the_band() -> None:
    """An operator-skewed current map is pulled back into the band, keeping the rest."""
    members = _members(10)
    items = _items(1000)
    skewed = {item: ("m0" if i < 500 else f"m{1 + i % 9}") for i, item in enumerate(items)}
    result = desired_assignment(members, items, skewed)
    _assert_valid(result, members, items)
    kept = sum(1 for item in items if result[item] == skewed[item])
    assert Counter(result.values())["m0"] == 105  # cap: ceil(1.05 * 100)
    assert kept >= 1000 - 500 + 105 - 1  # only m0's excess and floor lifts move


def test_sticky_false_ignores_current() -> None:
    members = _members(5)
    items = _items(500)
    scrambled = {item: f"m{i % 5}" for i, item in enumerate(items)}
    policy = AssignmentPolicy(sticky=False)
    assert desired_assignment(members, items, scrambled, policy) == desired_assignment(members, items)


def test_item_churn_moves_only_removed_and_added() -> None:
    members = _members(8)
    before = desired_assignment(members, _items(800))
    items = _items(800)[40:] + _items(40, prefix="fresh-")
    after = desired_assignment(members, items, before)
    _assert_valid(after, members, items)
    assert all(after[item] == before[item] for item in _items(800)[40:])


# ---------------------------------------------------------------------------- diff


def test_diff_on_a_hand_computed_example() -> None:
    current = {"a": "m1", "b": "m1", "c": "m2", "gone": "m2", "orphan": "dead"}
    desired = {"a": "m1", "b": "m2", "c": "m2", "new": "m3", "orphan": "m3"}
    diff = diff_assignment(current, desired)
    assert diff.grants == {"b": "m2", "new": "m3", "orphan": "m3"}
    assert diff.revokes == {"b": "m1", "gone": "m2", "orphan": "dead"}
    assert diff.unchanged == 2
    assert diff.moves == {"b": ("m1", "m2"), "orphan": ("dead", "m3")}
    assert not diff.empty


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_diff_adds_up(seed: int) -> None:
    rng = random.Random(seed)
    names = ["m0", "m1", "m2", "m3"]
    current = {f"i{n}": rng.choice(names) for n in rng.sample(range(60), 40)}
    desired = {f"i{n}": rng.choice(names) for n in rng.sample(range(60), 40)}
    diff = diff_assignment(current, desired)
    both = set(current) & set(desired)
    assert diff.unchanged == sum(1 for item in both if current[item] == desired[item])
    assert diff.unchanged + len(diff.grants) == len(desired)
    assert diff.unchanged + len(diff.revokes) == len(current)
    assert set(diff.moves) == {item for item in both if current[item] != desired[item]}
    applied = {item: owner for item, owner in current.items() if item not in diff.revokes}
    applied.update(diff.grants)
    assert applied == desired


# ---------------------------------------------------------------------- load_stats


def test_load_stats_exact_values() -> None:
    members = {"a": 1.0, "b": 1.0, "c": 2.0}
    assignment = {"x1": "a", "x2": "a", "x3": "a", "x4": "c", "x5": "c", "x6": "c", "x7": "c", "x8": "b"}
    stats = load_stats(assignment, members)
    assert stats.loads == {"a": 3, "b": 1, "c": 4}
    assert stats.shares == {"a": 2.0, "b": 2.0, "c": 4.0}
    assert stats.max_over_mean == 1.5
    assert stats.min_over_mean == 0.5


def test_load_stats_rejects_unknown_member() -> None:
    with pytest.raises(ValueError, match="unknown member"):
        load_stats({"x": "ghost"}, {"a": 1.0})

