"""Transaction batches: every batch of at most 64 operations is led by the guards.

Layer: unit (pure, no Consul).
"""

from __future__ import annotations

from voltha_gevent.txn import TxnOp, chunked


def test_chunked_leads_every_batch_with_the_guards():
    ops = [TxnOp.set(f"k{i}", "v") for i in range(130)]
    guard = [TxnOp.check_session("leader", "s")]
    batches = list(chunked(ops, guard))
    assert [len(b) for b in batches] == [64, 64, 5]
    assert all(b[0] is guard[0] for b in batches)
    assert [op for b in batches for op in b[1:]] == ops
