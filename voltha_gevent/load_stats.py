"""How balanced an assignment is: each member's load against its weighted share.

Pure: a measurement for tests, benchmarks and logs, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .hash_ring import check_members


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


def load_stats(assignment: Mapping[str, str], members: Mapping[str, float]) -> LoadStats:
    """Loads of ``members`` under ``assignment`` relative to their weighted shares.

    Members without items count with load 0.  Raises ValueError if an item is
    assigned to a member not in ``members`` (that is a bug, not a statistic).
    """
    checked = check_members(members)
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


__all__ = ["LoadStats", "load_stats"]
