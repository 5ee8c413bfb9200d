"""Assignment documents: buckets, the document format, parsing a listing, and the leader's book.

Layer: unit (pure; one test reads back through the in-memory fake).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from voltha_gevent.assignment_docs import (
    BUCKETS,
    AssignmentBook,
    MalformedDocument,
    bucket_of,
    decode,
    doc_key,
    encode,
    parse_documents,
    publish_ops,
    read_assignments,
    split_doc_key,
)
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.entries import KVEntry
from voltha_gevent.keys import Keys
from voltha_gevent.txn import TXN_MAX_OPS, TXN_MAX_VALUE_BYTES, TxnOp, chunked

KEYS = Keys("p")
FOLDER = KEYS.assignments  # "p/assignments/"




def entry(key: str, value: bytes | None, index: int = 1) -> KVEntry:
    return KVEntry(key, value, index, index)


def in_bucket(bucket: str, count: int, stem: str = "i") -> list[str]:
    """``count`` item names whose bucket is ``bucket``."""
    names = (f"{stem}{n}" for n in range(100_000))
    found = []
    for name in names:
        if bucket_of(name) == bucket:
            found.append(name)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} names in bucket {bucket}")


# --------------------------------------------------------------------------- buckets


def test_bucket_of_is_two_hex_digits_below_the_bucket_count():
    assert BUCKETS == 64
    for n in range(5000):
        bucket = bucket_of(f"olt-{n}")
        assert len(bucket) == 2 and bucket == bucket.lower()
        assert 0 <= int(bucket, 16) < BUCKETS


def test_bucket_of_is_stable_across_processes_and_releases():
    """Every reader and every leader must agree: no per-process hash seed, no change of function
    (a change would move every item's document)."""
    known = {"item00000": "15", "olt-1": "23", "a": "03", "ONU_42": "18", "i3": "07"}
    assert {name: bucket_of(name) for name in known} == known
    code = "import json, sys; from voltha_gevent.assignment_docs import bucket_of; " \
           "print(json.dumps({n: bucket_of(n) for n in sys.argv[1:]}))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, *known], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(out.stdout) == known


def test_bucket_of_spreads_items_over_every_bucket():
    counts = Counter(bucket_of(f"olt-{n}") for n in range(6400))
    assert len(counts) == BUCKETS
    assert 50 <= min(counts.values()) and max(counts.values()) <= 150  # 100 each on average


# --------------------------------------------------------------------------- the format


def test_encode_is_sorted_compact_json_and_decode_gives_the_items_back():
    assert encode(3, ["b", "a", "c"]) == b'{"epoch":3,"items":["a","b","c"]}'
    assert encode(3, {"c", "a", "b"}) == encode(3, ("b", "c", "a"))  # equal sets, equal bytes
    assert encode(1, []) == b'{"epoch":1,"items":[]}'
    items = [f"dg{n:04d}" for n in range(500)]
    assert decode(encode(9, reversed(items))) == items
    assert decode(b'{"items": ["x"]}') == ["x"]  # the epoch is informational


@pytest.mark.parametrize("value, reason", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"", "not JSON"),
    (None, "not JSON"),
    (b"[]", 'no "items" list'),
    (b'"items"', 'no "items" list'),
    (b"null", 'no "items" list'),
    (b'{"epoch": 1}', 'no "items" list'),
    (b'{"items": "a"}', 'no "items" list'),
    (b'{"items": {"a": 1}}', 'no "items" list'),
    (b'{"items": ["a", 7]}', "invalid item name 7"),
    pytest.param(b'{"items": [null]}', "invalid item name None"),
    (b'{"items": ["bad name"]}', "invalid item name 'bad name'"),
    (b'{"items": ["x/y"]}', "invalid item name 'x/y'"),
    (b'{"items": [".."]}', "invalid item name '..'"),
    (b'{"items": [""]}', "invalid item name ''"),
    (b'{"items": ["' + b"x" * 257 + b'"]}', "invalid item name"),
])
def test_decode_rejects_what_is_not_a_document(value, reason):
    with pytest.raises(MalformedDocument) as info:
        decode(value)
    assert str(info.value).startswith(reason)
    assert isinstance(info.value, ValueError)


def test_split_doc_key_accepts_member_slash_two_hex_digits_only():
    assert split_doc_key(FOLDER, "p/assignments/m1/00") == ("m1", "00")
    assert split_doc_key(FOLDER, "p/assignments/node-a.x_1,2/3f") == ("node-a.x_1,2", "3f")
    # readers need not know the bucket count: any two lowercase hex digits name a document
    assert split_doc_key(FOLDER, "p/assignments/m1/ff") == ("m1", "ff")
    assert doc_key(KEYS, "m1", "2a") == "p/assignments/m1/2a"
    for rest in ["", "c", "m1/", "m1/0", "m1/000", "m1/0A", "m1/zz", "m1/item00", "m1/00/deeper", "m1/00/",
                 "/00", "../00", "bad name/00"]:
        assert split_doc_key(FOLDER, FOLDER + rest) is None, rest
    assert split_doc_key(FOLDER, "q/assignments/m1/00") is None
    assert split_doc_key(FOLDER, "p/workload/m1/00") is None


