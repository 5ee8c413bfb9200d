"""Contract: what live values (``value_updates``, ``workload set``) rely on, on the fake and on
Consul 1.8.7 - a recursive blocking listing wakes on a value overwrite and shows which key
changed by its ModifyIndex; the owner-lock transaction reads the value's ModifyIndex; a
``cas`` write on a removed key does not bring it back."""

from __future__ import annotations

import base64
from typing import Any

from voltha_gevent.testing.beside import later, timed

#: Slack for timing assertions on a busy test machine.
SLACK = 0.75



def test_overwrite_wakes_the_recursive_listing_and_only_its_modify_index_moves(
        contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "w/a", "1")
    c.kv.put(kv_prefix + "w/b", "1")
    index, before = c.kv.get(kv_prefix + "w/", recurse=True)
    join = later(c, 0.3, lambda: c.kv.put(kv_prefix + "w/b", "2"))
    took, (new_index, after) = timed(lambda: c.kv.get(kv_prefix + "w/", recurse=True, index=index, wait="5s"))
    join()
    assert took < 0.3 + SLACK
    old = {e["Key"]: e["ModifyIndex"] for e in before}
    new = {e["Key"]: e["ModifyIndex"] for e in after}
    assert new[kv_prefix + "w/a"] == old[kv_prefix + "w/a"]
    assert new[kv_prefix + "w/b"] > old[kv_prefix + "w/b"]
    assert int(new_index) == new[kv_prefix + "w/b"]
    assert [e["Value"] for e in after] == [b"1", b"2"]


def test_lock_txn_reads_the_values_modify_index(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "w/a", "v1")
    _, entry = c.kv.get(kv_prefix + "w/a")
    session = c.session.create(ttl=10, lock_delay=0, behavior="release", checks=[])
    try:
        ops = [{"KV": {"Verb": "lock", "Key": kv_prefix + "o/a", "Value": base64.b64encode(b"n1").decode(),
                       "Session": session}},
               {"KV": {"Verb": "get", "Key": kv_prefix + "w/a"}}]
        results = c.txn.put(ops)["Results"]
        read = results[1]["KV"]
        assert read["ModifyIndex"] == entry["ModifyIndex"] and base64.b64decode(read["Value"]) == b"v1"
        assert results[0]["KV"]["ModifyIndex"] > entry["ModifyIndex"]  # the lock came after the value
    finally:
        c.session.destroy(session)


def test_cas_on_a_removed_key_writes_nothing(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    c.kv.put(kv_prefix + "w/a", "v1")
    _, entry = c.kv.get(kv_prefix + "w/a")
    c.kv.delete(kv_prefix + "w/a")
    assert c.kv.put(kv_prefix + "w/a", "v2", cas=entry["ModifyIndex"]) is False
    assert c.kv.get(kv_prefix + "w/a")[1] is None
