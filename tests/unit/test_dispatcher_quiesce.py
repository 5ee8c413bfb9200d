"""Revocation waits for the item's requests being served here: ``quiesce(item, timeout)``.

From the call on, no new request for the item is served here; runs in flight are waited for,
then killed (bounded); serving resumes on a new ownership. The last tests run the real
revocation path of :class:`~voltha_gevent.Node` on the fake Consul.
"""

from __future__ import annotations

import json
import time

import gevent
import gevent.event
import pytest
from dispatcher_stubs import StubNode, StubOwners, environ, stub_dispatcher

from voltha_gevent.northbound import (
    FORWARDED_HEADER,
    QUIESCE_KILL_WAIT,
    NotOwner,
    RequestDispatcher,
    RequestInterrupted,
)
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster


class Slow:
    """A handler that records start/end of each run and blocks until ``release`` is set."""

    def __init__(self, stubborn: bool = False) -> None:
        self.events: list[tuple[str, str | None]] = []
        self.release = gevent.event.Event()
        self.stubborn = stubborn

    def handler(self, item, payload):
        self.events.append(("start", item))
        while True:
            try:
                self.release.wait(5)
                break
            except gevent.GreenletExit:
                if not self.stubborn:
                    raise
        self.events.append(("end", item))
        return ("local", item)


def forwards_to(calls: list[str]):
    return lambda member, envelope, timeout: calls.append(member.instance_id) or f"by {member.instance_id}"


def test_quiesce_waits_for_the_items_requests_in_flight():
    slow = Slow()
    dispatcher = stub_dispatcher(StubOwners("b"), None, StubNode(owned={"x"}), handler=slow.handler)
    try:
        request = dispatcher.submit_async("x")
        gevent.sleep(0.01)
        gevent.spawn_later(0.1, slow.release.set)
        started = time.monotonic()
        assert dispatcher.quiesce("x", 2.0) is True
        waited = time.monotonic() - started
        assert slow.events == [("start", "x"), ("end", "x")]  # returned only after the run ended
        assert 0.08 < waited < 1.0
        assert request.get(timeout=1) == ("local", "x")
    finally:
        dispatcher.stop()


def test_quiesce_returns_at_once_when_nothing_of_the_item_runs():
    slow = Slow()
    dispatcher = stub_dispatcher(StubOwners("b"), None, StubNode(owned={"x", "y"}), handler=slow.handler)
    try:
        other = dispatcher.submit_async("y")
        gevent.sleep(0.01)
        started = time.monotonic()
        assert dispatcher.quiesce("x", 2.0) is True
        assert time.monotonic() - started < 0.05
        slow.release.set()
        assert other.get(timeout=1) == ("local", "y")
    finally:
        dispatcher.stop()


def test_quiesced_item_is_not_served_here_from_the_call_on():
    calls: list[str] = []
    dispatcher = stub_dispatcher(StubOwners("b"), forwards_to(calls), StubNode(owned={"x", "y"}))
    try:
        assert dispatcher.quiesce("x", 1.0) is True
        with pytest.raises(NotOwner):
            dispatcher.serve_forwarded({"item": "x"}, "b")
        status, _, body = dispatcher.dispatch_route(environ({"item": "x"}, headers={FORWARDED_HEADER: "b"}))
        assert (status, json.loads(body)["reason"]) == (409, "not-owner")
        assert dispatcher.submit("x", timeout=5) == "by b"  # routed to the owner the view names
        assert dispatcher.submit("y", timeout=5) == ("local", "y")  # other items still served here
    finally:
        dispatcher.stop()
    assert calls == ["b"]


def test_quiesce_kills_requests_that_outlive_its_timeout():
    slow = Slow()
    dispatcher = stub_dispatcher(StubOwners("b"), None, StubNode(owned={"x"}), handler=slow.handler)
    try:
        request = dispatcher.submit_async("x")
        gevent.sleep(0.01)
        started = time.monotonic()
        assert dispatcher.quiesce("x", 0.1) is True
        assert time.monotonic() - started < 0.1 + QUIESCE_KILL_WAIT
        with pytest.raises(RequestInterrupted) as caught:
            request.get(timeout=1)
        assert caught.value.maybe_served is True
        assert slow.events == [("start", "x")]
        assert dispatcher.stats.interrupted == 1
    finally:
        dispatcher.stop()


def test_quiesce_answers_false_when_a_request_survives_its_kill():
    slow = Slow(stubborn=True)
    dispatcher = stub_dispatcher(StubOwners("b"), None, StubNode(owned={"x"}), handler=slow.handler)
    try:
        dispatcher.submit_async("x")
        gevent.sleep(0.01)
        started = time.monotonic()
        assert dispatcher.quiesce("x", 0.05) is False
        assert time.monotonic() - started < 0.05 + QUIESCE_KILL_WAIT + 0.1
    finally:
        slow.release.set()
        dispatcher.stop()


def test_forwarded_request_killed_by_quiesce_answers_interrupted():
    slow = Slow()
    dispatcher = stub_dispatcher(StubOwners("a"), None, StubNode(owned={"x"}), handler=slow.handler)
    try:
        forwarded = environ({"item": "x"}, headers={FORWARDED_HEADER: "b"})
        answer = gevent.spawn(dispatcher.dispatch_route, forwarded)
        gevent.sleep(0.01)
        assert dispatcher.quiesce("x", 0.05) is True
        status, _, body = answer.get(timeout=2)
    finally:
        dispatcher.stop()
    assert status == 500
    assert (json.loads(body)["reason"], json.loads(body)["maybe_served"]) == ("interrupted", True)


