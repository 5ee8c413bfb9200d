"""Assignment documents: how the leader publishes who runs what, a few keys per member.

::

    <prefix>/assignments/<member>/<bucket>   value: {"epoch": N, "items": ["a", "b", ...]}

An item lives in bucket :func:`bucket_of` (a CRC-32 of its name, :data:`BUCKETS` buckets), so
each member has at most 64 documents, whatever the workload, and one moved item rewrites one
small document of the member it leaves and one of the member it joins. A member's items are
the union of its documents.

Why not one key per item (the first layout): at 100,000 items the leader wrote 100,000 keys
in 1,588 fenced transactions - 19 of a 26 s cold start on two loaded cores - and each worker
listed its whole folder again after every batch. As documents the same assignment is 640
keys in about ten transactions.

Only the leader writes documents, in transactions fenced by its leader lock
(:mod:`voltha_gevent.leader`). Readers skip, count and log what they cannot read: a key that
is not ``<member>/<bucket>`` is not ours to interpret and is left alone; a document that does
not parse, or names an invalid item, is skipped (the leader rewrites it the next time that
bucket changes, and meanwhile sees its items as unassigned).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from .entries import KVEntry
from .keys import Keys, valid_name
from .txn import TxnOp

if TYPE_CHECKING:
    from .consul_api import ConsulAPI

log = structlog.get_logger(__name__)

#: Buckets per member. Fixed: readers need not know it, but changing it moves every item's
#: document (a leader of another count rewrites them all once).
BUCKETS = 64
_BUCKET_RE = re.compile(r"[0-9a-f]{2}")  # fullmatch: "$" would also accept "00\n"


class MalformedDocument(ValueError):
    """A value under ``assignments/`` that is not an assignment document."""


def bucket_of(item: str) -> str:
    """The bucket (two hex digits) whose document lists ``item``; stable across processes."""
    return f"{zlib.crc32(item.encode('utf-8')) % BUCKETS:02x}"


def encode(epoch: int, items: Iterable[str]) -> bytes:
    """A document's value: compact JSON, items sorted (equal sets give equal bytes)."""
    return json.dumps({"epoch": epoch, "items": sorted(items)}, separators=(",", ":")).encode("utf-8")


def decode(value: bytes | None, bucket: str | None = None) -> list[str]:
    """The items a document lists; :class:`MalformedDocument` when it is not one, or when
    ``bucket`` is given and it lists an item of another bucket (an item only ever lives in
    its own bucket's document, the one the leader rewrites when the item moves)."""
    try:
        doc = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedDocument(f"not JSON: {exc}") from None
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise MalformedDocument('no "items" list')
    for item in items:
        if not isinstance(item, str) or not valid_name(item):
            raise MalformedDocument(f"invalid item name {item!r}")
        if bucket is not None and bucket_of(item) != bucket:
            raise MalformedDocument(f"item {item!r} belongs in bucket {bucket_of(item)}, not {bucket}")
    return items


def split_doc_key(folder: str, key: str) -> tuple[str, str] | None:
    """``(member, bucket)`` of an ``assignments/<member>/<bucket>`` key, or None."""
    if not key.startswith(folder):
        return None
    parts = key[len(folder) :].split("/")
    if len(parts) != 2 or not valid_name(parts[0]) or not _BUCKET_RE.fullmatch(parts[1]):
        return None
    return parts[0], parts[1]


def doc_key(keys: Keys, member: str, bucket: str) -> str:
    return f"{keys.assignments_of(member)}{bucket}"


@dataclass
class ParsedAssignments:
    """A listing of ``assignments/`` read back: item -> members, and what was skipped."""

    assigned: dict[str, set[str]] = field(default_factory=dict)
    #: key -> value as read, for every document key (readable or not): what Consul holds.
    raw: dict[str, bytes] = field(default_factory=dict)
    #: (key, reason) of every entry that was skipped.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (member, bucket) of the document keys whose value could not be read.
    malformed: set[tuple[str, str]] = field(default_factory=set)

    def members_of(self, item: str) -> list[str]:
        return sorted(self.assigned.get(item, ()))

    def items_of(self, member: str) -> set[str]:
        return {item for item, ms in self.assigned.items() if member in ms}


def parse_documents(folder: str, entries: Iterable[KVEntry]) -> ParsedAssignments:
    """Read a listing (with values) of ``folder`` = ``assignments/`` or one member's folder.

    Keys are split against ``assignments/`` itself, so pass the whole prefix's ``folder``
    (a member's own listing has only its keys anyway).
    """
    parsed = ParsedAssignments()
    for entry in entries:
        split = split_doc_key(folder, entry.key)
        if split is None:
            if entry.key != folder:
                parsed.skipped.append((entry.key, "not assignments/<member>/<bucket>"))
            continue
        parsed.raw[entry.key] = entry.value or b""
        member, bucket = split
        try:
            items = decode(entry.value, bucket)
        except MalformedDocument as exc:
            parsed.skipped.append((entry.key, str(exc)))
            parsed.malformed.add(split)
            continue
        for item in items:
            parsed.assigned.setdefault(item, set()).add(member)
    return parsed


