"""Narrow seams: a Worker, a Leader and the metrics collector built from what they use,
without a Coordinator or a Node.

Layer: unit (each component on the in-memory fake, wired by hand the way ``Node`` wires
them; the session is a plain stand-in, not a SessionKeeper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import structlog.testing

from voltha_gevent.assignment_docs import AssignmentBook, bucket_of, doc_key, encode
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.keys import Keys
from voltha_gevent.leader import Leader
from voltha_gevent.leader_state import LeaderContext, LeaderSettings, LeaderStats
from voltha_gevent.lease import Lease, now
from voltha_gevent.membership import MemberRecord
from voltha_gevent.metrics import LeaderFigures, NodeMetricsView, render
from voltha_gevent.retrying import Retrying, RetryStats
from voltha_gevent.revocation import RevocationStats
from voltha_gevent.testing.auditor import published_once
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import wait_until
from voltha_gevent.watch import WatchStats
from voltha_gevent.worker import CallbackHandler, Worker, WorkerSettings, WorkerStats

KEYS = Keys("seams")


@dataclass
class StandInSession:
    """A session as the worker sees it (``SessionView``): an id, a lease, a way to give up."""

    session_id: str | None
    generation: int = 1
    lease: Lease = field(default_factory=Lease)
    lost: list[str] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return not self.lost

    def mark_lost(self, session_id: str | None, reason: str) -> None:
        self.lost.append(reason)


def stand_in_worker_setup() -> tuple[ConsulAPI, str, StandInSession]:
    """A fake Consul, a session on it and a stand-in for the coordinator's session view."""
    client = FakeConsul().client()
    session_id = client.session.create(ttl=30, lock_delay=0)
    session = StandInSession(session_id)
    session.lease.begin(1, now() + 3600)
    return ConsulAPI(client), session_id, session


def test_a_worker_runs_its_assignments_without_a_coordinator() -> None:
    api, session_id, session = stand_in_worker_setup()
    started: list[str] = []
    stopped: list[str] = []
    worker = Worker(api, api, KEYS, "w1", session, CallbackHandler(lambda item, value: started.append(item),
                                                                    stopped.append),
                    WorkerSettings(soak=0.0, stop_timeout=1.0, watch_wait=2.0))
    book = AssignmentBook(KEYS, epoch=1)  # as the leader publishes
    for item in ("a", "b"):
        api.put(KEYS.item(item), f"value-{item}")
    api.txn(book.changes([], [("w1", "a"), ("w1", "b")]))
    worker.session_started(session_id)
    try:
        assert wait_until(lambda: worker.owned() == {"a", "b"})
        assert sorted(started) == ["a", "b"]
        assert worker.ownership("a").value == b"value-a"
        api.txn(book.changes([("w1", "b")], []))
        assert wait_until(lambda: worker.owned() == {"a"} and stopped == ["b"])
        _, lock = api.get(KEYS.owner("b"))
        assert lock is not None and lock.session is None  # released after on_revoked
    finally:
        worker.session_ended(lost=False)
    assert session.lost == []


def test_a_worker_skips_and_counts_an_unreadable_document_once_and_runs_the_rest() -> None:
    api, session_id, session = stand_in_worker_setup()
    handler = CallbackHandler(lambda item, value: None, lambda item: None)
    settings = WorkerSettings(soak=0.0, stop_timeout=1.0, watch_wait=2.0)
    worker = Worker(api, api, KEYS, "w1", session, handler, settings)
    assert bucket_of("a") == bucket_of("x") and len({bucket_of(i) for i in "abc"}) == 3
    shared = doc_key(KEYS, "w1", bucket_of("a"))  # the document of a and x
    book = AssignmentBook(KEYS, epoch=1)
    for item in ("a", "b", "c", "x"):
        api.put(KEYS.item(item), "")
    api.txn(book.changes([], [("w1", "a"), ("w1", "b"), ("w1", "x")]))
    worker.session_started(session_id)
    try:
        assert wait_until(lambda: worker.owned() == {"a", "b", "x"})
        with structlog.testing.capture_logs() as logs:
            api.put(shared, b"not json")
            assert wait_until(lambda: worker.owned() == {"b"} and worker.stats.skipped_documents == 1)
            # keys that are not <member>/<bucket> are not documents: neither read nor counted
            api.put(f"{KEYS.assignments_of('w1')}not-a-bucket", encode(1, ["c"]))
            api.put(f"{shared}/deeper", encode(1, ["c"]))
            api.txn(book.changes([], [("w1", "c")]))  # another document changes: the bad one is not re-read
            assert wait_until(lambda: worker.owned() == {"b", "c"})
            assert worker.stats.skipped_documents == 1
            api.put(shared, b'{"epoch": 1, "items": ["a", "bad name"]}')
            assert wait_until(lambda: worker.stats.skipped_documents == 2)
        skips = [e for e in logs if e["event"] == "entry-skipped"]
        assert [(e["key"], e["reason"].split(":")[0]) for e in skips] == [
            (shared, "not JSON"), (shared, "invalid item name 'bad name'")]
        api.put(shared, encode(1, ["a", "x"]))  # the leader rewrites it
        assert wait_until(lambda: worker.owned() == {"a", "b", "c", "x"})
        assert worker.stats.skipped_documents == 2
    finally:
        worker.session_ended(lost=False)
    assert session.lost == []


