"""The lease and Ownership: local answers, and work that never resumes after a stall."""

from __future__ import annotations

import time

import gevent
import gevent.monkey

from voltha_gevent.lease import Lease, Ownership, bind, current_ownership, now, run_fenced

#: A real, unpatched sleep: blocks the whole event loop as a misbehaving handler would.
blocking_sleep = gevent.monkey.get_original("time", "sleep")


def started_lease(seconds: float) -> Lease:
    lease = Lease()
    lease.begin(1, now() + seconds)
    return lease


def test_valid_is_false_from_the_first_instruction_after_the_deadline_without_any_switch() -> None:
    lease = started_lease(0.05)
    ownership = Ownership("a", None, 7, lease, 1)
    assert ownership.valid()
    blocking_sleep(0.08)  # no greenlet runs meanwhile: nothing could have "noticed"
    assert not ownership.valid()
    assert not lease.valid()
    lease.end()


def test_an_ownership_of_an_older_session_is_never_valid_again() -> None:
    lease = started_lease(5)
    old = Ownership("a", None, 7, lease, 1)
    lease.begin(2, now() + 5)
    assert lease.valid() and not old.valid()
    lease.end()


def test_revoking_an_ownership_wakes_its_wait_and_makes_it_invalid() -> None:
    lease = started_lease(5)
    ownership = Ownership("a", None, 7, lease, 1)
    gevent.spawn_later(0.05, ownership.revoke)
    started = time.monotonic()
    assert ownership.wait(2.0) is False
    assert time.monotonic() - started < 0.5
    lease.end()


def test_wait_returns_at_the_lease_deadline_not_after_its_timeout() -> None:
    lease = started_lease(0.1)
    ownership = Ownership("a", None, 7, lease, 1)
    started = time.monotonic()
    assert ownership.wait(5.0) is False
    assert time.monotonic() - started < 0.6
    lease.end()


def _ticker(ticks: list[float]) -> None:
    """Work that never checks valid(): only the switch guard can stop it."""
    while True:
        gevent.sleep(0.01)
        ticks.append(now())


def test_work_that_ignores_valid_never_resumes_after_a_handler_blocked_the_loop() -> None:
    lease = started_lease(0.15)
    expired: list[float] = []
    lease.on_expired(expired.append)
    ticks: list[list[float]] = [[] for _ in range(20)]
    workers = []
    for i in range(20):
        ownership = Ownership(f"i{i}", None, i, lease, 1)
        worker = gevent.spawn(run_fenced, _ticker, ticks[i])
        bind(worker, ownership, fenced_runner=True)
        workers.append(worker)

    def blocker() -> None:
        gevent.sleep(0.05)
        blocking_sleep(0.5)  # stalls the loop past the lease deadline

    gevent.spawn(blocker).join()
    gevent.sleep(0.2)
    deadline = lease.deadline
    assert all(w.dead for w in workers)
    assert [t for item in ticks for t in item if t >= deadline] == []
    assert expired and expired[0] > 0.25  # found late: a stall
    assert lease.stalls == 1


def test_greenlets_spawned_by_the_work_are_fenced_too() -> None:
    lease = started_lease(0.1)
    ticks: list[float] = []
    children: list[gevent.Greenlet] = []

    def work() -> None:
        children.append(gevent.spawn(_ticker, ticks))
        assert current_ownership() is not None
        gevent.sleep(10)

    ownership = Ownership("a", None, 1, lease, 1)
    parent = gevent.spawn(run_fenced, work)
    bind(parent, ownership, fenced_runner=True)
    gevent.sleep(0.02)
    blocking_sleep(0.3)
    gevent.sleep(0.1)
    assert children and children[0].dead  # resumed after the deadline: fenced at the switch
    assert [t for t in ticks if t >= lease.deadline] == []
    parent.kill()  # still asleep: it would be fenced the same way when its timer fires


def test_work_of_a_live_lease_is_left_alone() -> None:
    lease = started_lease(5)
    ticks: list[float] = []
    ownership = Ownership("a", None, 1, lease, 1)
    worker = gevent.spawn(run_fenced, _ticker, ticks)
    bind(worker, ownership, fenced_runner=True)
    gevent.sleep(0.1)
    assert not worker.dead and len(ticks) >= 3
    worker.kill()
    lease.end()


def test_the_deadline_fires_even_when_the_loops_clock_lagged_when_it_was_armed() -> None:
    """libev counts timer delays from its cached time; armed after the loop was busy, the
    timer fired early, found the lease still valid and was never armed again (seen in the
    chaos suite: a node whose server died kept its lease until Consul said 404)."""
    expired: list[float] = []
    lease = Lease()
    lease.on_expired(expired.append)
    gevent.sleep(0.01)
    blocking_sleep(0.3)  # the loop's cached time is now 0.3 s behind
    lease.begin(1, now() + 0.2)
    gevent.sleep(0.6)
    assert expired, "the lease ran out unnoticed"
    assert not lease.live


def test_a_confirmation_that_lands_after_the_deadline_does_not_revive_the_lease() -> None:
    """Under load the heartbeat thread's confirmation can arrive after the deadline, before the
    deadline timer has run. Reviving the lease then left work the switch guard had already
    fenced dead while the node still counted its items as running (seen at 100,000 items:
    531 items silently stopped on a loaded leader)."""
    lease = started_lease(0.1)
    expired: list[float] = []
    lease.on_expired(expired.append)
    ticks: list[float] = []
    worker = gevent.spawn(run_fenced, _ticker, ticks)
    bind(worker, Ownership("a", None, 1, lease, 1), fenced_runner=True)
    gevent.sleep(0.02)
    blocking_sleep(0.15)  # the deadline passes while the loop is busy
    lease.extend(1, now() + 5)  # the late confirmation
    gevent.sleep(0.1)
    assert worker.dead
    assert not lease.valid() and not lease.live
    assert len(expired) == 1 and lease.expiries == 1


def test_a_lease_the_guard_sealed_ends_even_if_a_racing_extend_moved_its_deadline() -> None:
    lease = started_lease(5)
    expired: list[float] = []
    lease.on_expired(expired.append)
    lease.seal()  # the guard fenced work on it
    lease.deadline = now() + 10  # a confirmation that had passed extend()'s checks just before
    assert not lease.valid() and lease.ran_out
    gevent.sleep(0.05)
    assert len(expired) == 1 and not lease.live
    lease.begin(2, now() + 5)  # a new session's lease starts unsealed
    assert lease.valid()
    lease.end()


def test_wait_sleeps_its_whole_timeout_while_the_lease_is_kept_alive() -> None:
    """Not one wake-up per lease period: a node with 10,000 items would wake 4,400 times a
    second only to look at the clock."""
    lease = started_lease(0.2)
    keeper = gevent.spawn(lambda: [(gevent.sleep(0.05), lease.extend(1, now() + 0.2)) for _ in range(20)])
    ownership = Ownership("a", None, 7, lease, 1)
    started = time.monotonic()
    assert ownership.wait(0.6) is True
    assert time.monotonic() - started >= 0.55
    keeper.kill()
    lease.end()


def test_a_wait_of_an_older_session_returns_at_once() -> None:
    lease = started_lease(5)
    old = Ownership("a", None, 7, lease, 1)
    lease.begin(2, now() + 5)
    started = time.monotonic()
    assert old.wait(2.0) is False
    assert time.monotonic() - started < 0.1
    lease.end()
