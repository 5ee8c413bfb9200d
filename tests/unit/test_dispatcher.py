"""The request dispatcher: routing decisions, queue bound, loop guard, retry, broadcast, handover.

Forwarding is injected (``forward=``) here. HTTP forwarding is tested against scripted peers
in ``test_dispatcher_delivery.py`` and with node processes in
``tests/integration/test_dispatcher_real.py``; cancellation, quiesce and linger have their
own ``test_dispatcher_*.py`` files.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import gevent
import pytest
from dispatcher_stubs import SIZES, StubNode, StubOwners, environ, stub_dispatcher

from voltha_gevent.errors import VolthaError
from voltha_gevent.membership import MemberRecord
from voltha_gevent.metrics import render
from voltha_gevent.northbound import (
    ALL,
    FORWARDED_HEADER,
    TOKEN_HEADER,
    DispatcherBusy,
    ForwardFailed,
    NotOwner,
    OwnerUnavailable,
    RequestDispatcher,
    UnknownItem,
)
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster

ITEMS = [f"dg{i:03d}" for i in range(30)]


# --------------------------------------------------------------------------- helpers


class Served:
    """Handlers that record (instance, item, request id) of every run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, Any, Any]] = []

    def handler(self, instance: str):
        def serve(item: str | None, payload: Any) -> dict[str, Any]:
            self.runs.append((instance, item, payload.get("id") if isinstance(payload, dict) else None))
            return {"item": item, "served_by": instance}
        return serve


def in_process_forward(dispatchers: dict[str, RequestDispatcher], calls: list[str] | None = None):
    """What the HTTP forwarder does, without HTTP: "not owner" / gone members are retryable."""
    def forward(member: MemberRecord, envelope: dict[str, Any], timeout: float) -> Any:
        if calls is not None:
            calls.append(member.instance_id)
        target = dispatchers.get(member.instance_id)
        if target is None:
            raise ForwardFailed("connection refused", member=member.instance_id, reason="connect-failed",
                                retryable=True)
        try:
            return target.serve_forwarded(envelope, "test")
        except NotOwner as exc:
            name = member.instance_id
            raise ForwardFailed(str(exc), member=name, reason="not-owner", retryable=True) from exc
    return forward


@pytest.fixture
def cluster():
    with FakeCluster(FakeConsul()) as c:
        c.add_items(*ITEMS)
        yield c


def with_dispatchers(cluster: FakeCluster, served: Served, names=("a", "b", "c"), node_settings=None,
                     **kw: Any):
    dispatchers: dict[str, RequestDispatcher] = {}
    for name in names:
        node = cluster.add_node(name, **(node_settings or {}))
        forward = in_process_forward(dispatchers)
        dispatchers[name] = node.add_dispatcher(served.handler(name), forward=forward,
                                                **{**SIZES, "owner_wait": 5.0, **kw}).start()
    assert cluster.wait_until(lambda: cluster.converged(set(ITEMS)))
    return dispatchers


# --------------------------------------------------------------------------- routing on a fake cluster


def test_every_item_is_served_by_its_owner_local_or_forwarded(cluster):
    served = Served()
    dispatchers = with_dispatchers(cluster, served)
    a = dispatchers["a"]
    owner_of = {item: name for name, node in cluster.nodes.items() for item in node.owned()}
    answers = {item: a.submit(item, {"id": item}, timeout=5) for item in ITEMS}
    assert {item: answer["served_by"] for item, answer in answers.items()} == owner_of
    assert sorted(r[1] for r in served.runs) == sorted(ITEMS)  # each once
    mine = len(cluster.nodes["a"].owned())
    assert 0 < mine < len(ITEMS)
    assert (a.stats.local, a.stats.forwarded, a.stats.failed) == (mine, len(ITEMS) - mine, 0)
    assert dispatchers["b"].stats.received + dispatchers["c"].stats.received == len(ITEMS) - mine
    assert a.stats.latency.count == len(ITEMS)
    metrics = render(cluster.nodes["a"].metrics_view).decode()
    assert f"voltha_dispatch_local_total {float(mine)}" in metrics
    assert "voltha_dispatch_queue_depth 0.0" in metrics
    assert f'voltha_dispatch_latency_seconds_bucket{{le="+Inf"}} {float(len(ITEMS))}' in metrics


