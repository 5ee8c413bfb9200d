"""The leader's view of the operator's constraints: ``drain/`` and ``pins/``.

Two blocking-query watches the leader runs next to its members and workload watches; a
change calls ``on_change`` (the leader's soak starts, as for any membership change). What
they hold is read by :mod:`voltha_gevent.keys` and applied by the pure
:mod:`voltha_gevent.placement`. A member's own ``draining`` flag comes with its member
record, so draining here is the union of both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .consul_api import ConsulAPI
from .entries import KVEntry
from .keys import Keys, drained_members, parse_pins
from .membership import MemberRecord
from .placement import Placement
from .watch import WatchFactory


class PlacementWatch:
    """Drains and pins as last seen; ``watches`` are started and stopped by the leader."""

    def __init__(self, watch_api: ConsulAPI, keys: Keys, *, wait: float,
                 on_change: Callable[[], None]) -> None:
        self.keys = keys
        self.on_change = on_change
        self.drains: set[str] = set()
        self.pins: dict[str, str] = {}
        watches = WatchFactory(watch_api, wait)
        self.watches = [
            watches.keys(keys.drains, self._on_drains, separator="/", name="leader-drains"),
            watches.tree(keys.pins, self._on_pins, name="leader-pins"),
        ]

    def _on_drains(self, names: list[str]) -> None:
        drains = drained_members(self.keys.drains, names)
        if drains != self.drains:
            self.drains = drains
            self.on_change()

    def _on_pins(self, entries: list[KVEntry]) -> None:
        pins = parse_pins(self.keys.pins, entries)
        if pins != self.pins:
            self.pins = pins
            self.on_change()

    def placement(self, members: Mapping[str, MemberRecord]) -> Placement:
        """Operator drains plus members that drain themselves, and the pins."""
        draining = self.drains | {m for m, record in members.items() if record.draining}
        return Placement(draining=frozenset(draining), pins=dict(self.pins))
