"""Telling the leader's own writes from another writer's edits of ``assignments/``.

The leader watches ``assignments/`` so that an edit by anyone else (an operator, a deposed
leader's last batch, a bug) is noticed and corrected by a reassignment. Its own writes show
up in the same watch: a listing read between two of its batches, or delivered late, shows
some of them and not others. Such a difference - only documents it wrote itself, within
:data:`OWN_WRITES_GRACE` of its last write phase - is its own writes on their way, not
another writer's, and costs no extra soak.

Documents are compared as raw bytes against the leader's
:class:`~voltha_gevent.assignment_docs.AssignmentBook`, which holds what it read and wrote:
nothing is parsed. Keys that are not ``<member>/<bucket>`` are not ours to interpret and
never count as edits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .assignment_docs import AssignmentBook, split_doc_key
from .keys import Keys
from .txn import TxnOp

#: How long a difference that touches only keys this leader wrote is taken for its own
#: writes still on their way (a snapshot taken between two of its batches).
OWN_WRITES_GRACE = 5.0


@dataclass(frozen=True)
class ForeignEdits:
    extra: int  # documents in Consul this leader did not write
    missing: int  # documents this leader wrote that are gone or differ


class PublishedAssignments:
    """The latest ``assignments/`` listing against the leader's book of documents."""

    def __init__(self, keys: Keys, book: AssignmentBook) -> None:
        self.keys = keys
        self.book = book
        self.listing: dict[str, bytes] | None = None  # key -> value, from the watch
        self.writing = 0  # write phases in progress: the listing is not comparable meanwhile
        self._own_writes: set[str] = set()
        self._own_writes_at = 0.0

    def writing_phase(self, ops: list[TxnOp]) -> None:
        """A write phase starts with ``ops``."""
        self.writing += 1
        self._own_writes |= {op.key for op in ops if op.key.startswith(self.keys.assignments)}

    def phase_done(self) -> None:
        self.writing -= 1
        self._own_writes_at = time.monotonic()  # the grace counts from the end of the phase

    def confirmed(self) -> bool:
        """The latest listing is exactly the book: Consul holds what the leader last read and wrote."""
        return self.book.loaded and not self.writing and self.listing == self.book.raw

    def foreign_edits(self) -> ForeignEdits | None:
        """What another writer changed, or None (same, or only our own writes on their way)."""
        if self.listing is None or self.writing:
            return None
        expected = self.book.raw
        listing = self.listing
        differences = {key for key in listing.keys() | expected.keys()
                       if listing.get(key) != expected.get(key)
                       and split_doc_key(self.keys.assignments, key) is not None}
        if not differences:
            self._own_writes = set()
            return None
        if differences <= self._own_writes and time.monotonic() - self._own_writes_at < OWN_WRITES_GRACE:
            return None
        ours = expected.keys()
        return ForeignEdits(extra=len(differences - ours), missing=len(differences & ours))


__all__ = ["OWN_WRITES_GRACE", "ForeignEdits", "PublishedAssignments"]
