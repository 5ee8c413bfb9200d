"""The request dispatcher over real HTTP: 3 node processes on a real dev agent.

A client sends requests for every item to one node (``POST /request``); each is served by
the item's owner (the demo handler answers with its instance id and reports ``served``
events with the request id), requests keep flowing while a node joins and another leaves
(each answered once, served exactly once), and a broadcast reaches every member.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.testing.auditor import read_reports
from voltha_gevent.testing.processes import NodeProcess, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEMS = [f"dg{i:03d}" for i in range(30)]
#: Bounds of the handover stream: at most this many requests, for at most this long.
STREAM_MAX_REQUESTS = 4000
STREAM_MAX_SECONDS = 40.0


def post(node: NodeProcess, body: dict[str, Any], timeout: float = 30.0) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{node.rest_port}/request"
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Bed:
    def __init__(self, agent, tmp: Path) -> None:
        self.agent, self.tmp = agent, tmp
        self.prefix = f"it/{uuid.uuid4().hex[:8]}"
        self.api = ConsulAPI(make_client(ClientSettings(host=agent.host, port=agent.port)))
        self.nodes: dict[str, NodeProcess] = {}
        self.gone: list[NodeProcess] = []

    def start(self, name: str) -> NodeProcess:
        self.nodes[name] = NodeProcess(name, self.agent.http_addr, self.tmp, prefix=self.prefix).start()
        return self.nodes[name]

    def owners(self) -> dict[str, str] | None:
        """item -> owner from every node's /status, when all items run exactly once."""
        owned: dict[str, str] = {}
        for name, node in self.nodes.items():
            status = node.status()
            if not status or not status["healthy"] or status["pending"] or status["revoking"]:
                return None
            for item in status["owned"]:
                if item in owned:
                    return None
                owned[item] = name
        return owned if set(owned) == set(ITEMS) else None

    def served(self) -> list[dict[str, Any]]:
        files = [n.report_file for n in [*self.nodes.values(), *self.gone]]
        return [e for e in read_reports(files) if e["event"] == "served"]

    def explain(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(15)}" for n, p in self.nodes.items())


@pytest.fixture
def bed(dev_agent, tmp_path):
    b = Bed(dev_agent, tmp_path)
    for item in ITEMS:
        b.api.put(f"{b.prefix}/workload/{item}", "v")
    try:
        yield b
    finally:
        for node in [*b.nodes.values(), *b.gone]:
            node.stop()
        b.api.delete(b.prefix, recurse=True)


def test_requests_reach_owners_survive_handover_and_broadcast_reaches_all(bed):
    for name in ("n1", "n2", "n3"):
        bed.start(name)
    assert wait_for(lambda: bed.owners() is not None, 30), bed.explain()
    entry = bed.nodes["n1"]

    # every item, asked of n1, is served by its owner
    owners = bed.owners()
    answers = {item: post(entry, {"item": item, "payload": {"id": f"first-{item}"}}) for item in ITEMS}
    assert {i: (code, body["result"]["served_by"]) for i, (code, body) in answers.items()} == {
        i: (200, owner) for i, owner in owners.items()}
    assert len({o for o in owners.values()}) == 3  # some local, most forwarded

    # a broadcast reaches every member
    code, body = post(entry, {"item": "*", "payload": {"id": "broadcast-1"}})
    assert code == 200 and body["result"]["errors"] == {}
    reached = {m: r["served_by"] for m, r in body["result"]["results"].items()}
    assert reached == {"n1": "n1", "n2": "n2", "n3": "n3"}

    # a steady stream while n4 joins and n3 leaves gracefully: nothing lost, nothing served twice
    stop = threading.Event()
    outcomes: list[tuple[str, int, Any]] = []
    counter = iter(range(STREAM_MAX_REQUESTS))

    def client(worker: int) -> None:
        deadline = time.monotonic() + STREAM_MAX_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            number = next(counter, None)
            if number is None:
                return
            rid = f"s{number}"
            code, answer = post(entry, {"item": ITEMS[number % len(ITEMS)], "payload": {"id": rid}})
            outcomes.append((rid, code, answer))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, w) for w in range(8)]
        try:
            time.sleep(1.0)
            bed.start("n4")
            assert wait_for(lambda: "n4" in (bed.owners() or {}).values(), 30), bed.explain()
            leaver = bed.nodes.pop("n3")
            bed.gone.append(leaver)
            assert leaver.stop() == 0
            assert wait_for(lambda: bed.owners() is not None, 30), bed.explain()
            time.sleep(1.0)
        finally:
            stop.set()
            for future in futures:
                future.result(timeout=60)

    failed = [(rid, code, answer) for rid, code, answer in outcomes if code != 200]
    assert failed == [], failed[:5]
    assert len(outcomes) > 100
    served = Counter(e.get("request") for e in bed.served() if str(e.get("request", "")).startswith("s"))
    assert set(served) == {rid for rid, _, _ in outcomes}
    assert [rid for rid, count in served.items() if count != 1] == []
    servers = Counter(answer["result"]["served_by"] for _, _, answer in outcomes)
    assert {"n1", "n2", "n4"} <= set(servers)
    _, metrics = entry.get("/metrics")
    assert "voltha_dispatch_forwarded_total" in metrics and "voltha_dispatch_queue_depth" in metrics
