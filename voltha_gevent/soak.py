"""The leader's soak: wait for a quiet cluster, and plan the reassignment meanwhile.

:class:`Soak` waits until members, workload, drains and pins have been quiet for ``soak``
seconds, capped at ``max_soak_delay`` after the first change, so that a burst of changes
costs one reassignment.

Why plan meanwhile. The soak is idle by design. Planning came after it - the current map
from the published documents, then the bounded-load ring over every item - and at 100,000
items that took 0.1-0.3 s of a failover on a loaded machine, between the soak's end and the
first write. So the leader plans *during* the soak (:meth:`PlanDraft.prepare`), once a short
part of it passed without a change (a burst of joins would otherwise plan once per member),
and the reassignment takes that plan (:meth:`PlanDraft.desired`) when its inputs are still
equal.

Why reuse is safe: the desired map is a pure function of its inputs - member weights, the
workload, the current map, drains and pins (:func:`plan`) - and all of them are compared, by
value, at the reassignment. Anything that changed since, including an assignment read
afresh, fails the comparison and the plan is computed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import gevent.event

from .assignment import AssignmentPolicy
from .membership import MemberRecord
from .placement import Placement, placed_assignment

#: The part of the soak that must pass without a change before the leader plans ahead.
DRAFT_AFTER = 0.25


@dataclass(frozen=True)
class PlanInputs:
    """Everything the desired map depends on (compared by value)."""

    weights: Mapping[str, float]
    items: frozenset[str] | set[str]
    current: Mapping[str, str]
    placement: Placement


def current_owners(assigned: Mapping[str, Collection[str]]) -> dict[str, str]:
    """item -> member as published; an item published to two members counts for the first by name."""
    return {item: (next(iter(ms)) if len(ms) == 1 else min(ms)) for item, ms in assigned.items() if ms}


def plan_inputs(members: Mapping[str, MemberRecord], items: frozenset[str] | set[str],
                assigned: Mapping[str, Collection[str]], placement: Placement) -> PlanInputs:
    return PlanInputs({m: record.capacity for m, record in members.items()}, items,
                      current_owners(assigned), placement)


def plan(inputs: PlanInputs, policy: AssignmentPolicy) -> dict[str, str]:
    """The desired map (see :func:`~voltha_gevent.placement.placed_assignment`)."""
    return placed_assignment(inputs.weights, inputs.items, inputs.current, inputs.placement, policy)


class PlanDraft:
    """The last plan and the inputs it was made from."""

    def __init__(self, policy: AssignmentPolicy) -> None:
        self.policy = policy
        self._inputs: PlanInputs | None = None
        self._desired: dict[str, str] = {}
        self.reused = 0  # reassignments that took the plan made during their soak

    def prepare(self, inputs: PlanInputs) -> None:
        """Plan ahead for ``inputs``."""
        self._desired = plan(inputs, self.policy)
        self._inputs = inputs

    def desired(self, inputs: PlanInputs) -> dict[str, str]:
        """The desired map for ``inputs``: the prepared one when they are equal, else a new plan."""
        if self._inputs is not None and self._inputs == inputs:
            self.reused += 1
        else:
            self._desired = plan(inputs, self.policy)
        self._inputs = None  # used once: the caller changes the published map next
        return self._desired


class Soak:
    """The soak's clock: ``wait`` returns once ``changed`` stayed clear for ``soak`` seconds.

    ``changed`` is set by every change that restarts the soak; ``stop`` ends the wait.
    ``plan_ahead`` runs once per quiet stretch, after :data:`DRAFT_AFTER` of the soak.
    """

    def __init__(self, soak: float, max_delay: float, changed: gevent.event.Event, stop: gevent.event.Event,
                 plan_ahead: Callable[[], None]) -> None:
        self.soak = soak
        self.max_delay = max_delay
        self.changed = changed
        self.stop = stop
        self.plan_ahead = plan_ahead

    def wait(self, quiet_since: float | None = None) -> bool:
        """True when the soak is over; False when stopped. ``quiet_since``: a first stretch
        that began earlier (a new leader counts from the last member change it saw)."""
        first = time.monotonic()
        while not self.stop.is_set():
            self.changed.clear()
            remaining = self.soak
            if quiet_since is not None:
                remaining = max(0.0, quiet_since + self.soak - time.monotonic())
                quiet_since = None
            if self.max_delay:
                remaining = min(remaining, first + self.max_delay - time.monotonic())
            if remaining <= 0:
                return True
            deadline = time.monotonic() + remaining
            if self.changed.wait(min(remaining, DRAFT_AFTER * self.soak)):
                continue
            self.plan_ahead()
            if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                return True
        return False


__all__ = ["DRAFT_AFTER", "PlanDraft", "PlanInputs", "Soak", "current_owners", "plan", "plan_inputs"]
