"""One revocation path: joined per item, release only after the work is dead, stuck keeps the lock."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent
import gevent.event

from voltha_gevent.errors import ConsulUnavailable
from voltha_gevent.lease import Lease, Ownership, now
from voltha_gevent.revocation import Revocations, RevocationState


class FakeTask:
    """A started item: a work greenlet running ``work`` and an on_revoked of ``stop_seconds``."""

    def __init__(self, item: str, work: Callable[[], None], *, stop_seconds: float = 0.0,
                 events: list[tuple[str, float]] | None = None) -> None:
        self.item = item
        self.session_id = "s1"
        lease = Lease()
        lease.begin(1, now() + 60)
        self.ownership: Ownership | None = Ownership(item, None, 1, lease, 1)
        self.work: gevent.Greenlet | None = gevent.spawn(work)
        self.lock_held = True
        self.stop_seconds = stop_seconds
        self.events = events if events is not None else []
        self.on_revoked_calls = 0

    def cancel_acquire(self, timeout: float) -> bool:
        return True

    def call_on_revoked(self) -> gevent.Greenlet | None:
        self.on_revoked_calls += 1
        return gevent.spawn(self._on_revoked)

    def _on_revoked(self) -> None:
        self.events.append(("on-revoked-start", now()))
        gevent.sleep(self.stop_seconds)
        if self.work is not None:
            self.work.kill(block=False)
        self.events.append(("on-revoked-end", now()))


def revocations(events: list[tuple[str, float]], *, fail_releases: int = 0,
                session: list[bool] | None = None) -> Revocations:
    live = session if session is not None else [True]
    failures = [fail_releases]

    def release(item: str, session_id: str) -> bool:
        if failures[0] > 0:
            failures[0] -= 1
            events.append(("release-failed", now()))
            raise ConsulUnavailable("injected")
        events.append(("released", now()))
        return True

    return Revocations(release_lock=release, session_current=lambda sid: live[0])


def idle_work() -> None:
    gevent.sleep(60)


def test_a_second_revoke_joins_the_first_and_the_release_waits_for_on_revoked() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events)
    task = FakeTask("a", idle_work, stop_seconds=0.2, events=events)
    first = revs.revoke(task, release=True, stop_by=now() + 2)
    gevent.sleep(0.05)
    second = revs.revoke(task, release=True, stop_by=now() + 2)  # e.g. a stop during the handover
    assert second is first
    assert first.join(2)
    assert task.on_revoked_calls == 1
    names = [name for name, _ in events]
    assert names == ["on-revoked-start", "on-revoked-end", "released"]
    assert not task.ownership.valid()


def test_a_session_lost_during_a_handover_cancels_the_release_and_never_releases_early() -> None:
    events: list[tuple[str, float]] = []
    live = [True]
    revs = revocations(events, session=live)
    task = FakeTask("a", idle_work, stop_seconds=0.3, events=events)
    revocation = revs.revoke(task, release=True, stop_by=now() + 2)
    gevent.sleep(0.05)
    live[0] = False
    revs.revoke(task, release=False, stop_by=now() + 2)
    assert revocation.join(2)
    assert [name for name, _ in events] == ["on-revoked-start", "on-revoked-end"]
    assert task.on_revoked_calls == 1


def test_work_that_cannot_be_killed_keeps_the_lock_and_is_reported_stuck() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events)
    release_work = gevent.event.Event()

    def stubborn() -> None:
        while not release_work.is_set():
            try:
                gevent.sleep(0.05)
            except gevent.GreenletExit:
                continue  # swallows every kill

    task = FakeTask("a", stubborn, events=events)
    revocation = revs.revoke(task, release=True, stop_by=now() + 0.1)
    assert not revocation.join(1.0)
    assert revocation.state is RevocationState.STUCK
    assert revs.stuck() == {"a"}
    assert "released" not in [name for name, _ in events]
    release_work.set()
    assert revocation.join(3)
    assert [name for name, _ in events][-1] == "released"
    assert revs.stuck() == set() and revs.stats.stuck == 1


def test_a_failed_release_is_retried_until_it_succeeds() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events, fail_releases=2)
    task = FakeTask("a", idle_work, events=events)
    assert revs.revoke(task, release=True, stop_by=now() + 1).join(3)
    releases = [name for name, _ in events if "release" in name]
    assert releases == ["release-failed", "release-failed", "released"]
    assert revs.stats.release_retries == 2
    assert not task.lock_held


def test_release_retries_stop_when_the_session_ends() -> None:
    events: list[tuple[str, float]] = []
    live = [True]
    revs = revocations(events, fail_releases=1000, session=live)
    task = FakeTask("a", idle_work, events=events)
    revocation = revs.revoke(task, release=True, stop_by=now() + 1)
    gevent.sleep(0.3)
    live[0] = False
    assert revocation.join(6)
    assert "released" not in [name for name, _ in events]


def test_on_revoked_past_the_budget_is_cut_and_the_work_killed_before_any_release() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events)
    task = FakeTask("a", idle_work, stop_seconds=5.0, events=events)
    started = time.monotonic()
    assert revs.revoke(task, release=True, stop_by=now() + 0.2).join(2)
    assert time.monotonic() - started < 1.0
    assert task.work is not None and task.work.dead
    assert [name for name, _ in events] == ["on-revoked-start", "released"]
    assert revs.stats.handler_timeouts == 1


def test_barriers_run_after_on_revoked_and_before_the_release() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events)
    revs.barriers.append(lambda item, timeout: events.append(("barrier", now())) or True)
    task = FakeTask("a", idle_work, events=events)
    assert revs.revoke(task, release=True, stop_by=now() + 1).join(2)
    assert [name for name, _ in events] == ["on-revoked-start", "on-revoked-end", "barrier", "released"]


def test_a_barrier_that_cannot_settle_makes_the_item_stuck() -> None:
    events: list[tuple[str, float]] = []
    revs = revocations(events)
    settled = [False]
    revs.barriers.append(lambda item, timeout: settled[0])
    task = FakeTask("a", idle_work, events=events)
    revocation = revs.revoke(task, release=True, stop_by=now() + 0.1)
    assert not revocation.join(0.5)
    assert revocation.state is RevocationState.STUCK
    assert "released" not in [name for name, _ in events]
    settled[0] = True  # the requests ended after all: the lock goes once the barrier settles
    assert revocation.join(3)
    assert [name for name, _ in events][-1] == "released"