def test_a_dispatcher_sets_nothing_on_its_node_and_is_attached_by_the_node(cluster):
    """The constructor only reads the node; the node serves the counters of the one it attached."""
    stub = StubNode()
    before = dict(vars(stub))
    RequestDispatcher(stub, lambda item, payload: None, owners=StubOwners(None), **SIZES)
    assert vars(stub) == before
    node = cluster.add_node("a")
    assert node.dispatcher is None
    assert "voltha_dispatch_local_total" not in render(node.metrics_view).decode()
    dispatcher = node.add_dispatcher(lambda item, payload: None, forward=lambda m, e, t: None)
    assert node.dispatcher is dispatcher
    assert "voltha_dispatch_local_total 0.0" in render(node.metrics_view).decode()
    node.attach_dispatcher(dispatcher)  # the same one again: nothing changes
    other = RequestDispatcher(node, lambda item, payload: None, owners=StubOwners(None))
    with pytest.raises(ValueError):
        node.attach_dispatcher(other)


def test_request_without_item_runs_locally(cluster):
    served = Served()
    dispatchers = with_dispatchers(cluster, served)
    assert dispatchers["b"].submit(None, {"id": 1}, timeout=5) == {"item": None, "served_by": "b"}
    assert served.runs == [("b", None, 1)]


def test_broadcast_reaches_every_live_member(cluster):
    served = Served()
    dispatchers = with_dispatchers(cluster, served)
    answer = dispatchers["a"].broadcast({"id": "all"}, timeout=5)
    assert answer["errors"] == {}
    assert {name: r["served_by"] for name, r in answer["results"].items()} == {"a": "a", "b": "b", "c": "c"}
    assert sorted(r[0] for r in served.runs) == ["a", "b", "c"]


def test_broadcast_merges_per_member_errors():
    def forward(member, envelope, timeout):
        if member.instance_id == "c":
            raise ForwardFailed("connection refused", member="c", reason="connect-failed", retryable=True)
        return {"from": member.instance_id}

    dispatcher = stub_dispatcher(StubOwners(None), forward)
    try:
        answer = dispatcher.submit(ALL, {}, timeout=5)
    finally:
        dispatcher.stop()
    assert answer["results"] == {"a": ("local", ALL), "b": {"from": "b"}}
    assert answer["errors"] == {"c": "forwarding to c failed (connect-failed): connection refused"}


def test_requests_during_a_join_are_neither_lost_nor_served_twice(cluster):
    served = Served()
    # on_revoked takes 0.3 s: the old owner still holds the lock but answers "not owner"
    sizes = dict(queue_size=2000, workers=32, owner_wait=8.0)
    dispatchers = with_dispatchers(cluster, served, node_settings={"revoke_delay": 0.3}, **sizes)
    a = dispatchers["a"]
    pending = []
    joined = False
    for round_ in range(40):  # bounded: 40 rounds of 30 requests while d joins and items move
        ids = [(f"{round_}-{item}", item) for item in ITEMS]
        pending.extend((rid, a.submit_async(item, {"id": rid})) for rid, item in ids)
        if round_ == 5:
            node = cluster.add_node("d")
            forward = in_process_forward(dispatchers)
            dispatchers["d"] = node.add_dispatcher(served.handler("d"), forward=forward,
                                                   **{**SIZES, **sizes}).start()
            joined = True
        gevent.sleep(0.05)
    gevent.joinall([r for _, r in pending], timeout=30)
    assert joined and cluster.wait_until(lambda: cluster.converged(set(ITEMS)), 10)
    failures = [(rid, r.exception) for rid, r in pending if not r.successful()]
    assert failures == []
    counts = Counter(r[2] for r in served.runs)
    assert len(counts) == len(pending) and set(counts.values()) == {1}
    assert dispatchers["d"].stats.received > 0  # d took items over and served requests for them
    assert a.stats.retries > 0  # some requests met an old owner mid-handover and were re-routed
    assert cluster.ledger.violations == []


