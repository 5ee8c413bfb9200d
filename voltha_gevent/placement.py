"""Operator constraints on top of the ring: drained members and pinned items. Pure.

Kept apart from :mod:`voltha_gevent.assignment` so the ring stays a function of weights,
items and the current map only; this module narrows those inputs and adds the pins, and,
like the ring, imports nothing that does I/O.

Rules (:func:`placed_assignment`):

* a **draining** member stays a member (it keeps its record, may keep leading) but gets no
  item: it is left out of the ring, so its items are orphans that the ring re-places, as if
  it had left - but the leader, seeing it still live, moves them by graceful handover;
* a **pin** ``item -> member`` places the item on that member, outside the ring and its
  balance band, while the member is live and not draining; otherwise the pin is dormant and
  the ring places the item like any other (it moves back once the member is live and
  undrained). Pins of items not in the workload are ignored;
* when every live member drains, unpinned items are unassigned (nobody may run them).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from .assignment import AssignmentPolicy, desired_assignment

__all__ = ["Placement", "active_pins", "placed_assignment"]


@dataclass(frozen=True)
class Placement:
    """The operator's constraints as read from Consul: drained members and pins."""

    draining: frozenset[str] = frozenset()
    pins: Mapping[str, str] = field(default_factory=dict)


def active_pins(pins: Mapping[str, str], members: Collection[str], draining: Collection[str],
                items: Collection[str]) -> dict[str, str]:
    """The pins that apply now: item in the workload, member live and not draining."""
    return {item: member for item, member in pins.items()
            if item in items and member in members and member not in draining}


def placed_assignment(
    members: Mapping[str, float],
    items: Iterable[str],
    current: Mapping[str, str] | None = None,
    placement: Placement = Placement(),
    policy: AssignmentPolicy = AssignmentPolicy(),
) -> dict[str, str]:
    """item -> member, as :func:`~voltha_gevent.assignment.desired_assignment` for the
    members that do not drain and the items nobody pinned, plus the active pins."""
    items = items if isinstance(items, (set, frozenset)) else set(items)
    pinned = active_pins(placement.pins, members, placement.draining, items)
    eligible = {m: w for m, w in members.items() if m not in placement.draining}
    if not pinned:  # the usual case: no copies of a 100,000-item workload and its result
        return desired_assignment(eligible, items, current, policy)
    free = items - pinned.keys()
    kept = {item: m for item, m in (current or {}).items() if item in free}
    return {**desired_assignment(eligible, free, kept, policy), **pinned}
