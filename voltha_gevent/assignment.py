"""Desired item -> member assignment: consistent-hash ring, bounded loads, stickiness.

This module is pure: it imports only the standard library and :mod:`~voltha_gevent.hash_ring`
(``uhashring``), does no I/O and keeps no state beyond the ring's small cache of immutable
rings (:mod:`~voltha_gevent.load_stats` measures a result).  The leader calls
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
  items (plus, at a handful of items per member, any excess of the survivors' rounded
  floors over what it held), and a joining member receives about
  ``(1 - eps) * K / (N + 1)`` items, all from its own ring arcs when enough are there.

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
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .hash_ring import DEFAULT_VNODES, Ring, ordered_items, ring_for

__all__ = [
    "AssignmentDiff",
    "AssignmentPolicy",
    "desired_assignment",
    "diff_assignment",
    "plain_bounded_assignment",
]


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


# Placement


@dataclass
class _State:
    """Mutable working state of one computation; members and items are numbered.

    Items are numbered in canonical (hash) order, so an item's number is also its
    deterministic tie-breaker and the items hashing into one ring arc are contiguous.
    """

    ring: Ring
    items: list[str]
    hashes: list[bytes]
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
        return self.ring.owners[self.ring.positions((self.hashes[item],))[0]]

    def natural_items(self, member: int) -> list[int]:
        """Items hashing into the member's arcs, in canonical order, found by bisecting
        the sorted hashes at each arc's ends (no pass over all K items)."""
        points, hashes = self.ring.points, self.hashes
        ranges = []
        for p in self.ring.member_points[member]:
            hi = bisect_left(hashes, points[p])
            if p == 0:  # the first arc wraps around past the last point
                ranges.append((bisect_left(hashes, points[-1]), len(hashes)))
                ranges.append((0, hi))
            else:
                ranges.append((bisect_left(hashes, points[p - 1]), hi))
        return [item for lo, hi in sorted(ranges) for item in range(lo, hi)]

    def result(self) -> dict[str, str]:
        return dict(zip(self.items, map(self.ring.names.__getitem__, self.owner), strict=True))


def _new_state(members: Mapping[str, float], items: Iterable[str], epsilon: float, vnodes: int) -> _State:
    """Hash everything and compute every member's share, floor and capacity."""
    ring = ring_for(members, vnodes)
    ordered, hashes = ordered_items(items)
    total = sum(float(members[name]) for name in ring.names)
    shares = [len(ordered) * float(members[name]) / total for name in ring.names]
    return _State(
        ring=ring,
        items=ordered,
        hashes=hashes,
        shares=shares,
        floors=[min(math.ceil((1.0 - epsilon) * s), math.floor(s)) for s in shares],
        caps=[math.ceil((1.0 + epsilon) * s) for s in shares],
        owner=[-1] * len(ordered),
        load=[0] * len(ring.names),
    )


def _walk_place(state: _State, pending: list[int], positions: list[int], limits: Sequence[int]) -> int:
    """Bounded-loads walk: put each pending item on the first member clockwise from its
    ring position whose load is under ``limits[m]``.  Returns how many items were
    placed (a prefix of ``pending``): it stops when every member reached its limit.

    Full members' points are skipped with a union-find "next open point" table, so a
    pass costs O(points + items) however crowded the ring gets (a naive walk is
    quadratic when most members are full).
    """
    load, owner, owners, member_points = state.load, state.owner, state.ring.owners, state.ring.member_points
    n_points = len(owners)
    nxt = list(range(n_points + 1))  # nxt[p] == p: point p is open; n_points is a sentinel
    open_members = 0
    for member, points in enumerate(member_points):
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

    for done, (item, position) in enumerate(zip(pending, positions, strict=True)):
        if open_members == 0:
            return done
        p = find(position)
        if p == n_points:
            p = find(0)
        member = owners[p]
        owner[item] = member  # pending items are unowned: no previous load to drop
        load[member] += 1
        if load[member] >= limits[member]:
            open_members -= 1
            for q in member_points[member]:
                nxt[q] = q + 1
    return len(pending)


def _place_pending(state: _State, pending: list[int], limit_passes: Sequence[Sequence[int]]) -> None:
    """Place unowned items (canonical order) in passes of rising per-member limits."""
    positions = state.ring.positions(state.hashes[item] for item in pending)
    for limits in limit_passes:
        done = _walk_place(state, pending, positions, limits)
        pending, positions = pending[done:], positions[done:]
        if not pending:
            return
    raise AssertionError("capacities sum to at least K; every item must have been placed")


