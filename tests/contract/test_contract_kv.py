"""Contract: KV and transactions behave the same on the mocked Consul and on Consul 1.8.7.

Every test runs twice through ``contract_client``: against :class:`FakeConsul` and against a
real dev agent (marked ``consul``). Answers are compared on exact shapes and messages.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from voltha_gevent.consul_api import BadRequest, ClientError, ConsulException


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kv(verb: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **fields}}


def txn_errors(exc: ClientError) -> tuple[int, dict[str, Any]]:
    status, body = str(exc).split(" ", 1)
    return int(status), json.loads(body)


# --------------------------------------------------------------------------- plain KV


def test_missing_key_is_index_and_none(contract_client: Any, kv_prefix: str) -> None:
    index, data = contract_client.kv.get(kv_prefix + "missing")
    assert data is None
    assert isinstance(index, str) and int(index) >= 1


def test_index_is_a_string_that_grows(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    assert c.kv.put(kv_prefix + "k", "one") is True
    first, entry = c.kv.get(kv_prefix + "k")
    assert isinstance(first, str)
    assert int(first) == entry["ModifyIndex"] == entry["CreateIndex"]
    assert c.kv.put(kv_prefix + "k", "two") is True
    second, entry2 = c.kv.get(kv_prefix + "k")
    assert int(second) > int(first)
    assert entry2["CreateIndex"] == entry["CreateIndex"]
    assert entry2["Value"] == b"two"


def test_entry_shape_omits_session_when_unlocked(contract_client: Any, kv_prefix: str) -> None:
    contract_client.kv.put(kv_prefix + "k", "v", flags=42)
    _, entry = contract_client.kv.get(kv_prefix + "k")
    assert set(entry) == {"LockIndex", "Key", "Flags", "Value", "CreateIndex", "ModifyIndex"}
    assert entry["Flags"] == 42 and entry["LockIndex"] == 0 and entry["Key"] == kv_prefix + "k"
    contract_client.kv.put(kv_prefix + "k", "w")  # a write without flags resets them to 0
    assert contract_client.kv.get(kv_prefix + "k")[1]["Flags"] == 0


def test_identical_write_keeps_modify_index(contract_client: Any, kv_prefix: str) -> None:
    contract_client.kv.put(kv_prefix + "k", "same")
    _, before = contract_client.kv.get(kv_prefix + "k")
    assert contract_client.kv.put(kv_prefix + "k", "same") is True
    _, after = contract_client.kv.get(kv_prefix + "k")
    assert after["ModifyIndex"] == before["ModifyIndex"]


@pytest.mark.parametrize("value", ["", None])
def test_empty_value_reads_as_none(contract_client: Any, kv_prefix: str, value: Any) -> None:
    contract_client.kv.put(kv_prefix + "k", value)
    assert contract_client.kv.get(kv_prefix + "k")[1]["Value"] is None


def test_cas_zero_creates_only(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    assert c.kv.put(kv_prefix + "k", "first", cas=0) is True
    assert c.kv.put(kv_prefix + "k", "second", cas=0) is False
    _, entry = c.kv.get(kv_prefix + "k")
    assert entry["Value"] == b"first"
    assert c.kv.put(kv_prefix + "k", "third", cas=entry["ModifyIndex"] + 1000) is False
    assert c.kv.put(kv_prefix + "k", "third", cas=entry["ModifyIndex"]) is True
    assert c.kv.get(kv_prefix + "k")[1]["Value"] == b"third"


def test_value_size_limit_is_512_kib(contract_client: Any, kv_prefix: str) -> None:
    assert contract_client.kv.put(kv_prefix + "big", b"x" * (512 * 1024)) is True
    with pytest.raises(ClientError) as info:
        contract_client.kv.put(kv_prefix + "big", b"x" * (512 * 1024 + 1))
    assert str(info.value).startswith("413 Request body(524289 bytes) too large, max size: 524288 bytes.")


def test_invalid_wait_and_index_are_bad_requests(contract_client: Any, kv_prefix: str) -> None:
    with pytest.raises(BadRequest, match="^400 Invalid wait time$"):
        contract_client.kv.get(kv_prefix + "k", index=1, wait="5")
    with pytest.raises(BadRequest, match="^400 Invalid index$"):
        contract_client.kv.get(kv_prefix + "k", index="abc", wait="1s")


def test_delete_and_cas_delete(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    assert c.kv.delete(kv_prefix + "never") is True
    assert c.kv.delete(kv_prefix + "never", cas=5) is True  # absent: nothing to compare
    c.kv.put(kv_prefix + "k", "v")
    _, entry = c.kv.get(kv_prefix + "k")
    assert c.kv.delete(kv_prefix + "k", cas=0) is False
    assert c.kv.delete(kv_prefix + "k", cas=entry["ModifyIndex"] + 1) is False
    assert c.kv.delete(kv_prefix + "k", cas=entry["ModifyIndex"]) is True
    assert c.kv.get(kv_prefix + "k")[1] is None


# --------------------------------------------------------------------------- listings


@pytest.fixture
def tree(contract_client: Any, kv_prefix: str) -> str:
    for key in ["a/1", "a/2", "a/b/3", "b", "c/d/e"]:
        contract_client.kv.put(kv_prefix + "ks/" + key, key)
    return kv_prefix + "ks/"


def test_recurse_lists_entries_with_values(contract_client: Any, tree: str) -> None:
    index, entries = contract_client.kv.get(tree, recurse=True)
    assert [e["Key"] for e in entries] == [tree + k for k in ["a/1", "a/2", "a/b/3", "b", "c/d/e"]]
    assert entries[0]["Value"] == b"a/1"
    assert int(index) == max(e["ModifyIndex"] for e in entries)


def test_keys_and_separator(contract_client: Any, tree: str) -> None:
    c = contract_client
    assert c.kv.get(tree, keys=True)[1] == [tree + k for k in ["a/1", "a/2", "a/b/3", "b", "c/d/e"]]
    assert c.kv.get(tree, keys=True, separator="/")[1] == [tree + "a/", tree + "b", tree + "c/"]
    assert c.kv.get(tree + "a/", keys=True, separator="/")[1] == [tree + "a/1", tree + "a/2", tree + "a/b/"]
    assert c.kv.get(tree.rstrip("/"), keys=True, separator="/")[1] == [tree]
    # separator needs keys: with recurse it is ignored
    assert len(c.kv.get(tree, recurse=True, separator="/")[1]) == 5


def test_empty_listings_are_none(contract_client: Any, kv_prefix: str) -> None:
    assert contract_client.kv.get(kv_prefix + "nothing/", keys=True)[1] is None
    assert contract_client.kv.get(kv_prefix + "nothing/", recurse=True)[1] is None


def test_delete_recurse_and_prefix_index(contract_client: Any, tree: str) -> None:
    c = contract_client
    before, _ = c.kv.get(tree, recurse=True)
    assert c.kv.delete(tree + "a/", recurse=True) is True
    after, entries = c.kv.get(tree, recurse=True)
    assert [e["Key"] for e in entries] == [tree + "b", tree + "c/d/e"]
    assert int(after) > int(before)  # the delete's tombstone moves the prefix index on
    assert c.kv.get(tree + "a/", keys=True)[1] is None


# --------------------------------------------------------------------------- transactions


def test_txn_success_results(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    p = kv_prefix
    c.kv.put(p + "x", "1")
    x = c.kv.get(p + "x")[1]
    sid = c.session.create(ttl=10, lock_delay=0)
    c.kv.put(p + "held", "h", acquire=sid)
    answer = c.txn.put(
        [
            kv("set", p + "t", Value=b64("a")),
            kv("cas", p + "x", Value=b64("2"), Index=x["ModifyIndex"]),
            kv("get", p + "x"),
            kv("get-tree", p + "t"),
            kv("check-session", p + "held", Session=sid),
            kv("check-not-exists", p + "nope"),
            kv("lock", p + "lk", Session=sid, Value=b64("L")),
            kv("unlock", p + "lk", Session=sid),
            kv("delete", p + "t"),
            kv("delete-tree", p + "none/"),
        ]
    )
    assert answer["Errors"] is None
    results = [r["KV"] for r in answer["Results"]]
    # one result per op except check-not-exists and the deletes; only reads carry values
    assert [r["Key"] for r in results] == [p + "t", p + "x", p + "x", p + "t", p + "held", p + "lk", p + "lk"]
    assert [r["Value"] for r in results] == [None, None, b64("2"), b64("a"), None, None, None]
    assert results[5]["Session"] == sid and results[5]["LockIndex"] == 1
    assert "Session" not in results[6]
    assert len({r["ModifyIndex"] for r in results[:3]}) == 1  # one index for the whole txn
    assert c.kv.get(p + "t")[1] is None
    assert c.kv.get(p + "x")[1]["Value"] == b"2"
    c.session.destroy(sid)


def test_txn_read_only_answer_carries_query_meta(contract_client: Any, kv_prefix: str) -> None:
    contract_client.kv.put(kv_prefix + "x", "1")
    answer = contract_client.txn.put([kv("get", kv_prefix + "x")])
    assert answer["Results"][0]["KV"]["Value"] == b64("1")
    assert answer["KnownLeader"] is True and answer["Index"] == 0
    assert contract_client.txn.put([kv("delete", kv_prefix + "nothing")]) == {"Results": [], "Errors": None}


def test_txn_rollback_lists_every_failed_op(contract_client: Any, kv_prefix: str) -> None:
    c = contract_client
    p = kv_prefix
    s1 = c.session.create(ttl=10, lock_delay=0)
    s2 = c.session.create(ttl=10, lock_delay=0)
    c.kv.put(p + "x", "1")
    c.kv.put(p + "held", "h", acquire=s1)
    mod = c.kv.get(p + "x")[1]["ModifyIndex"]
    ops = [
        kv("set", p + "ok", Value=b64("a")),
        kv("check-session", p + "held", Session=s2),
        kv("check-session", p + "nokey", Session=s2),
        kv("check-index", p + "x", Index=1),
        kv("check-index", p + "nokey", Index=1),
        kv("check-not-exists", p + "x"),
        kv("cas", p + "x", Value=b64("3"), Index=1),
        kv("lock", p + "held", Session=s2),
        kv("unlock", p + "held", Session=s2),
        kv("get", p + "nokey"),
        kv("delete-cas", p + "x", Index=1),
        kv("lock", p + "zz"),
        kv("delete-cas", p + "nokey", Index=1),
    ]
    with pytest.raises(ClientError) as info:
        c.txn.put(ops)
    status, body = txn_errors(info.value)
    assert status == 409 and body["Results"] is None
    q = json.dumps
    assert body["Errors"] == [
        {
            "OpIndex": 1,
            "What": f"failed session check for key {q(p + 'held')}, current session {q(s1)} != {q(s2)}",
        },
        {"OpIndex": 2, "What": f"failed to check session, key {q(p + 'nokey')} doesn't exist"},
        {"OpIndex": 3, "What": f"failed index check for key {q(p + 'x')}, current modify index {mod} != 1"},
        {"OpIndex": 4, "What": f"failed to check index, key {q(p + 'nokey')} doesn't exist"},
        {"OpIndex": 5, "What": f"key {q(p + 'x')} exists"},
        {"OpIndex": 6, "What": f"failed to set key {q(p + 'x')}, index is stale"},
        {"OpIndex": 7, "What": f"failed to lock key {q(p + 'held')}, lock is already held"},
        {
            "OpIndex": 8,
            "What": f"failed to unlock key {q(p + 'held')}, lock isn't held, or is held by another session",
        },
        {"OpIndex": 9, "What": f"key {q(p + 'nokey')} doesn't exist"},
        {"OpIndex": 10, "What": f"failed to delete key {q(p + 'x')}, index is stale"},
        {"OpIndex": 11, "What": "missing session"},
    ]
    assert c.kv.get(p + "ok")[1] is None  # all or nothing
    for sid in (s1, s2):
        c.session.destroy(sid)


def test_txn_of_65_ops_is_413(contract_client: Any, kv_prefix: str) -> None:
    with pytest.raises(ClientError, match=r"^413 Transaction contains too many operations \(65 > 64\)$"):
        contract_client.txn.put([kv("get", kv_prefix + "x")] * 65)
    contract_client.txn.put([kv("check-not-exists", kv_prefix + "x")] * 64)


def test_txn_lock_with_invalid_session(contract_client: Any, kv_prefix: str) -> None:
    bogus = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ClientError) as info:
        contract_client.txn.put([kv("lock", kv_prefix + "k", Session=bogus)])
    assert txn_errors(info.value)[1]["Errors"] == [{"OpIndex": 0, "What": f'invalid session "{bogus}"'}]


def test_cas_with_acquire_or_release_is_400(contract_client: Any, kv_prefix: str) -> None:
    sid = contract_client.session.create(ttl=10, lock_delay=0)
    with pytest.raises(BadRequest, match=f"^400 Conflicting flags: acquire={sid}&cas=0$"):
        contract_client.kv.put(kv_prefix + "k", "v", cas=0, acquire=sid)
    with pytest.raises(BadRequest, match=f"^400 Conflicting flags: cas=5&release={sid}$"):
        contract_client.kv.put(kv_prefix + "k", "v", cas=5, release=sid)
    contract_client.session.destroy(sid)


def test_acquire_with_unknown_session_is_500(contract_client: Any, kv_prefix: str) -> None:
    bogus = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ConsulException) as info:
        contract_client.kv.put(kv_prefix + "k", "v", acquire=bogus)
    assert str(info.value) == f'500 invalid session "{bogus}"'


def test_read_holders_names_held_locks_only(contract_client: Any, kv_prefix: str) -> None:
    """The leader's handover read: held, released and never-locked keys in one batch of gets."""
    from voltha_gevent.consul_api import ConsulAPI
    from voltha_gevent.keys import Keys
    from voltha_gevent.owner_locks import read_holders

    keys = Keys(kv_prefix.rstrip("/"))
    session = contract_client.session.create(ttl=30, lock_delay=0)
    try:
        for i in range(70):  # two transactions' worth
            assert contract_client.kv.put(keys.owner(f"held{i:02d}"), f"node{i % 3}", acquire=session)
        assert contract_client.kv.put(keys.owner("released"), "node9", acquire=session)
        assert contract_client.kv.put(keys.owner("released"), "node9", release=session)
        asked = [f"held{i:02d}" for i in range(70)] + ["released", "never-locked", "also-missing"]
        held = read_holders(ConsulAPI(contract_client), keys, asked)
        assert held == {f"held{i:02d}": f"node{i % 3}" for i in range(70)}
    finally:
        contract_client.session.destroy(session)