# --------------------------------------------------------------------------- decisions with a scripted view


def test_owned_locally_runs_the_handler_without_reading_or_forwarding():
    calls: list[str] = []
    owners = StubOwners("b")
    dispatcher = stub_dispatcher(owners, lambda m, e, t: calls.append(m.instance_id), StubNode(owned={"x"}))
    try:
        assert dispatcher.submit("x", timeout=5) == ("local", "x")
    finally:
        dispatcher.stop()
    assert calls == [] and owners.reads == 0


def test_retryable_failure_retries_once_after_re_reading_ownership():
    calls: list[str] = []

    def forward(member, envelope, timeout):
        calls.append(member.instance_id)
        if member.instance_id == "b":
            raise ForwardFailed("not owner", member="b", reason="not-owner", retryable=True)
        return "served by c"

    owners = StubOwners("b", "b", "c")  # b (view), b again (re-read: not moved yet), then c
    dispatcher = stub_dispatcher(owners, forward)
    try:
        assert dispatcher.submit("x", timeout=5) == "served by c"
    finally:
        dispatcher.stop()
    assert calls == ["b", "c"]
    assert (dispatcher.stats.retries, dispatcher.stats.forwarded) == (1, 1)


def test_second_retryable_failure_is_an_error_not_a_third_forward():
    calls: list[str] = []

    def forward(member, envelope, timeout):
        calls.append(member.instance_id)
        raise ForwardFailed("not owner", member=member.instance_id, reason="not-owner", retryable=True)

    dispatcher = stub_dispatcher(StubOwners("b", "c"), forward)
    try:
        with pytest.raises(ForwardFailed):
            dispatcher.submit("x", timeout=5)
    finally:
        dispatcher.stop()
    assert calls == ["b", "c"]
    assert dispatcher.stats.failed == 1


def test_timeout_is_not_retried_because_the_owner_may_have_served_it():
    calls: list[str] = []

    def forward(member, envelope, timeout):
        calls.append(member.instance_id)
        raise ForwardFailed("no answer within 2 s", member=member.instance_id, reason="timeout")

    dispatcher = stub_dispatcher(StubOwners("b", "c"), forward)
    try:
        with pytest.raises(ForwardFailed, match="no answer"):
            dispatcher.submit("x", timeout=5)
    finally:
        dispatcher.stop()
    assert calls == ["b"]