def test_a_leader_assigns_the_workload_without_a_coordinator() -> None:
    fake = FakeConsul()
    client = fake.client()
    api = ConsulAPI(client)
    session_id = client.session.create(ttl=30, lock_delay=0)
    assert client.kv.put(KEYS.leader, "l1", acquire=session_id)
    for member in ("m1", "m2"):
        member_session = client.session.create(ttl=30, lock_delay=0)
        record = MemberRecord(instance_id=member, internal_host="127.0.0.1", external_host="127.0.0.1",
                              rest_port=0, capacity=1.0, started_at=0.0)
        assert client.kv.put(KEYS.member(member), record.to_json(), acquire=member_session)
    items = {f"item{i}" for i in range(20)}
    for item in items:
        api.put(KEYS.item(item), "")
    given_up: list[str] = []
    leader = Leader(LeaderContext(api=api, watch_api=api, keys=KEYS, retry=Retrying(), epoch=1,
                                  session_id=session_id, settings=LeaderSettings(soak=0.05, watch_wait=2.0),
                                  give_up=given_up.append))
    leader.start()
    try:
        def assigned() -> dict[str, str]:
            return published_once(fake, KEYS.prefix)

        assert wait_until(lambda: set(assigned()) == items)
        assert set(assigned().values()) == {"m1", "m2"}
        assert leader.stats.reassignments >= 1
    finally:
        leader.stop()
    assert given_up == []


def test_metrics_read_a_view_of_counters_and_callables_not_a_node() -> None:
    """What ``/metrics`` shows comes from the view's fields only (the node builds the view)."""
    session = SimpleNamespace(renewals=7, losses=2)  # the session keeper's counters
    leading: list[LeaderFigures | None] = [None]
    stats = LeaderStats()
    stats.reassignments = 3
    view = NodeMetricsView(
        is_leader=lambda: leading[0] is not None, epoch=lambda: 4, healthy=lambda: True,
        members=lambda: {"a", "b"}, owned=lambda: {"x"}, pending=set, stuck=set,
        session=session, lease=Lease(), retry=RetryStats(errors=5), worker=WorkerStats(),
        revocations=RevocationStats(), leader=lambda: leading[0],
        watches=lambda: {"w": WatchStats()}, dispatcher=lambda: None,
    )
    text = render(view).decode()
    for line in ("voltha_is_leader 0.0", "voltha_leader_epoch 4.0", "voltha_members 2.0",
                 "voltha_owned_items 1.0", "voltha_session_renewals_total 7.0",
                 "voltha_session_losses_total 2.0", "voltha_consul_errors_total 5.0",
                 'voltha_watch_rearms_total{watch="w"} 0.0'):
        assert line + "\n" in text
    assert "voltha_reassignments_total" not in text and "voltha_dispatch_local_total" not in text
    leading[0] = LeaderFigures(stats, workload_items=9)
    text = render(view).decode()
    assert "voltha_is_leader 1.0\n" in text
    assert "voltha_workload_items 9.0\n" in text and "voltha_reassignments_total 3.0\n" in text