def test_split_doc_key_refuses_a_bucket_with_a_trailing_newline():
    """The leader could never rewrite or delete such a key: it writes ``<member>/00``."""
    assert split_doc_key(FOLDER, "p/assignments/m1/00\n") is None


# --------------------------------------------------------------------------- parsing a listing


def test_parse_documents_unions_a_members_documents_and_records_every_document_raw():
    a0, a1 = in_bucket("00", 2, "a"), in_bucket("01", 1, "a")
    shared = in_bucket("00", 1, "s")
    entries = [
        entry("p/assignments/", None),  # the folder itself: nothing to say
        entry("p/assignments/m1/00", encode(1, [*a0, *shared])),
        entry("p/assignments/m1/01", encode(1, a1)),
        entry("p/assignments/m2/00", encode(2, shared)),  # one item listed by two members
        entry("p/assignments/m2/01", encode(2, [])),
        entry("p/assignments/m2/02", b"garbage"),
        entry("p/assignments/m3/03", None),
        entry("p/assignments/m3/04", b'{"items": ["bad name"]}'),
        entry("p/assignments/m3/05", encode(1, in_bucket("06", 1, "o"))),  # an item of another bucket
        entry("p/assignments/m3/not-a-bucket", encode(1, ["x"])),
        entry("p/assignments/m3/00/deeper", encode(1, ["x"])),
        entry("p/assignments/c", encode(1, ["x"])),
    ]
    parsed = parse_documents(FOLDER, entries)
    assert parsed.items_of("m1") == {*a0, *a1, *shared}
    assert parsed.items_of("m2") == set(shared)
    assert parsed.items_of("m3") == set()  # its documents are unreadable: none of their items count
    assert parsed.members_of(shared[0]) == ["m1", "m2"]
    assert parsed.members_of("x") == []
    assert set(parsed.assigned) == {*a0, *a1, *shared}
    # raw: what Consul holds at every document key, readable or not (never the other keys)
    assert parsed.raw == {
        "p/assignments/m1/00": encode(1, [*a0, *shared]), "p/assignments/m1/01": encode(1, a1),
        "p/assignments/m2/00": encode(2, shared), "p/assignments/m2/01": encode(2, []),
        "p/assignments/m2/02": b"garbage", "p/assignments/m3/03": b"",
        "p/assignments/m3/04": b'{"items": ["bad name"]}',
        "p/assignments/m3/05": encode(1, in_bucket("06", 1, "o")),
    }
    reasons = dict(parsed.skipped)
    assert list(reasons) == ["p/assignments/m2/02", "p/assignments/m3/03", "p/assignments/m3/04",
                             "p/assignments/m3/05", "p/assignments/m3/not-a-bucket",
                             "p/assignments/m3/00/deeper", "p/assignments/c"]
    misplaced = in_bucket("06", 1, "o")[0]
    assert reasons["p/assignments/m3/05"] == f"item {misplaced!r} belongs in bucket 06, not 05"
    assert parsed.malformed == {("m2", "02"), ("m3", "03"), ("m3", "04"), ("m3", "05")}
    assert reasons["p/assignments/m2/02"].startswith("not JSON")
    assert reasons["p/assignments/m3/04"] == "invalid item name 'bad name'"
    assert reasons["p/assignments/c"] == "not assignments/<member>/<bucket>"


def test_parse_documents_of_one_members_folder_splits_against_the_whole_folder():
    x = in_bucket("00", 1, "x")
    entries = [entry("p/assignments/m1/00", encode(1, x))]
    assert parse_documents(FOLDER, entries).items_of("m1") == set(x)


def test_the_first_changes_after_a_load_repair_the_unreadable_documents():
    """They are the leader's keys: given the content the book holds for them, or deleted."""
    kept, other = in_bucket("00", 1, "k"), in_bucket("01", 1, "o")
    entries = [entry("p/assignments/m1/00", encode(1, kept)),
               entry("p/assignments/m1/01", b"garbage"),
               entry("p/assignments/m2/02", encode(1, other))]  # lists an item of bucket 01
    book = AssignmentBook(KEYS, 2)
    book.load(parse_documents(FOLDER, entries))
    ops = book.changes([], [("m1", other[0])])
    assert [(op.verb, op.key) for op in ops] == [("set", "p/assignments/m1/01"),
                                                 ("delete", "p/assignments/m2/02")]
    assert decode(ops[0].value) == other
    assert book.changes([], []) == []  # repaired once


def test_read_assignments_reads_back_what_publish_ops_wrote(api: ConsulAPI):
    assignment = {f"dg{n:03d}": f"m{n % 3}" for n in range(300)}
    ops = publish_ops(KEYS, assignment)
    assert TXN_MAX_OPS < len(ops) <= 3 * BUCKETS
    for batch in chunked(ops, []):
        api.txn(batch)
    api.put("p/assignments/m0/not-a-bucket", "x")
    for consistent in (False, True):
        parsed = read_assignments(api, KEYS, consistent=consistent)
        assert {i: ms for i, ms in parsed.assigned.items()} == {i: {m} for i, m in assignment.items()}
        assert parsed.skipped == [("p/assignments/m0/not-a-bucket", "not assignments/<member>/<bucket>")]
        assert set(parsed.raw) == {op.key for op in ops}


