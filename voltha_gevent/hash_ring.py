"""The hash ring: member points and item positions, uhashring's md5 continuum.

Pure: imports only the standard library and ``uhashring``, no I/O; built rings are
immutable and cached (a leader sees few distinct memberships in a row). Item and ring
positions are md5, so nothing depends on ``PYTHONHASHSEED`` or on iteration order.
:mod:`voltha_gevent.assignment` walks this ring to place items within the balance band;
:func:`plain_ring_assignment` is the baseline with no band at all.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from hashlib import md5

from uhashring import HashRing

#: Ring points per unit of mean weight for the baselines (uhashring's own default).
DEFAULT_VNODES = 160
#: Size of the cache of built rings; a leader sees few distinct memberships in a row.
RING_CACHE_SIZE = 16


@dataclass(frozen=True)
class Ring:
    """An immutable view of a uhashring continuum, indexed by member number."""

    names: tuple[str, ...]  # member ids, sorted
    points: tuple[bytes, ...]  # sorted point hashes as 16-byte big-endian md5 digests
    owners: tuple[int, ...]  # member number of each point
    member_points: tuple[tuple[int, ...], ...]  # point indices of each member

    def positions(self, key_hashes: Iterable[bytes]) -> list[int]:
        """Index of the first point clockwise from each hash (uhashring's rule:
        bisect right, wrapping past the last point to the first)."""
        points, n_points = self.points, len(self.points)
        return [bisect_right(points, h) % n_points for h in key_hashes]


def check_members(members: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    """Members sorted by id with float weights; reject weights that are not > 0."""
    checked = []
    for name in sorted(members):
        weight = float(members[name])
        if not (weight > 0.0 and math.isfinite(weight)):
            raise ValueError(f"member {name!r} has weight {members[name]!r}; weights must be finite and > 0")
        checked.append((name, weight))
    return tuple(checked)


def ring_for(members: Mapping[str, float], vnodes: int) -> Ring:
    """The (cached) ring of ``members``; weights are scaled to a mean of 1."""
    return build_ring(check_members(members), vnodes)


@lru_cache(maxsize=RING_CACHE_SIZE)
def build_ring(members: tuple[tuple[str, float], ...], vnodes: int) -> Ring:
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
    return Ring(
        names=names,
        points=tuple(point.to_bytes(16, "big") for point, _ in ring_points),
        owners=owners,
        member_points=tuple(tuple(p) for p in member_points),
    )


#: The last workload ordered, and its order: a leader orders the same workload again at every
#: reassignment (100,000 md5 digests and a sort, a third of a failover's planning).
_last_ordered: tuple[frozenset[str], tuple[list[str], list[bytes]]] | None = None


def ordered_items(items: Iterable[str]) -> tuple[list[str], list[bytes]]:
    """Distinct items sorted by (hash, id) and their hashes: the canonical order.

    Hashes are uhashring's md5 kept as 16-byte digests: bytes order equals the order
    of uhashring's big-endian integers and skips 100k int conversions.  Sorting an
    index by digest is several times faster than sorting (hash, id) tuples; ids only
    break ties between distinct items with equal md5, fixed up afterwards. The result
    for the same set of items as the previous call is that call's (callers never mutate it).
    """
    global _last_ordered
    workload = frozenset(items)
    if _last_ordered is not None and _last_ordered[0] == workload:
        return _last_ordered[1]
    result = _ordered(workload)
    _last_ordered = (workload, result)
    return result


def _ordered(items: frozenset[str]) -> tuple[list[str], list[bytes]]:
    distinct = list(items)
    hashes = [md5(item.encode("utf-8")).digest() for item in distinct]
    order = sorted(range(len(distinct)), key=hashes.__getitem__)
    ordered = [distinct[i] for i in order]
    ordered_hashes = [hashes[i] for i in order]
    for i in range(1, len(ordered_hashes)):
        if ordered_hashes[i] == ordered_hashes[i - 1]:
            return sort_ties(ordered, ordered_hashes)
    return ordered, ordered_hashes


def sort_ties(ordered: list[str], hashes: list[bytes]) -> tuple[list[str], list[bytes]]:
    """Slow path for md5 collisions: sort by (hash, id) so set order cannot leak in."""
    pairs = sorted(zip(hashes, ordered, strict=True))
    return [item for _, item in pairs], [h for h, _ in pairs]


def plain_ring_assignment(
    members: Mapping[str, float], items: Iterable[str], vnodes: int = DEFAULT_VNODES
) -> dict[str, str]:
    """Baseline: every item goes to its ring owner (same ring as desired_assignment)."""
    if not members:
        return {}
    ring = ring_for(members, vnodes)
    ordered, hashes = ordered_items(items)
    owners = [ring.names[ring.owners[p]] for p in ring.positions(hashes)]
    return dict(zip(ordered, owners, strict=True))


__all__ = [
    "DEFAULT_VNODES",
    "Ring",
    "build_ring",
    "check_members",
    "ordered_items",
    "plain_ring_assignment",
    "ring_for",
]
