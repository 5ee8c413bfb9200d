"""An embedded Node serves its own HTTP endpoint and advertises the port it really bound.

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

import json

import gevent.socket
import pytest

import voltha_gevent
from voltha_gevent.membership import MemberRecord
from voltha_gevent.node import Node
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster


def get(port: int, path: str) -> tuple[int, bytes]:
    """A GET over gevent's socket (this process is not monkey-patched: urllib would block the
    server greenlet it talks to)."""
    with gevent.socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def record(cluster: FakeCluster, name: str) -> MemberRecord:
    value, _ = cluster.fake.dump("service/voltha/members/")[f"service/voltha/members/{name}"]
    return MemberRecord.from_json(value)


def test_http_in_the_constructor_serves_from_start_and_advertises_the_bound_port() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        node = Node(cluster.settings_config("n1", rest_port=8880), http=("127.0.0.1", 0),
                    client_factory=cluster.client_factory("n1"))
        assert isinstance(node.http, voltha_gevent.HttpEndpoint)
        node.http.route("/hello", lambda environ: (200, "text/plain", b"hi\n"))  # mounted before start
        cluster.nodes["n1"] = node
        node.start()
        port = node.http.port
        assert port not in (0, 8880)
        assert cluster.wait_until(lambda: node.healthy, 5)
        assert record(cluster, "n1").rest_port == port  # the first record already says so
        assert cluster.wait_until(lambda: node.members()["n1"].rest_port == port, 5)
        status, body = get(port, "/health")
        assert status == 200 and json.loads(body)["healthy"] is True
        assert get(port, "/hello") == (200, b"hi\n")
        assert b"voltha_is_leader" in get(port, "/metrics")[1]
        cluster.stop("n1")
        with pytest.raises(OSError):
            get(port, "/health")  # stop() closed the endpoint it served


def test_serve_http_after_start_updates_the_member_record() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        node = Node(cluster.settings_config("n1", rest_port=0), client_factory=cluster.client_factory("n1"))
        cluster.nodes["n1"] = node
        node.start()
        assert cluster.wait_until(lambda: node.healthy, 5)
        assert node.http is None and record(cluster, "n1").rest_port == 0
        endpoint = node.serve_http("127.0.0.1", 0)
        assert endpoint is node.http and node.serve_http() is endpoint  # idempotent
        assert cluster.wait_until(lambda: record(cluster, "n1").rest_port == endpoint.port, 5)
        assert get(endpoint.port, "/status")[0] == 200
        node.stop(keep_http=True)  # a dispatcher would linger() here
        assert get(endpoint.port, "/health")[0] == 503
        endpoint.stop()
        cluster.nodes.pop("n1")
