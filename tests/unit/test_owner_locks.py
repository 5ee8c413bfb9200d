"""Owner locks in shared transactions: per-item answers, one item's refusal never fails the rest."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.errors import ConsulUnavailable, SessionInvalid
from voltha_gevent.keys import Keys
from voltha_gevent.owner_locks import OwnerLocks
from voltha_gevent.testing.fake_consul import FakeConsul

KEYS = Keys("t")


@pytest.fixture
def fake() -> Iterator[FakeConsul]:
    with FakeConsul() as cluster:
        yield cluster


def setup(fake: FakeConsul, items: list[str]) -> tuple[ConsulAPI, OwnerLocks, str]:
    api = ConsulAPI(fake.client())
    for item in items:
        api.put(KEYS.item(item), f"value-{item}")
    session = api.create_session(name="w", ttl=10, behavior="release", lock_delay=0)
    return api, OwnerLocks(api, KEYS, "me"), session


def acquire_all(locks: OwnerLocks, items: list[str], session: str) -> dict[str, object]:
    jobs = {item: gevent.spawn(locks.acquire, item, session) for item in items}
    gevent.joinall(list(jobs.values()))
    return {item: (job.value if job.successful() else job.exception) for item, job in jobs.items()}


def test_many_items_are_taken_in_a_few_transactions_with_token_and_value(fake: FakeConsul) -> None:
    items = [f"i{n:03d}" for n in range(126)]
    api, locks, session = setup(fake, items)
    fake.reset_request_count()
    got = acquire_all(locks, items, session)
    assert locks.stats.transactions == 2  # 63 locks per writing transaction
    assert fake.request_counts.get("txn.put") == 4  # and one read-only transaction of values each
    for item in items:
        lock, value = got[item]  # type: ignore[misc]
        assert lock.session == session and lock.modify_index > 0
        assert value is not None and value.value == f"value-{item}".encode()


def test_an_item_held_elsewhere_is_refused_alone(fake: FakeConsul) -> None:
    items = ["a", "b", "c"]
    api, locks, session = setup(fake, items)
    other = api.create_session(name="x", ttl=10, behavior="release", lock_delay=0)
    assert api.acquire(KEYS.owner("b"), "x", other)
    got = acquire_all(locks, items, session)
    assert got["b"] is None
    assert got["a"] is not None and got["c"] is not None
    assert locks.stats.refused == 1


def test_an_item_whose_workload_key_is_gone_is_taken_without_a_value(fake: FakeConsul) -> None:
    api, locks, session = setup(fake, ["a", "b"])
    api.delete(KEYS.item("b"))
    got = acquire_all(locks, ["a", "b"], session)
    assert got["b"] is not None and got["b"][1] is None  # type: ignore[index]
    assert got["a"][1].value == b"value-a"  # type: ignore[index]


def test_releases_share_transactions_and_one_not_held_is_answered_false(fake: FakeConsul) -> None:
    items = [f"i{n:02d}" for n in range(30)]
    api, locks, session = setup(fake, items)
    acquire_all(locks, items, session)
    fake.reset_request_count()
    jobs = {item: gevent.spawn(locks.release, item, session) for item in [*items, "never-taken"]}
    gevent.joinall(list(jobs.values()))
    assert jobs["never-taken"].value is False
    assert all(jobs[item].value is True for item in items)
    assert fake.request_counts.get("txn.put", 0) <= 2
    assert all(api.get(KEYS.owner(item))[1].session is None for item in items)


def test_a_dead_session_fails_the_whole_batch_as_invalid(fake: FakeConsul) -> None:
    api, locks, session = setup(fake, ["a", "b"])
    api.destroy_session(session)
    got = acquire_all(locks, ["a", "b"], session)
    assert all(isinstance(v, SessionInvalid) for v in got.values()), got


def test_a_lock_won_for_a_caller_that_gave_up_is_released(fake: FakeConsul) -> None:
    api, locks, session = setup(fake, ["a"])
    fake.set_latency(0.2)
    caller = gevent.spawn(locks.acquire, "a", session)
    gevent.sleep(0.05)
    caller.kill()  # the transaction is on its way: it will take the lock
    fake.set_latency(0)
    gevent.sleep(0.6)
    assert locks.stats.orphans_released == 1
    assert api.get(KEYS.owner("a"))[1].session is None


def test_values_that_cannot_be_read_let_the_locks_go_and_fail_the_acquires(fake: FakeConsul) -> None:
    """A lock no task knows about would outlive the task: the next owner would wait on it."""
    api, locks, session = setup(fake, ["a", "b"])
    real_txn = api.txn
    calls = []

    def txn(ops, **kw):  # type: ignore[no-untyped-def]
        calls.append(ops[0].verb)
        if ops[0].verb == "get" and calls.count("get") == 1:
            raise ConsulUnavailable("read timed out")
        return real_txn(ops, **kw)

    api.txn = txn  # type: ignore[method-assign]
    got = acquire_all(locks, ["a", "b"], session)
    assert all(isinstance(v, ConsulUnavailable) for v in got.values()), got
    gevent.sleep(0.1)
    assert api.get(KEYS.owner("a"))[1].session is None and api.get(KEYS.owner("b"))[1].session is None
    again = acquire_all(locks, ["a", "b"], session)
    assert again["a"][1].value == b"value-a"  # type: ignore[index]


def test_the_next_locks_go_out_while_the_values_of_the_last_ones_are_read(fake: FakeConsul) -> None:
    items = [f"i{n:03d}" for n in range(63 * 4)]
    api, _, session = setup(fake, items)
    locks = OwnerLocks(api, KEYS, "me", concurrency=1)
    real_txn = api.txn
    events: list[str] = []

    def txn(ops, **kw):  # type: ignore[no-untyped-def]
        verb = ops[0].verb
        events.append(f"{verb}-sent")
        if verb == "get":
            gevent.sleep(0.1)  # slow value reads
        result = real_txn(ops, **kw)
        events.append(f"{verb}-answered")
        return result

    api.txn = txn  # type: ignore[method-assign]
    got = acquire_all(locks, items, session)
    assert all(isinstance(v, tuple) for v in got.values())
    # one lock transaction in flight at a time, yet the second is sent before the first
    # batch's values have been read
    first_read_answered = events.index("get-answered")
    assert events.index("lock-sent", events.index("lock-answered")) < first_read_answered
    assert events.count("lock-sent") == 4 and events.count("get-sent") == 4
