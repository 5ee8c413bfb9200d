"""Transaction batches: at most 64 operations and about 256 KiB of values each, led by the guards.

Layer: unit (pure, no Consul).
"""

from __future__ import annotations

import random

import pytest

from voltha_gevent.txn import TXN_MAX_VALUE_BYTES, TxnOp, chunked


def test_chunked_leads_every_batch_with_the_guards():
    ops = [TxnOp.set(f"k{i}", "v") for i in range(130)]
    guard = [TxnOp.check_session("leader", "s")]
    batches = list(chunked(ops, guard))
    assert [len(b) for b in batches] == [64, 64, 5]
    assert all(b[0] is guard[0] for b in batches)
    assert [op for b in batches for op in b[1:]] == ops


def op_of(size: int, key: str = "k") -> TxnOp:
    """A set whose value is ``size`` bytes (4 * ceil(size / 3) as base64)."""
    return TxnOp.set(key, b"x" * size)


def test_value_bytes_is_the_base64_size_of_the_value():
    assert TxnOp.set("k", "abc").value_bytes() == 4
    assert TxnOp.set("k", b"ab").value_bytes() == 4
    assert TxnOp.set("k", "é").value_bytes() == 4  # two bytes in UTF-8
    assert TxnOp.set("k", b"x" * 300).value_bytes() == 400
    assert TxnOp.set("k", b"").value_bytes() == 0
    assert TxnOp.delete("k").value_bytes() == 0 and TxnOp.check_session("k", "s").value_bytes() == 0
    assert op_of(100).value_bytes() == len(op_of(100).to_consul()["KV"]["Value"])


def test_chunked_splits_by_value_bytes_and_an_oversized_op_goes_alone():
    guard = [TxnOp.check_session("leader", "s")]
    small = [op_of(30, f"s{i}") for i in range(5)]  # 40 bytes of base64 each
    big = op_of(300, "big")  # 400 bytes: more than the cap by itself
    ops = [small[0], small[1], big, small[2], small[3], small[4]]
    batches = list(chunked(ops, guard, max_value_bytes=100))
    assert [[op.key for op in b[1:]] for b in batches] == [["s0", "s1"], ["big"], ["s2", "s3"], ["s4"]]
    assert all(b[0] is guard[0] for b in batches)
    first = list(chunked([big, *small], guard, max_value_bytes=100))
    assert [[op.key for op in b[1:]] for b in first] == [["big"], ["s0", "s1"], ["s2", "s3"], ["s4"]]


def test_chunked_keeps_both_caps_and_the_order_whatever_the_sizes():
    rng = random.Random(7)
    guards = [TxnOp.check_session("leader", "s"), TxnOp.check_index("epoch", 3)]
    cap = 10_000
    for _ in range(50):
        sizes = [rng.choice([0, 1, 100, 2_000, 7_000, 20_000]) for _ in range(rng.randint(0, 300))]
        ops = [op_of(size, f"k{i}") for i, size in enumerate(sizes)]
        batches = list(chunked(ops, guards, max_value_bytes=cap))
        assert [op for b in batches for op in b[2:]] == ops
        for b in batches:
            assert b[:2] == guards and 3 <= len(b) <= 64
            body = b[2:]
            assert len(body) == 1 or sum(op.value_bytes() for op in body) <= cap


def test_chunked_default_cap_is_half_of_consuls_request_body_cap():
    assert TXN_MAX_VALUE_BYTES == 256 * 1024
    guard = [TxnOp.check_session("leader", "s")]
    docs = [op_of(90_000, f"d{i}") for i in range(10)]  # 120,000 bytes of base64 each
    assert [len(b) for b in chunked(docs, guard)] == [3, 3, 3, 3, 3]


def test_chunked_refuses_guards_that_leave_no_room():
    with pytest.raises(ValueError, match="no room"):
        list(chunked([TxnOp.delete("k")], [TxnOp.check_session("leader", "s")] * 64))