def read_assignments(api: ConsulAPI, keys: Keys, *, consistent: bool = False) -> ParsedAssignments:
    """One read of every document (for the leader's diff, ``status`` and tests)."""
    _, entries = api.list(keys.assignments, consistent=consistent)
    return parse_documents(keys.assignments, entries or [])


class MemberDocuments:
    """A worker's reading of its own documents, one watch delivery after another.

    Only the documents whose ``ModifyIndex`` moved are parsed again (a change rewrites one
    or two of a member's 64); an unreadable one is counted and skipped, once until it changes.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder  # assignments/ (keys are split against the whole folder)
        self.skipped = 0
        self._known: dict[str, tuple[int, list[str]]] = {}  # key -> (ModifyIndex, items)

    def forget(self) -> None:
        """A new session: its first delivery is read afresh."""
        self._known = {}

    def items(self, entries: Iterable[KVEntry]) -> set[str]:
        """The union of the items listed by ``entries`` (a listing of the member's folder)."""
        known = {}
        for entry in entries:
            split = split_doc_key(self.folder, entry.key)
            if split is None:
                continue  # not a document (the folder itself, or not ours to interpret)
            seen = self._known.get(entry.key)
            if seen is not None and seen[0] == entry.modify_index:
                known[entry.key] = seen
                continue
            try:
                known[entry.key] = (entry.modify_index, decode(entry.value, split[1]))
            except MalformedDocument as exc:
                self.skipped += 1
                log.warning("entry-skipped", key=entry.key, reason=str(exc))
                known[entry.key] = (entry.modify_index, [])
        self._known = known
        return {item for _, items in known.values() for item in items}


class AssignmentBook:
    """The leader's copy of the published documents, and the writes that change them.

    :meth:`load` takes what Consul holds; :meth:`changes` applies revocations and grants
    and returns one ``set`` (or ``delete``) per document whose bytes change, already counted
    as published: the caller writes them or halts (a new leader reads everything afresh).
    The first :meth:`changes` after a :meth:`load` also repairs every document key whose
    value could not be read: it is the leader's key, so it gets the content the book holds
    for it, or is deleted.
    """

    def __init__(self, keys: Keys, epoch: int) -> None:
        self.keys = keys
        self.epoch = epoch
        self.docs: dict[tuple[str, str], set[str]] = {}
        self.raw: dict[str, bytes] = {}
        self.loaded = False  # read from Consul at least once
        self.malformed: set[tuple[str, str]] = set()  # documents to repair at the next changes()

    def load(self, parsed: ParsedAssignments) -> None:
        self.loaded = True
        self.docs = {}
        for item, members in parsed.assigned.items():
            bucket = bucket_of(item)
            for member in members:
                self.docs.setdefault((member, bucket), set()).add(item)
        self.raw = dict(parsed.raw)
        self.malformed = set(parsed.malformed)

    def changes(self, revokes: Iterable[tuple[str, str]], grants: Iterable[tuple[str, str]]) -> list[TxnOp]:
        """Ops for ``(member, item)`` revocations and grants, member by member."""
        touched, self.malformed = self.malformed, set()
        for member, item in revokes:
            place = (member, bucket_of(item))
            self.docs.get(place, set()).discard(item)
            touched.add(place)
        for member, item in grants:
            place = (member, bucket_of(item))
            self.docs.setdefault(place, set()).add(item)
            touched.add(place)
        ops = []
        for member, bucket in sorted(touched):
            key = doc_key(self.keys, member, bucket)
            items = self.docs.get((member, bucket))
            if items:
                value = encode(self.epoch, items)
                if self.raw.get(key) != value:
                    ops.append(TxnOp.set(key, value))
                    self.raw[key] = value
            else:
                self.docs.pop((member, bucket), None)
                if self.raw.pop(key, None) is not None:
                    ops.append(TxnOp.delete(key))
        return ops


def publish_ops(keys: Keys, assignment: Mapping[str, str], epoch: int = 1) -> list[TxnOp]:
    """Ops writing ``assignment`` (item -> member) as documents, for tools and tests."""
    book = AssignmentBook(keys, epoch)
    return book.changes((), sorted((member, item) for item, member in assignment.items()))


__all__ = ["BUCKETS", "AssignmentBook", "MalformedDocument", "MemberDocuments", "ParsedAssignments",
           "bucket_of", "decode", "doc_key", "encode", "parse_documents", "publish_ops", "read_assignments",
           "split_doc_key"]