def test_unowned_item_waits_up_to_the_bound_then_fails_clearly():
    dispatcher = stub_dispatcher(StubOwners(None), lambda m, e, t: pytest.fail("no owner to forward to"),
                                 owner_wait=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(OwnerUnavailable, match="no owner for item x"):
            dispatcher.submit("x", timeout=5)
    finally:
        dispatcher.stop()
    assert 0.3 <= time.monotonic() - started < 1.0


def test_owner_appearing_during_handover_gets_the_request():
    owners = StubOwners(None, None, None, "a-gone", None, "c")  # a member not live counts as no owner
    dispatcher = stub_dispatcher(owners, lambda m, e, t: f"served by {m.instance_id}", owner_wait=2.0)
    try:
        assert dispatcher.submit("x", timeout=5) == "served by c"
    finally:
        dispatcher.stop()
    assert owners.reads == 6


# --------------------------------------------------------------------------- queue bound


def test_full_queue_rejects_with_a_clear_error_and_serves_the_rest():
    release = gevent.event.Event()

    def slow(item, payload):
        release.wait(5)
        return payload

    dispatcher = RequestDispatcher(StubNode(), slow, queue_size=2, workers=1, forward_timeout=1.0,
                                   owner_wait=1.0, forward=lambda m, e, t: None, owners=StubOwners(None))
    dispatcher.start()
    try:
        first = dispatcher.submit_async(None, 1)
        gevent.sleep(0.01)  # the only worker takes it and blocks
        queued = [dispatcher.submit_async(None, n) for n in (2, 3)]
        assert dispatcher.queue_depth == 2
        with pytest.raises(DispatcherBusy) as caught:
            dispatcher.submit_async(None, 4)
        assert isinstance(caught.value, VolthaError)
        assert "dispatcher busy: 2 requests queued" in str(caught.value)
        release.set()
        assert [r.get(timeout=5) for r in (first, *queued)] == [1, 2, 3]
        assert (dispatcher.stats.rejected, dispatcher.stats.local) == (1, 3)
    finally:
        dispatcher.stop()


# --------------------------------------------------------------------------- the receiving side


def test_forwarded_request_is_never_forwarded_again():
    calls: list[str] = []
    dispatcher = stub_dispatcher(StubOwners("b"), lambda m, e, t: calls.append(m.instance_id),
                                 StubNode(owned={"mine"}))
    try:
        with pytest.raises(NotOwner):
            dispatcher.serve_forwarded({"item": "x"}, "b")
        status, _, body = dispatcher.dispatch_route(environ({"item": "x"}, headers={FORWARDED_HEADER: "b"}))
        assert status == 409 and json.loads(body)["reason"] == "not-owner"
        assert json.loads(body)["maybe_served"] is False
        status, _, body = dispatcher.dispatch_route(environ({"item": "mine", "payload": 1},
                                                            headers={FORWARDED_HEADER: "b"}))
        assert status == 200 and json.loads(body)["result"] == ["local", "mine"]
    finally:
        dispatcher.stop()
    assert calls == []
    assert (dispatcher.stats.not_owner, dispatcher.stats.received) == (2, 1)


def test_forwarded_request_for_an_item_still_starting_here_waits_for_it():
    node = StubNode(pending={"x"})
    dispatcher = stub_dispatcher(StubOwners("a"), lambda m, e, t: None, node)
    try:
        gevent.spawn_later(0.1, lambda: (node._pending.clear(), node._owned.add("x")))
        assert dispatcher.serve_forwarded({"item": "x"}, "b") == ("local", "x")
    finally:
        dispatcher.stop()


def test_dispatch_route_without_the_forwarded_header_is_refused():
    dispatcher = stub_dispatcher(StubOwners("b"), lambda m, e, t: None)
    try:
        status, _, body = dispatcher.dispatch_route(environ({"item": "x"}))
    finally:
        dispatcher.stop()
    assert status == 400 and FORWARDED_HEADER in json.loads(body)["error"]


def test_dispatch_route_accepts_only_member_addresses_without_a_token():
    dispatcher = stub_dispatcher(StubOwners(None), lambda m, e, t: None)
    try:
        outsider = dispatcher.dispatch_route(environ({"item": None}, remote="10.9.9.9",
                                                     headers={FORWARDED_HEADER: "b"}))
        member = dispatcher.dispatch_route(environ({"item": None}, headers={FORWARDED_HEADER: "b"}))
    finally:
        dispatcher.stop()
    assert (outsider[0], member[0]) == (403, 200)
    assert dispatcher.stats.denied == 1


def test_dispatch_route_requires_the_shared_token_when_configured():
    dispatcher = stub_dispatcher(StubOwners(None), lambda m, e, t: None, token="s3cret")
    try:
        statuses = [dispatcher.dispatch_route(environ({"item": None}, remote=remote,
                                                      headers={FORWARDED_HEADER: "b", **extra}))[0]
                    for remote, extra in (("127.0.0.1", {}), ("127.0.0.1", {TOKEN_HEADER: "wrong"}),
                                          ("10.9.9.9", {TOKEN_HEADER: "s3cret"}))]
    finally:
        dispatcher.stop()
    assert statuses == [403, 403, 200]


def test_an_item_not_in_the_workload_answers_404_at_once():
    owners = StubOwners(None, workload={"x"})
    dispatcher = stub_dispatcher(owners, lambda m, e, t: pytest.fail("nobody to forward to"), owner_wait=5.0)
    started = time.monotonic()
    try:
        with pytest.raises(UnknownItem, match="unknown item nope: not in the workload"):
            dispatcher.submit("nope", timeout=10)
        status, _, body = dispatcher.client_route(environ({"item": "nope"}))
    finally:
        dispatcher.stop()
    assert time.monotonic() - started < 1.0
    assert status == 404
    assert json.loads(body) == {"error": "unknown item nope: not in the workload", "reason": "unknown-item",
                                "maybe_served": False}


def test_deeply_nested_json_is_a_400_and_a_body_over_1_mib_a_413():
    import io

    from voltha_gevent.northbound.wire import MAX_BODY_BYTES

    dispatcher = stub_dispatcher(StubOwners("a"), lambda m, e, t: pytest.fail("not forwarded"))
    nested = b'{"item": null, "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    just_parseable = b'{"item": null, "payload": ' + b"[" * 900 + b"]" * 900 + b"}"
    big = b'{"item": null, "payload": "' + b"x" * MAX_BODY_BYTES + b'"}'
    try:
        deep = dispatcher.client_route({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(nested)),
                                        "wsgi.input": io.BytesIO(nested)})
        under_the_parser_limit = dispatcher.client_route({
            "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(just_parseable)),
            "wsgi.input": io.BytesIO(just_parseable)})
        large = dispatcher.client_route({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(big)),
                                         "wsgi.input": io.BytesIO(big)})
    finally:
        dispatcher.stop()
    assert deep[0] == 400 and json.loads(deep[2])["reason"] == "invalid-request"
    assert under_the_parser_limit[0] == 400
    assert large[0] == 413 and json.loads(large[2]) == {
        "error": f"body of {len(big)} bytes is larger than {MAX_BODY_BYTES}", "reason": "too-large",
        "maybe_served": False}