def test_serving_resumes_on_a_new_ownership_after_the_revocation():
    calls: list[str] = []
    node = StubNode(owned={"x"})
    dispatcher = stub_dispatcher(StubOwners("b"), forwards_to(calls), node)
    try:
        node._owned.discard("x")  # the worker revokes x, then the barrier runs
        assert dispatcher.quiesce("x", 1.0) is True
        node._owned.add("x")  # x assigned here again: a new ownership
        assert dispatcher.submit("x", timeout=5) == ("local", "x")
    finally:
        dispatcher.stop()
    assert calls == []


def test_quiesce_of_a_live_ownership_holds_until_its_token_changes():
    calls: list[str] = []
    node = StubNode(owned={"x"}, tokens={"x": 5})
    dispatcher = stub_dispatcher(StubOwners("b"), forwards_to(calls), node)
    try:
        assert dispatcher.quiesce("x", 1.0) is True
        assert dispatcher.submit("x", timeout=5) == "by b"
        node.tokens["x"] = 9  # lost and taken again: a new ownership
        assert dispatcher.submit("x", timeout=5) == ("local", "x")
    finally:
        dispatcher.stop()
    assert calls == ["b"]


def test_resume_ends_a_quiesce_by_hand():
    node = StubNode(owned={"x"})
    dispatcher = stub_dispatcher(StubOwners("b"), forwards_to([]), node)
    try:
        dispatcher.quiesce("x", 1.0)
        assert not dispatcher.local.serves("x")
        dispatcher.resume("x")
        assert dispatcher.submit("x", timeout=5) == ("local", "x")
    finally:
        dispatcher.stop()


def test_item_whose_lease_is_not_valid_is_not_served_here():
    node = StubNode(owned={"x"}, tokens={"x": None})  # still RUNNING, lease ran out
    dispatcher = stub_dispatcher(StubOwners("a"), forwards_to([]), node)
    try:
        with pytest.raises(NotOwner):
            dispatcher.serve_forwarded({"item": "x"}, "b")
    finally:
        dispatcher.stop()


def test_start_adds_quiesce_as_a_revoke_barrier_once():
    node = StubNode()
    dispatcher = stub_dispatcher(StubOwners(None), forwards_to([]), node)
    dispatcher.stop()
    dispatcher.start()
    dispatcher.stop()
    assert node.barriers == [dispatcher.quiesce]


# --------------------------------------------------------------------------- the real revocation path


def test_revocation_releases_the_owner_lock_only_after_the_request_being_served_ended():
    """A node leaves while a request for one of its items is being served: the item's owner
    lock stays held (no other node runs it) until the request has finished."""
    slow = Slow()
    with FakeCluster(FakeConsul()) as cluster:
        cluster.add_items("x")
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.owned() == {"x"})
        dispatcher = node.add_dispatcher(slow.handler, forward=forwards_to([]), workers=2).start()
        try:
            request = dispatcher.submit_async("x")
            assert cluster.wait_until(lambda: slow.events == [("start", "x")], 2)
            b = cluster.add_node("b")
            stopper = gevent.spawn(cluster.stop, "a")
            gevent.sleep(0.5)
            assert slow.events == [("start", "x")] and b.owned() == set()  # a still serves x
            slow.release.set()
            assert request.get(timeout=2) == ("local", "x")
            assert cluster.wait_until(lambda: b.owned() == {"x"}, 10)
            stopper.join(5)
        finally:
            slow.release.set()
            dispatcher.stop()
        assert cluster.ledger.violations == []


def delay_runs(dispatcher: RequestDispatcher, monkeypatch: pytest.MonkeyPatch, seconds: float = 1.0) -> None:
    """Each request's handler greenlet begins only ``seconds`` after it is spawned."""
    group = dispatcher.local._group

    def spawn(*args):
        run = gevent.Greenlet(*args)
        group.add(run)
        run.start_later(seconds)
        return run

    monkeypatch.setattr(group, "spawn", spawn)


def test_forwarded_request_quiesced_before_its_handler_began_is_answered_not_owner(monkeypatch):
    slow = Slow()
    dispatcher = stub_dispatcher(StubOwners("a"), None, StubNode(owned={"x"}), handler=slow.handler)
    delay_runs(dispatcher, monkeypatch)
    try:
        forwarded = environ({"item": "x"}, headers={FORWARDED_HEADER: "b"})
        answer = gevent.spawn(dispatcher.dispatch_route, forwarded)
        gevent.sleep(0.05)  # accepted, its handler not begun
        assert dispatcher.quiesce("x", 0.0) is True
        status, _, body = answer.get(timeout=2)
    finally:
        dispatcher.stop()
    assert (status, json.loads(body)["reason"], json.loads(body)["maybe_served"]) == (409, "not-owner", False)
    assert slow.events == [] and dispatcher.stats.interrupted == 0


def test_local_request_quiesced_before_its_handler_began_goes_to_the_new_owner(monkeypatch):
    slow, calls = Slow(), []
    node = StubNode(owned={"x"})
    dispatcher = stub_dispatcher(StubOwners("b"), forwards_to(calls), node, handler=slow.handler)
    delay_runs(dispatcher, monkeypatch)
    try:
        request = dispatcher.submit_async("x")
        gevent.sleep(0.05)
        assert dispatcher.quiesce("x", 0.0) is True
        assert request.get(timeout=2) == "by b"
    finally:
        dispatcher.stop()
    assert slow.events == [] and calls == ["b"]
