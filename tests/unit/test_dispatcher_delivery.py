"""At most once over real HTTP: a forward is re-sent to the new owner only when non-delivery
is proven (connect refused, a 409 "not owner" answer); an owner that read the request and
then died, timed out or failed is never asked again, and the caller is told it may have run.

Peers are scripted TCP servers in threads (nothing is monkey-patched in the unit tests, so
the dispatcher's ``requests`` call blocks the loop while the thread answers). Each peer
records the request ids it received, i.e. the requests it may have served.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from dispatcher_stubs import StubNode, StubOwners, environ, stub_dispatcher

from voltha_gevent.northbound import ForwardFailed

FORWARD_TIMEOUT = 0.5


class ScriptedPeer:
    """One HTTP peer on 127.0.0.1: reads each request whole, records its id, then ``behaviour``.

    ``answer`` 200 with a result; ``close`` / ``reset`` the connection without answering (the
    peer died after reading); ``hang`` never answers; ``not-owner`` 409; ``error`` 500
    handler-failed; ``busy`` 503.
    """

    def __init__(self, name: str, behaviour: str) -> None:
        self.name, self.behaviour = name, behaviour
        self.received: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self._one(conn)

    def _one(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += conn.recv(65536)
        self.received.append(json.loads(body)["payload"]["id"])
        if self.behaviour == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if self.behaviour == "close":
            return
        if self.behaviour == "hang":
            self.release.wait(10)
            return
        status, answer = {
            "answer": (200, {"result": {"served_by": self.name}}),
            "not-owner": (409, {"error": "not mine", "reason": "not-owner", "maybe_served": False}),
            "error": (500, {"error": "boom", "reason": "handler-failed", "maybe_served": True}),
            "busy": (503, {"error": "full", "reason": "busy", "maybe_served": False}),
        }[self.behaviour]
        raw = json.dumps(answer).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
        conn.sendall(f"{head}Connection: close\r\n\r\n".encode() + raw)

    def close(self) -> None:
        self.release.set()
        self.listener.close()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.fixture
def peers() -> Iterator[dict[str, ScriptedPeer]]:
    made: dict[str, ScriptedPeer] = {}
    yield made
    for peer in made.values():
        peer.close()


def http_dispatcher(peers: dict[str, ScriptedPeer], old: str, new: str = "answer"):
    """A dispatcher whose view says ``old`` owns x, then ``new``; real HTTP forwarding."""
    ports = {}
    for name, behaviour in (("old", old), ("new", new)):
        if behaviour == "refused":
            ports[name] = refused_port()
        else:
            peers[name] = ScriptedPeer(name, behaviour)
            ports[name] = peers[name].port
    node = StubNode(members=("a", "old", "new"), ports=ports)
    return stub_dispatcher(StubOwners("old", "new"), None, node, forward_timeout=FORWARD_TIMEOUT)


def served_ids(peers: dict[str, ScriptedPeer]) -> list[tuple[str, str]]:
    return sorted((rid, name) for name, peer in peers.items() for rid in peer.received)


@pytest.mark.parametrize("death", ["close", "reset"])
def test_owner_that_died_after_reading_the_request_is_not_retried_and_it_runs_at_most_once(peers, death):
    dispatcher = http_dispatcher(peers, old=death)
    try:
        with pytest.raises(ForwardFailed) as caught:
            dispatcher.submit("x", {"id": "r1"}, timeout=5)
    finally:
        dispatcher.stop()
    assert served_ids(peers) == [("r1", "old")]  # the new owner was never asked
    assert (caught.value.reason, caught.value.retryable, caught.value.maybe_served) == (
        "connection-lost", False, True)
    assert dispatcher.stats.retries == 0


def test_read_timeout_after_sending_is_not_retried_and_it_runs_at_most_once(peers):
    dispatcher = http_dispatcher(peers, old="hang")
    try:
        with pytest.raises(ForwardFailed) as caught:
            dispatcher.submit("x", {"id": "r1"}, timeout=5)
    finally:
        dispatcher.stop()
    assert served_ids(peers) == [("r1", "old")]
    assert (caught.value.reason, caught.value.maybe_served) == ("timeout", True)


def test_connect_refused_is_retried_on_the_new_owner(peers):
    dispatcher = http_dispatcher(peers, old="refused")
    try:
        answer = dispatcher.submit("x", {"id": "r1"}, timeout=5)
    finally:
        dispatcher.stop()
    assert answer == {"served_by": "new"}
    assert served_ids(peers) == [("r1", "new")]
    assert dispatcher.stats.retries == 1


def test_not_owner_answer_is_retried_on_the_new_owner(peers):
    dispatcher = http_dispatcher(peers, old="not-owner")
    try:
        answer = dispatcher.submit("x", {"id": "r1"}, timeout=5)
    finally:
        dispatcher.stop()
    assert answer == {"served_by": "new"}
    assert served_ids(peers) == [("r1", "new"), ("r1", "old")]  # old received it and refused it
    assert dispatcher.stats.retries == 1


@pytest.mark.parametrize(("behaviour", "maybe_served"), [("error", True), ("busy", False)])
def test_peer_error_answer_is_not_retried(peers, behaviour, maybe_served):
    dispatcher = http_dispatcher(peers, old=behaviour)
    try:
        with pytest.raises(ForwardFailed) as caught:
            dispatcher.submit("x", {"id": "r1"}, timeout=5)
    finally:
        dispatcher.stop()
    assert served_ids(peers) == [("r1", "old")]
    assert (caught.value.retryable, caught.value.maybe_served) == (False, maybe_served)


@pytest.mark.parametrize(("old", "status", "reason"), [
    ("hang", 504, "timeout"), ("close", 502, "connection-lost"), ("error", 502, "handler-failed")])
def test_client_route_tells_the_caller_the_request_may_have_run(peers, old, status, reason):
    dispatcher = http_dispatcher(peers, old=old)
    try:
        code, _, body = dispatcher.client_route(environ({"item": "x", "payload": {"id": "r1"}}))
    finally:
        dispatcher.stop()
    answer = json.loads(body)
    assert (code, answer["reason"], answer["maybe_served"]) == (status, reason, True)
    assert served_ids(peers) == [("r1", "old")]
