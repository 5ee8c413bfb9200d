"""Desired item -> member assignment: consistent-hash ring, bounded loads, stickiness.

This module is pure: it imports only the standard library and ``uhashring``, does no
I/O and keeps no state beyond a small cache of immutable rings.  The leader calls
:func:`desired_assignment` with the live members, the workload and the assignment it
currently publishes; the membership and Consul glue live elsewhere.  If the leader's
session dies nothing here needs releasing: the next leader recomputes from its own
view and, thanks to stickiness, reproduces the same map for the same inputs.

Guarantees of :func:`desired_assignment`, for members ``m`` with weight ``w_m > 0``,
``W = sum(w)``, ``K`` distinct items and ``share_m = K * w_m / W``:

* every item is assigned to exactly one live member; no members or no items gives ``{}``;
* the result depends only on the inputs' contents: never on their iteration order nor
  on ``PYTHONHASHSEED`` (ring and item positions are md5, ties are broken by sorting);
* ``floor_m <= load_m <= cap_m`` with ``cap_m = ceil((1 + eps) * share_m)`` and
  ``floor_m = min(ceil((1 - eps) * share_m), floor(share_m))``: every member is within
  ``eps`` of its weighted share up to rounding (the ``floor(share)`` term only matters
  below ``1 / eps`` items per member, where one item is already more than ``eps``);
* stickiness (``policy.sticky``): an item keeps its current live owner unless that
  owner is over its capacity, or the item is needed to lift another member to its
  floor.  So unchanged inputs give zero moves, a leaving member moves only its own
  items, and a joining member receives about ``(1 - eps) * K / (N + 1)`` items.

How: items are placed in passes of a ring walk with a rising per-member limit
(``floor``, then ``floor(share)``, then ``cap``), so items that must move anyway
(orphans of dead members, new items, excess over a shrunken capacity) first go to
members under their floor, then to members under their share, and only then anywhere
with room.  Members still under their floor afterwards take items that hash into
their own ring arcs from the most loaded members (the only non-forced moves).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import md5

from uhashring import HashRing

__all__ = [
    "AssignmentDiff",
    "AssignmentPolicy",
    "LoadStats",
    "desired_assignment",
    "diff_assignment",
    "load_stats",
    "plain_bounded_assignment",
    "plain_ring_assignment",
]

#: Ring points per unit of mean weight for the baselines (uhashring's own default).
DEFAULT_VNODES = 160
#: Size of the cache of built rings; a leader sees few distinct memberships in a row.
_RING_CACHE_SIZE = 16


@dataclass(frozen=True)
class AssignmentPolicy:
    """Tuning of :func:`desired_assignment`.

    ``epsilon`` is the balance band: every member ends within ``[1 - eps, 1 + eps]`` of
    its weighted share.  0.05 keeps a margin inside the project's 0.90/1.10 targets
    while leaving a few items of slack per member so that a small change of K or of
    the membership does not force moves (with ``eps = 0`` every share change of one
    item shifts a floor or a cap).  A joining member is filled to its floor only, so
    a join moves about ``(1 - eps)`` times the optimum; later orphans top it up.

    ``vnodes`` is the number of ring points per unit of mean weight.  The band is
    enforced by the passes, not by the ring, so 160 (uhashring's default) suffices:
    it spreads a leaver's items over most survivors and keeps the ring build (one md5
    per point) at a few milliseconds for 100 members.

    ``sticky=False`` ignores ``current`` and computes the assignment from scratch.
    """

    epsilon: float = 0.05
    vnodes: int = DEFAULT_VNODES
    sticky: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon!r}")
        if self.vnodes < 1:
            raise ValueError(f"vnodes must be >= 1, got {self.vnodes!r}")


@dataclass(frozen=True)
class AssignmentDiff:
    """What the leader must publish to go from ``current`` to ``desired``.

    ``grants`` maps an item to its new member (unassigned before, or moving);
    ``revokes`` maps an item to its old member (moving away, dropped from the
    workload, or held by a member that is gone); ``unchanged`` counts items that keep
    their member.  An item in both is a move.
    """

    grants: dict[str, str]
    revokes: dict[str, str]
    unchanged: int

    @property
    def moves(self) -> dict[str, tuple[str, str]]:
        """Item -> (old member, new member) for items both revoked and granted."""
        return {item: (old, self.grants[item]) for item, old in self.revokes.items() if item in self.grants}

    @property
    def empty(self) -> bool:
        """True when nothing has to be granted or revoked."""
        return not self.grants and not self.revokes


@dataclass(frozen=True)
class LoadStats:
    """Per-member loads relative to the weighted share ``K * w_m / W``.

    ``max_over_mean`` / ``min_over_mean`` are the largest / smallest ``load / share``
    (1.0 when there is nothing to share).  ``ratios`` holds every member's ratio.
    """

    loads: dict[str, int]
    shares: dict[str, float]
    ratios: dict[str, float] = field(repr=False)
    max_over_mean: float
    min_over_mean: float


# --------------------------------------------------------------------------- hashing


def _hash(key: str) -> int:
    """uhashring's default key hash (md5 of ``str(key)`` as a big-endian integer)."""
    return int.from_bytes(md5(str(key).encode("utf-8")).digest(), "big")


