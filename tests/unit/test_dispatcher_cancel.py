"""A caller's timeout cancels a request that was not delivered yet: it never runs afterwards.

Delivered (a handler started, or a forward was sent) requests are not cancelled silently:
the caller is told it may still run, and it runs once.
"""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from dispatcher_stubs import StubOwners, stub_dispatcher

from voltha_gevent.northbound import DispatchTimeout, ForwardFailed


class Gate:
    """A handler that records each run and blocks payloads named "block" until released."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.release = gevent.event.Event()

    def handler(self, item, payload):
        self.runs.append(payload)
        if payload == "block":
            self.release.wait(5)
        return payload


def test_caller_timeout_cancels_a_queued_request_which_never_runs():
    gate = Gate()
    dispatcher = stub_dispatcher(StubOwners(None), None, handler=gate.handler, workers=1)
    try:
        first = dispatcher.submit_async(None, "block")
        gevent.sleep(0.01)  # the only worker runs it and blocks
        with pytest.raises(DispatchTimeout) as caught:
            dispatcher.submit(None, "late", timeout=0.05)
        gate.release.set()
        assert first.get(timeout=5) == "block"
        gevent.sleep(0.05)  # the worker is free: a request still queued would run now
    finally:
        dispatcher.stop()
    assert gate.runs == ["block"]
    assert caught.value.delivered is False and caught.value.maybe_served is False
    assert "never served" in str(caught.value)
    assert dispatcher.stats.cancelled == 1


def test_cancelled_handle_never_runs():
    gate = Gate()
    dispatcher = stub_dispatcher(StubOwners(None), None, handler=gate.handler, workers=1)
    try:
        dispatcher.submit_async(None, "block")
        gevent.sleep(0.01)
        queued = dispatcher.submit_async(None, "late")
        assert queued.cancel() is True
        gate.release.set()
        gevent.sleep(0.05)
    finally:
        dispatcher.stop()
    assert gate.runs == ["block"]
    assert isinstance(queued.exception, DispatchTimeout)


def test_caller_timeout_while_waiting_for_an_owner_cancels_the_request():
    calls: list[str] = []
    owners = StubOwners(None)  # handover: nobody holds the item yet
    dispatcher = stub_dispatcher(owners, lambda m, e, t: calls.append(m.instance_id), owner_wait=5.0)
    try:
        with pytest.raises(DispatchTimeout) as caught:
            dispatcher.submit("x", timeout=0.1)
        owners.answers = ["b"]  # the new owner appears after the caller gave up
        gevent.sleep(0.3)
    finally:
        dispatcher.stop()
    assert calls == []
    assert caught.value.delivered is False
    assert dispatcher.stats.cancelled == 1


def test_caller_timeout_after_delivery_says_it_may_still_run_and_it_runs_once():
    gate = Gate()
    dispatcher = stub_dispatcher(StubOwners(None), None, handler=gate.handler, workers=1)
    try:
        with pytest.raises(DispatchTimeout) as caught:
            dispatcher.submit(None, "block", timeout=0.05)
        gate.release.set()
        gevent.sleep(0.05)
    finally:
        dispatcher.stop()
    assert gate.runs == ["block"]
    assert caught.value.delivered is True and caught.value.maybe_served is True
    assert "may still be served" in str(caught.value)


def test_request_whose_caller_gave_up_is_not_re_sent_after_a_proven_non_delivery():
    calls: list[str] = []

    def forward(member, envelope, timeout):
        calls.append(member.instance_id)
        gevent.sleep(0.1)  # the caller gives up meanwhile
        raise ForwardFailed("refused", member=member.instance_id, reason="connect-failed", retryable=True)

    dispatcher = stub_dispatcher(StubOwners("b", "c"), forward)
    try:
        with pytest.raises(DispatchTimeout):
            dispatcher.submit("x", timeout=0.05)
        gevent.sleep(0.3)
    finally:
        dispatcher.stop()
    assert calls == ["b"]  # c was never asked: nobody waits for the answer any more
    assert dispatcher.stats.cancelled == 1


def test_caller_timed_out_from_outside_cancels_its_queued_request_and_keeps_its_own_timeout():
    gate = Gate()
    dispatcher = stub_dispatcher(StubOwners(None), None, handler=gate.handler, workers=1)
    outer = gevent.Timeout(0.05)
    try:
        dispatcher.submit_async(None, "block")
        gevent.sleep(0.01)
        with pytest.raises(gevent.Timeout) as caught, outer:
            dispatcher.submit(None, "late")
        gate.release.set()
        gevent.sleep(0.05)
    finally:
        dispatcher.stop()
    assert caught.value is outer  # the caller's own timeout, not turned into a DispatchTimeout
    assert gate.runs == ["block"]
