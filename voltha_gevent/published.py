"""Telling the leader's own writes from another writer's edits of ``assignments/``.

The leader watches ``assignments/`` so that an edit by anyone else (an operator, a deposed
leader's last batch, a bug) is noticed and corrected by a reassignment. Its own writes show
up in the same watch: a listing read between two of its batches, or delivered late, shows
some of them and not others. Such a difference - only keys it wrote itself, within
:data:`OWN_WRITES_GRACE` of its last write phase - is its own writes on their way, not
another writer's, and costs no extra soak.

Keys are compared as raw strings: at 100,000 items a listing has 100,000 keys, and parsing
each (a regex per segment) cost the leader more than the listing itself. Only the keys that
differ are parsed, so malformed keys (not ours to interpret) never count as edits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .keys import Keys, split_assignment
from .txn import TxnOp

#: How long a difference that touches only keys this leader wrote is taken for its own
#: writes still on their way (a snapshot taken between two of its batches).
OWN_WRITES_GRACE = 5.0


@dataclass(frozen=True)
class ForeignEdits:
    extra: int  # keys in Consul this leader did not write
    missing: int  # keys this leader wrote that are gone


class PublishedAssignments:
    """The latest ``assignments/`` listing against what the leader's view implies."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.listing: set[str] | None = None
        self.writing = 0  # write phases in progress: the listing is not comparable meanwhile
        self._expected: set[str] | None = None
        self._own_writes: set[str] = set()
        self._own_writes_at = 0.0

    def view_changed(self) -> None:
        """The leader's ``view.assigned`` changed: recompute the expected keys when asked."""
        self._expected = None

    def writing_phase(self, ops: list[TxnOp]) -> None:
        """A write phase starts with ``ops``."""
        self.writing += 1
        self._own_writes |= {op.key for op in ops if op.key.startswith(self.keys.assignments)}

    def phase_done(self) -> None:
        self.writing -= 1
        self._own_writes_at = time.monotonic()  # the grace counts from the end of the phase

    def foreign_edits(self, assigned: dict[str, set[str]]) -> ForeignEdits | None:
        """What another writer changed, or None (same, or only our own writes on their way)."""
        if self.listing is None or self.writing:
            return None
        expected = self._expected_keys(assigned)
        differences = {key for key in self.listing ^ expected
                       if split_assignment(self.keys.assignments, key) is not None}
        if not differences:
            self._own_writes = set()
            return None
        if differences <= self._own_writes and time.monotonic() - self._own_writes_at < OWN_WRITES_GRACE:
            return None
        return ForeignEdits(extra=len(differences - expected), missing=len(differences & expected))

    def _expected_keys(self, assigned: dict[str, set[str]]) -> set[str]:
        if self._expected is None:
            self._expected = {self.keys.assignment(m, item) for item, ms in assigned.items() for m in ms}
        return self._expected


__all__ = ["OWN_WRITES_GRACE", "ForeignEdits", "PublishedAssignments"]
