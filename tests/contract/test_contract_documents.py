"""Contract: the leader's batches of assignment documents fit Consul's transaction body cap.

Consul 1.8.7 refuses a transaction whose request body exceeds 512 KiB (``txn_max_req_len``)
with 413, whatever its operation count. Documents are up to tens of KB each, so 64 of them
would not fit: :func:`~voltha_gevent.txn.chunked` also splits by bytes of values. Every test
runs against :class:`FakeConsul` and a real dev agent (``contract_client``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from voltha_gevent.assignment_docs import bucket_of, doc_key, encode, read_assignments
from voltha_gevent.consul_api import ClientError, ConsulAPI
from voltha_gevent.errors import ConsulRejected
from voltha_gevent.keys import Keys
from voltha_gevent.txn import TXN_MAX_OPS, TxnOp, chunked

#: Consul's request body cap for a transaction (and a KV value).
BODY_CAP = 512 * 1024
TOO_LARGE = re.compile(r"^413 Request body\((\d+) bytes\) too large, max size: 524288 bytes\.")


def big_documents(keys: Keys, count: int, size: int) -> dict[str, bytes]:
    """``count`` documents of about ``size`` bytes each (buckets 00.., members m0..m3)."""
    per_doc = size // len('"olt-00-000000",')
    by_bucket: dict[str, list[str]] = {}
    n = 0
    while len(by_bucket) < count or min(len(v) for v in by_bucket.values()) < per_doc:
        name = f"olt-{n // 100_000:02d}-{n % 100_000:06d}"  # an item lives in its own bucket's document
        bucket = bucket_of(name)
        if int(bucket, 16) < count and len(by_bucket.setdefault(bucket, [])) < per_doc:
            by_bucket[bucket].append(name)
        n += 1
    return {doc_key(keys, f"m{int(bucket, 16) % 4}", bucket): encode(1, items)
            for bucket, items in sorted(by_bucket.items())}


def test_forty_documents_of_100_kb_go_through_in_batches_under_the_body_cap(
        contract_client: Any, kv_prefix: str) -> None:
    keys = Keys(kv_prefix.rstrip("/"))
    api = ConsulAPI(contract_client)
    docs = big_documents(keys, 40, 100_000)
    assert all(95_000 <= len(v) <= 105_000 for v in docs.values())
    session = contract_client.session.create(ttl=30, lock_delay=0)
    try:
        assert contract_client.kv.put(keys.leader, "me", acquire=session)
        guard = [TxnOp.check_session(keys.leader, session)]  # as the leader fences its writes
        batches = list(chunked([TxnOp.set(k, v) for k, v in docs.items()], guard))
        assert len(batches) > 40 // TXN_MAX_OPS + 1  # split by bytes, not by count alone
        for batch in batches:
            assert batch[0] == guard[0] and len(batch) <= TXN_MAX_OPS
            assert len(json.dumps([op.to_consul() for op in batch])) < BODY_CAP
            api.txn(batch, results=False)
        parsed = read_assignments(api, keys, consistent=True)
        assert parsed.raw == docs
        assert parsed.skipped == []
        assert len(parsed.assigned) == sum(len(json.loads(v)["items"]) for v in docs.values())
    finally:
        contract_client.session.destroy(session)


def test_a_transaction_body_over_512_kib_is_413_and_writes_nothing(
        contract_client: Any, kv_prefix: str) -> None:
    keys = Keys(kv_prefix.rstrip("/"))
    docs = big_documents(keys, 6, 100_000)  # 6 x ~133 KB of base64: ~800 KB, 6 operations
    ops = [TxnOp.set(k, v) for k, v in docs.items()]
    payload = [op.to_consul() for op in ops]
    assert len(json.dumps(payload)) > BODY_CAP
    with pytest.raises(ClientError) as info:
        contract_client.txn.put(payload)
    match = TOO_LARGE.match(str(info.value))
    assert match, str(info.value)[:200]
    assert int(match.group(1)) == len(json.dumps(payload))
    with pytest.raises(ConsulRejected):
        ConsulAPI(contract_client).txn(ops)
    assert read_assignments(ConsulAPI(contract_client), keys, consistent=True).raw == {}
    # the same operations chunked go through
    for batch in chunked(ops, []):
        ConsulAPI(contract_client).txn(batch)
    assert read_assignments(ConsulAPI(contract_client), keys).raw == docs


def test_one_document_bigger_than_the_value_cap_alone_still_fits_a_transaction(
        contract_client: Any, kv_prefix: str) -> None:
    """An op over ``max_value_bytes`` goes alone: a 300 KB document (400 KB of base64) is
    one transaction of its own, under the body cap."""
    keys = Keys(kv_prefix.rstrip("/"))
    docs = {**big_documents(keys, 1, 300_000), **big_documents(Keys(kv_prefix + "x"), 2, 50_000)}
    ops = [TxnOp.set(k, v) for k, v in docs.items()]
    batches = list(chunked(ops, []))
    assert [len(b) for b in batches] == [1, 2]
    for batch in batches:
        ConsulAPI(contract_client).txn(batch)
    _, entries = ConsulAPI(contract_client).list(kv_prefix)
    assert {e.key: e.value for e in entries} == docs