def _limit_passes(state: _State) -> tuple[list[int], list[int], list[int]]:
    """Floor first (short members), then the fair share, then the capacity."""
    targets = [max(f, math.floor(s)) for f, s in zip(state.floors, state.shares, strict=True)]
    return state.floors, targets, state.caps


def _keep_current(state: _State, current: Mapping[str, str]) -> list[int]:
    """Keep each item with its live current owner up to that owner's capacity.

    Returns the items left unowned (new, orphaned or shed), in canonical order.
    """
    index = {name: i for i, name in enumerate(state.ring.names)}
    holders = list(map(index.get, map(current.get, state.items)))  # index.get(None) is None
    counts = Counter(holders)
    counts.pop(None, None)
    state.owner[:] = [-1 if m is None else m for m in holders]
    for member, count in counts.items():
        state.load[member] = count
    over = {m for m, count in counts.items() if count > state.caps[m]}
    if over:
        _shed_excess(state, over, counts)
    return [item for item, member in enumerate(state.owner) if member < 0]


def _shed_excess(state: _State, over: set[int], counts: Mapping[int, int]) -> None:
    """Unassign the excess of members over capacity (K shrank, a member joined).

    A holder keeps first the items hashing into its own arcs, then those whose ring
    owner has enough already; it sheds first items a short member wants, so the
    floor pass of the walk hands them straight to that member.  Ties keep the
    canonical order.
    """
    held: dict[int, list[int]] = {m: [] for m in over}
    for item, member in enumerate(state.owner):
        if member in held:
            held[member].append(item)
    owners, floors = state.ring.owners, state.floors
    for member in sorted(over):
        own, neutral, wanted = [], [], []
        positions = state.ring.positions(state.hashes[item] for item in held[member])
        for item, position in zip(held[member], positions, strict=True):
            natural = owners[position]
            if natural == member:
                own.append(item)
            elif counts.get(natural, 0) < floors[natural]:
                wanted.append(item)
            else:
                neutral.append(item)
        for item in (own + neutral + wanted)[state.caps[member] :]:
            state.owner[item] = -1
            state.load[member] -= 1


def _fill_floors(state: _State) -> None:
    """Lift every member still under its floor, taking items from the most loaded.

    Natural items (hashing into the short member's arcs) are taken first, from members
    above their share, then from any member above its floor; only if that is not
    enough are arbitrary items taken from the member most above its share.  A donor
    never drops under its own floor, and since the floors sum to at most K a donor
    always exists.
    """
    needy = [m for m in range(len(state.load)) if state.load[m] < state.floors[m]]
    for member in needy:
        _take_natural(state, member, state.natural_items(member))
    still_needy = [m for m in needy if state.load[m] < state.floors[m]]
    if still_needy:
        _take_from_richest(state, still_needy)


def _take_natural(state: _State, member: int, candidates: list[int]) -> None:
    """Move the member's natural items to it, from rich donors first."""
    load, floors = state.load, state.floors
    for threshold in ([math.ceil(s) for s in state.shares], floors):
        for item in candidates:
            if load[member] >= floors[member]:
                return
            donor = state.owner[item]
            if donor != member and load[donor] > threshold[donor]:
                state.assign(item, member)


def _take_from_richest(state: _State, needy: list[int]) -> None:
    """Fallback: move items (lowest hash first) from the highest load/share ratio."""
    load, floors = state.load, state.floors
    held: list[list[int]] = [[] for _ in load]
    for item in reversed(range(len(state.items))):
        held[state.owner[item]].append(item)
    heap = [(-load[m] / state.shares[m], m) for m in range(len(load)) if load[m] > floors[m]]
    heapq.heapify(heap)
    for member in needy:
        while load[member] < floors[member]:
            _, donor = heapq.heappop(heap)
            state.assign(held[donor].pop(), member)
            if load[donor] > floors[donor]:
                heapq.heappush(heap, (-load[donor] / state.shares[donor], donor))


# Public API


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
    _place_pending(state, pending, _limit_passes(state))
    _fill_floors(state)
    return state.result()


def diff_assignment(current: Mapping[str, str], desired: Mapping[str, str]) -> AssignmentDiff:
    """Grants, revokes and the unchanged count that turn ``current`` into ``desired``."""
    grants = {item: member for item, member in desired.items() if current.get(item) != member}
    revokes = {item: member for item, member in current.items() if desired.get(item) != member}
    return AssignmentDiff(grants=grants, revokes=revokes, unchanged=len(desired) - len(grants))


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
    _place_pending(state, list(range(len(state.items))), (state.caps,))
    return state.result()