def test_client_route_submits_and_maps_errors_to_statuses():
    dispatcher = stub_dispatcher(StubOwners(None), lambda m, e, t: None, owner_wait=0.1)
    try:
        ok = dispatcher.client_route(environ({"item": None, "payload": 7}))
        bad = dispatcher.client_route(environ({"item": "no/such"}))
        unowned = dispatcher.client_route(environ({"item": "x"}))
    finally:
        dispatcher.stop()
    assert ok[0] == 200 and json.loads(ok[2])["result"] == ["local", None]
    assert bad[0] == 400
    assert unowned[0] == 503 and json.loads(unowned[2])["reason"] == "no-owner"


def test_stop_fails_queued_requests_and_refuses_new_ones():
    release = gevent.event.Event()
    dispatcher = RequestDispatcher(StubNode(), lambda i, p: release.wait(5), queue_size=5, workers=1,
                                   forward_timeout=1.0, owner_wait=1.0, forward=lambda m, e, t: None,
                                   owners=StubOwners(None))
    dispatcher.start()
    first = dispatcher.submit_async(None)
    gevent.sleep(0.01)
    queued = dispatcher.submit_async(None)
    gevent.spawn_later(0.05, release.set)
    dispatcher.stop(timeout=2)
    assert first.successful()
    assert isinstance(queued.exception, VolthaError)
    with pytest.raises(VolthaError):
        dispatcher.submit_async(None)


def test_stop_lets_a_forwarded_request_in_progress_finish():
    release = gevent.event.Event()
    dispatcher = RequestDispatcher(StubNode(owned={"x"}), lambda i, p: release.wait(5) and "done",
                                   forward=lambda m, e, t: None, owners=StubOwners("a"), **SIZES)
    dispatcher.start()
    answer = gevent.spawn(dispatcher.dispatch_route, environ({"item": "x"}, headers={FORWARDED_HEADER: "b"}))
    gevent.sleep(0.01)
    gevent.spawn_later(0.1, release.set)
    dispatcher.stop(timeout=2)
    status, _, body = answer.get(timeout=2)
    assert (status, json.loads(body)["result"]) == (200, "done")