@dataclass(frozen=True)
class _Ring:
    """An immutable view of a uhashring continuum, indexed by member number."""

    names: tuple[str, ...]  # member ids, sorted
    points: tuple[int, ...]  # sorted point hashes
    owners: tuple[int, ...]  # member number of each point
    member_points: tuple[tuple[int, ...], ...]  # point indices of each member

    def position(self, key_hash: int) -> int:
        """Index of the first point clockwise from ``key_hash`` (uhashring's rule)."""
        pos = bisect_right(self.points, key_hash)
        return 0 if pos == len(self.points) else pos


def _check_members(members: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """Members sorted by id with float weights; reject weights that are not > 0."""
    checked = []
    for name in sorted(members):
        weight = float(members[name])
        if not (weight > 0.0 and math.isfinite(weight)):
            raise ValueError(f"member {name!r} has weight {members[name]!r}; weights must be finite and > 0")
        checked.append((name, weight))
    return tuple(checked)


def _ring_for(members: Mapping[str, float], vnodes: int) -> _Ring:
    """The (cached) ring of ``members``; weights are scaled to a mean of 1."""
    return _build_ring(_check_members(members), vnodes)


@lru_cache(maxsize=_RING_CACHE_SIZE)
def _build_ring(members: tuple[tuple[str, float], ...], vnodes: int) -> _Ring:
    """Build the continuum with ONE uhashring constructor call (add_node is quadratic).

    uhashring multiplies vnodes by an integer weight, so the float weight is folded
    into a per-member vnode count instead: ``round(vnodes * w / mean(w))``, at least 1.
    Scaling by the mean makes the ring independent of the weights' unit.
    """
    mean = sum(w for _, w in members) / len(members)
    nodes = {name: {"vnodes": max(1, round(vnodes * w / mean)), "weight": 1} for name, w in members}
    names = tuple(name for name, _ in members)
    index = {name: i for i, name in enumerate(names)}
    ring_points = HashRing(nodes=nodes).get_points()
    owners = tuple(index[node] for _, node in ring_points)
    member_points: list[list[int]] = [[] for _ in names]
    for point_index, owner in enumerate(owners):
        member_points[owner].append(point_index)
    return _Ring(
        names=names,
        points=tuple(point for point, _ in ring_points),
        owners=owners,
        member_points=tuple(tuple(p) for p in member_points),
    )


def _ordered_items(items: Iterable[str]) -> tuple[list[str], list[int]]:
    """Distinct items sorted by (hash, id) and their hashes: the canonical order."""
    pairs = sorted({(_hash(item), item) for item in items})
    return [item for _, item in pairs], [h for h, _ in pairs]


# ----------------------------------------------------------------------- placement


@dataclass
class _State:
    """Mutable working state of one computation; members and items are numbered."""

    ring: _Ring
    items: list[str]
    positions: list[int]  # ring point index of each item
    shares: list[float]
    floors: list[int]
    caps: list[int]
    owner: list[int]  # member number per item, -1 while unplaced
    load: list[int]

    def assign(self, item: int, member: int) -> None:
        """Give ``item`` to ``member``, taking it from its previous owner if any."""
        previous = self.owner[item]
        if previous >= 0:
            self.load[previous] -= 1
        self.owner[item] = member
        self.load[member] += 1

    def ring_owner(self, item: int) -> int:
        """The member whose ring arc the item hashes into."""
        return self.ring.owners[self.positions[item]]

    def result(self) -> dict[str, str]:
        names = self.ring.names
        return {item: names[m] for item, m in zip(self.items, self.owner, strict=True)}


def _new_state(members: Mapping[str, float], items: Iterable[str], epsilon: float, vnodes: int) -> _State:
    """Hash everything and compute every member's share, floor and capacity."""
    ring = _ring_for(members, vnodes)
    ordered, hashes = _ordered_items(items)
    total = sum(float(members[name]) for name in ring.names)
    shares = [len(ordered) * float(members[name]) / total for name in ring.names]
    return _State(
        ring=ring,
        items=ordered,
        positions=[ring.position(h) for h in hashes],
        shares=shares,
        floors=[min(math.ceil((1.0 - epsilon) * s), math.floor(s)) for s in shares],
        caps=[math.ceil((1.0 + epsilon) * s) for s in shares],
        owner=[-1] * len(ordered),
        load=[0] * len(ring.names),
    )


def _walk_place(state: _State, pending: list[int], limits: Sequence[int]) -> list[int]:
    """Bounded-loads walk: put each pending item on the first member clockwise from its
    ring position whose load is under ``limits[m]``; return the items left over once
    every member has reached its limit.

    Full members' points are skipped with a union-find "next open point" table, so a
    pass costs O(points + items) however crowded the ring gets (a naive walk is
    quadratic when most members are full).
    """
    ring, load = state.ring, state.load
    n_points = len(ring.points)
    nxt = list(range(n_points + 1))  # nxt[p] == p means point p is open; n_points is a sentinel
    open_members = 0
    for member, points in enumerate(ring.member_points):
        if load[member] >= limits[member]:
            for p in points:
                nxt[p] = p + 1
        else:
            open_members += 1

    def find(p: int) -> int:
        while nxt[p] != p:
            nxt[p] = nxt[nxt[p]]
            p = nxt[p]
        return p

    for done, item in enumerate(pending):
        if open_members == 0:
            return pending[done:]
        p = find(state.positions[item])
        if p == n_points:
            p = find(0)
        member = ring.owners[p]
        state.assign(item, member)
        if load[member] >= limits[member]:
            open_members -= 1
            for q in ring.member_points[member]:
                nxt[q] = q + 1
    return []


def _place_pending(state: _State, pending: list[int]) -> None:
    """Place unowned items with rising limits: floor, then fair share, then capacity."""
    targets = [max(f, math.floor(s)) for f, s in zip(state.floors, state.shares, strict=True)]
    for limits in (state.floors, targets, state.caps):
        pending = _walk_place(state, pending, limits)
        if not pending:
            return
    raise AssertionError("capacities sum to at least K; every item must have been placed")


def _keep_current(state: _State, current: Mapping[str, str]) -> list[int]:
    """Keep each item with its live current owner up to that owner's capacity.

    An owner over capacity (K shrank, a member joined, weights changed) keeps first
    the items that hash into its own arcs, then those whose ring owner has enough
    items already, so the shed items tend to be the ones a short member wants.
    Returns the items left unowned, in canonical order.
    """
    index = {name: i for i, name in enumerate(state.ring.names)}
    held: list[list[int]] = [[] for _ in state.ring.names]
    for item, name in enumerate(state.items):
        member = index.get(current.get(name, ""), -1)
        if member >= 0:
            held[member].append(item)
    for member, its_items in enumerate(held):
        if len(its_items) > state.caps[member]:
            its_items.sort(key=lambda i, m=member: _shed_rank(state, held, i, m))
        for item in its_items[: state.caps[member]]:
            state.assign(item, member)
    return [item for item, member in enumerate(state.owner) if member < 0]


def _shed_rank(state: _State, held: list[list[int]], item: int, holder: int) -> tuple[int, int]:
    """Sort key for an over-capacity holder: low keeps, high sheds."""
    natural = state.ring_owner(item)
    if natural == holder:
        return (0, item)
    wanted = len(held[natural]) < state.floors[natural]
    return (2 if wanted else 1, item)


def _fill_floors(state: _State) -> None:
    """Lift every member still under its floor, taking items from the most loaded.

    Natural items (hashing into the short member's arcs) are taken first, from members
    above their share, then from any member above its floor; only if that is not
    enough are arbitrary items taken from the member most above its share.  A donor
    never drops under its own floor, and since the floors sum to at most K a donor
    always exists.
    """
    needy = [m for m in range(len(state.load)) if state.load[m] < state.floors[m]]
    if not needy:
        return
    natural: list[list[int]] = [[] for _ in state.load]
    for item in range(len(state.items)):
        natural[state.ring_owner(item)].append(item)
    for member in needy:
        _take_natural(state, member, natural[member])
    for member in needy:
        _take_from_richest(state, member)


def _take_natural(state: _State, member: int, candidates: list[int]) -> None:
    """Move the member's natural items to it, from rich donors first."""
    load, floors = state.load, state.floors
    thresholds = ([math.ceil(s) for s in state.shares], floors)
    for threshold in thresholds:
        for item in candidates:
            if load[member] >= floors[member]:
                return
            donor = state.owner[item]
            if donor != member and load[donor] > threshold[donor]:
                state.assign(item, member)


def _take_from_richest(state: _State, member: int) -> None:
    """Fallback: move items from the member with the highest load/share ratio."""
    load, floors = state.load, state.floors
    if load[member] >= floors[member]:
        return
    held: list[list[int]] = [[] for _ in load]
    for item in reversed(range(len(state.items))):
        held[state.owner[item]].append(item)
    heap = [(-load[m] / state.shares[m], m) for m in range(len(load)) if load[m] > floors[m]]
    heapq.heapify(heap)
    while load[member] < floors[member]:
        _, donor = heapq.heappop(heap)
        state.assign(held[donor].pop(), member)
        if load[donor] > floors[donor]:
            heapq.heappush(heap, (-load[donor] / state.shares[donor], donor))


# ------------------------------------------------------------------------ public API


def desired_assignment(
    members: Mapping[str, float],
    items: Iterable[str],
    current: Mapping[str, str] | None = None,
    policy: AssignmentPolicy = AssignmentPolicy(),
) -> dict[str, str]:
    """item -> member. ``members`` maps member id -> capacity weight (> 0).

    ``current`` is the assignment in force; entries naming a member not in ``members``
    or an item not in ``items`` are ignored.  See the module docstring for the
    guarantees (band ``[floor, cap]``, stickiness, determinism).
    """
    if not members:
        return {}
    state = _new_state(members, items, policy.epsilon, policy.vnodes)
    if not state.items:
        return {}
    if policy.sticky and current:
        pending = _keep_current(state, current)
    else:
        pending = list(range(len(state.items)))
    _place_pending(state, pending)
    _fill_floors(state)
    return state.result()


def diff_assignment(current: Mapping[str, str], desired: Mapping[str, str]) -> AssignmentDiff:
    """Grants, revokes and the unchanged count that turn ``current`` into ``desired``."""
    grants = {item: member for item, member in desired.items() if current.get(item) != member}
    revokes = {item: member for item, member in current.items() if desired.get(item) != member}
    return AssignmentDiff(grants=grants, revokes=revokes, unchanged=len(desired) - len(grants))


def plain_ring_assignment(
    members: Mapping[str, float], items: Iterable[str], vnodes: int = DEFAULT_VNODES
) -> dict[str, str]:
    """Baseline: every item goes to its ring owner (same ring as desired_assignment)."""
    if not members:
        return {}
    ring = _ring_for(members, vnodes)
    ordered, hashes = _ordered_items(items)
    return {item: ring.names[ring.owners[ring.position(h)]] for item, h in zip(ordered, hashes, strict=True)}


def plain_bounded_assignment(
    members: Mapping[str, float], items: Iterable[str], epsilon: float, vnodes: int = DEFAULT_VNODES
) -> dict[str, str]:
    """Baseline: consistent hashing with bounded loads, no stickiness and no floor.

    Items are walked in canonical (hash) order; an item whose ring owner is at
    capacity goes to the next member clockwise with room.
    """
    if not members:
        return {}
    state = _new_state(members, items, epsilon, vnodes)
    leftover = _walk_place(state, list(range(len(state.items))), state.caps)
    if leftover:
        raise AssertionError("capacities sum to at least K; every item must have been placed")
    return state.result()


def load_stats(assignment: Mapping[str, str], members: Mapping[str, float]) -> LoadStats:
    """Loads of ``members`` under ``assignment`` relative to their weighted shares.

    Members without items count with load 0.  Raises ValueError if an item is
    assigned to a member not in ``members`` (that is a bug, not a statistic).
    """
    checked = _check_members(members)
    loads = {name: 0 for name, _ in checked}
    for item, name in assignment.items():
        if name not in loads:
            raise ValueError(f"item {item!r} is assigned to unknown member {name!r}")
        loads[name] += 1
    total = sum(w for _, w in checked)
    shares = {name: len(assignment) * w / total for name, w in checked}
    ratios = {name: (loads[name] / shares[name] if shares[name] else 1.0) for name in loads}
    return LoadStats(
        loads=loads,
        shares=shares,
        ratios=ratios,
        max_over_mean=max(ratios.values(), default=1.0),
        min_over_mean=min(ratios.values(), default=1.0),
    )