# --------------------------------------------------------------------------- the leader's book


def loaded_book(assignment: dict[str, str], epoch: int = 1,
                extra: tuple[KVEntry, ...] = ()) -> AssignmentBook:
    """A book loaded from what ``publish_ops`` wrote (plus ``extra`` entries), as a leader reads it.

    ("far" is in bucket 36, away from the buckets the tests move items in.)"""
    written = [entry(op.key, op.value) for op in publish_ops(KEYS, assignment, epoch)]
    book = AssignmentBook(KEYS, epoch)
    book.load(parse_documents(FOLDER, [*written, *extra]))
    return book


def test_a_book_loaded_and_unchanged_writes_nothing():
    book = loaded_book({f"i{n}": f"m{n % 2}" for n in range(50)})
    assert book.changes([], []) == []
    # revoking and granting the same item to the same member leaves its document as it was
    assert book.changes([("m0", "i0")], [("m0", "i0")]) == []
    # granting what is published, revoking what is not
    assert book.changes([("m1", "i0"), ("ghost", "i0")], [("m0", "i2")]) == []


def test_a_moved_item_rewrites_exactly_its_two_documents():
    assert bucket_of("far") == "36"
    x = in_bucket("05", 1, "x")[0]
    neighbours = in_bucket("05", 2, "n")
    book = loaded_book({x: "a", neighbours[0]: "a", neighbours[1]: "b", "far": "a"})
    ops = book.changes([("a", x)], [("b", x)])
    assert ops == [TxnOp.set("p/assignments/a/05", encode(1, [neighbours[0]])),
                   TxnOp.set("p/assignments/b/05", encode(1, [x, neighbours[1]]))]
    assert book.changes([("a", x)], [("b", x)]) == []  # already written: counted as published


def test_revoking_the_last_item_of_a_document_deletes_it_and_granting_creates_it():
    x, y = in_bucket("07", 2, "x")
    book = loaded_book({x: "a", "far": "a"})
    assert book.changes([("a", x)], []) == [TxnOp.delete("p/assignments/a/07")]
    assert book.changes([("a", x)], []) == []  # deleted once
    assert book.changes([], [("a", x), ("a", y)]) == [TxnOp.set("p/assignments/a/07", encode(1, [x, y]))]


def test_changes_go_member_by_member_and_each_document_once():
    book = AssignmentBook(KEYS, 4)
    ops = book.changes([], [(f"m{n % 3}", f"i{n}") for n in range(200)])
    keys = [op.key for op in ops]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    assert all(op.verb == "set" and json.loads(op.value)["epoch"] == 4 for op in ops)


def test_a_new_epoch_rewrites_the_documents_it_touches_with_its_epoch():
    x = in_bucket("09", 1, "x")[0]
    book = loaded_book({x: "a", "far": "a"}, epoch=1)
    book.epoch = 2  # as a new leader's book would be (built with its epoch, loaded from Consul)
    assert book.changes([], []) == []
    assert book.changes([("a", x)], [("a", x)]) == [TxnOp.set("p/assignments/a/09", encode(2, [x]))]


@pytest.mark.parametrize("garbage", [b"not json", b'{"items": ["bad name"]}', None])
def test_a_malformed_document_is_replaced_when_its_bucket_is_needed(garbage):
    """An unreadable document's items count as unassigned; the leader's next grant to that
    bucket writes correct content over it (and a revoke there deletes it)."""
    x, y = in_bucket("0b", 2, "x")
    bad = entry("p/assignments/a/0b", garbage)
    book = loaded_book({"far": "a"}, extra=(bad,))
    assert book.raw["p/assignments/a/0b"] == (garbage or b"")
    assert book.changes([], [("a", x)]) == [TxnOp.set("p/assignments/a/0b", encode(1, [x]))]
    book = loaded_book({"far": "a"}, extra=(bad,))
    assert book.changes([("a", y)], []) == [TxnOp.delete("p/assignments/a/0b")]


def test_publish_ops_of_100000_items_over_10_members_is_at_most_640_documents():
    assignment = {f"olt-{n:06d}": f"member-{n % 10}" for n in range(100_000)}
    ops = publish_ops(KEYS, assignment)
    assert len(ops) <= 10 * BUCKETS
    assert all(op.verb == "set" for op in ops)
    parsed = parse_documents(FOLDER, [entry(op.key, op.value) for op in ops])
    assert {i: ms for i, ms in parsed.assigned.items()} == {i: {m} for i, m in assignment.items()}
    assert parsed.skipped == []
    guard = [TxnOp.check_session("p/leader", "s")]
    batches = list(chunked(ops, guard))
    assert len(batches) <= 12  # instead of 1,588 transactions of one key per item
    assert all(sum(op.value_bytes() for op in b) <= TXN_MAX_VALUE_BYTES for b in batches)
