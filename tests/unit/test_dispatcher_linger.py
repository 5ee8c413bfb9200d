"""A node that left keeps answering "not owner" until its peers stop forwarding to it
(``linger``), so a peer with a stale view re-sends to the new owner instead of meeting a
reset connection that it would have to report as "may have been served"."""

from __future__ import annotations

import json
import time

import gevent
from dispatcher_stubs import StubNode, StubOwners, environ, stub_dispatcher

from voltha_gevent.northbound import FORWARDED_HEADER


def forwarded(item: str = "x") -> dict:
    return environ({"item": item}, headers={FORWARDED_HEADER: "b"})


def test_linger_answers_not_owner_until_peers_stop_forwarding():
    dispatcher = stub_dispatcher(StubOwners(None), None, StubNode(owned=()))  # the node has left
    answers: list[int] = []

    def stale_peer() -> None:  # keeps forwarding for 0.3 s, every 50 ms
        for _ in range(6):
            answers.append(dispatcher.dispatch_route(forwarded())[0])
            gevent.sleep(0.05)

    try:
        peer = gevent.spawn(stale_peer)
        started = time.monotonic()
        assert dispatcher.linger(quiet=0.2, timeout=3.0) is True
        waited = time.monotonic() - started
        peer.join(1)
    finally:
        dispatcher.stop()
    assert answers == [409] * 6
    assert 0.45 < waited < 1.0  # the last request (~0.25 s) + 0.2 s of quiet


def test_linger_waits_at_least_quiet_and_at_most_timeout():
    dispatcher = stub_dispatcher(StubOwners(None), None, StubNode(owned=()))
    try:
        started = time.monotonic()
        assert dispatcher.linger(quiet=0.1, timeout=1.0) is True
        assert 0.1 <= time.monotonic() - started < 0.3

        def busy_peer() -> None:
            for _ in range(100):
                dispatcher.dispatch_route(forwarded())
                gevent.sleep(0.02)

        busy = gevent.spawn(busy_peer)
        started = time.monotonic()
        assert dispatcher.linger(quiet=0.2, timeout=0.3) is False
        assert 0.3 <= time.monotonic() - started < 0.5
        busy.kill()
    finally:
        dispatcher.stop()


def test_not_owner_answer_during_linger_says_nothing_ran():
    dispatcher = stub_dispatcher(StubOwners(None), None, StubNode(owned=()))
    try:
        status, _, body = dispatcher.dispatch_route(forwarded())
    finally:
        dispatcher.stop()
    assert status == 409
    assert json.loads(body) | {"error": ""} == {"error": "", "reason": "not-owner", "maybe_served": False,
                                                "retryable": True}
