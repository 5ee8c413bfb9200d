"""Request dispatcher throughput and latency: 3 node processes on a dev agent.

Three ``voltha-gevent run`` processes (demo dispatcher on, echo handler) share 30 items.
A gevent client in this process sends ``POST /request`` to n1 with a fixed number of
requests in flight, for a fixed time per phase:

* **local**: items n1 owns - queue, worker, handler on n1;
* **forwarded**: items n2/n3 own - n1 forwards each over HTTP to the owner's ``/dispatch``.

It reports requests per second as the client saw them and p50/p99 of the client-side
latency (queueing on n1 included). Everything shares the machine's cores (agent, 3 nodes,
client), so the figures are a floor, not a capacity plan. Nothing fails on a number.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import _common  # first: monkey-patches before requests is imported
from voltha_gevent.testing.agents import DevAgent
from voltha_gevent.testing.processes import NodeProcess, wait_for

PREFIX = "bench/dispatch"
NAMES = ("n1", "n2", "n3")
ITEMS = [f"dg{i:03d}" for i in range(30)]
FULL_SECONDS, QUICK_SECONDS = 15.0, 4.0
CONCURRENCY = 16
#: Client-side timeout of one request; a request past it counts as an error.
REQUEST_TIMEOUT = 30.0


def _owners(nodes: dict[str, NodeProcess]) -> dict[str, str] | None:
    owned: dict[str, str] = {}
    for name, node in nodes.items():
        status = node.status()
        if not status or not status["healthy"] or status["pending"] or status["revoking"]:
            return None
        owned.update({item: name for item in status["owned"]})
    return owned if set(owned) == set(ITEMS) else None


def _load(url: str, items: list[str], seconds: float) -> dict[str, Any]:
    """``CONCURRENCY`` greenlets posting round-robin over ``items`` for ``seconds``."""
    import gevent
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=CONCURRENCY))
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    def client(worker: int) -> None:
        nonlocal errors
        number = worker
        while time.monotonic() < deadline:
            body = json.dumps({"item": items[number % len(items)], "payload": {"n": number}})
            started = time.perf_counter()
            try:
                answer = session.post(url, data=body, timeout=REQUEST_TIMEOUT)
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1
            number += CONCURRENCY

    started = time.monotonic()
    gevent.joinall([gevent.spawn(client, w) for w in range(CONCURRENCY)], timeout=seconds + REQUEST_TIMEOUT)
    elapsed = time.monotonic() - started
    session.close()
    latencies.sort()
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(p * count))] * 1000 if count else float("nan")

    return {"requests": count, "errors": errors, "rps": count / elapsed if elapsed else 0.0,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def run(quick: bool = False) -> dict[str, Any]:
    _common.quiet_logs()
    seconds = QUICK_SECONDS if quick else FULL_SECONDS
    with tempfile.TemporaryDirectory() as tmp, DevAgent() as agent:
        api = _common.api_for(agent.http_addr)
        for item in ITEMS:
            api.put(f"{PREFIX}/workload/{item}", "v")
        nodes = {n: NodeProcess(n, agent.http_addr, Path(tmp), prefix=PREFIX).start() for n in NAMES}
        try:
            if not wait_for(lambda: _owners(nodes) is not None, 40):
                raise RuntimeError("nodes did not converge:\n" + nodes["n1"].log_tail(20))
            owners = _owners(nodes) or {}
            url = f"http://127.0.0.1:{nodes['n1'].rest_port}/request"
            phases = {
                "local": [i for i, o in owners.items() if o == "n1"],
                "forwarded": [i for i, o in owners.items() if o != "n1"],
            }
            results = {phase: _load(url, items, seconds) for phase, items in phases.items() if items}
        finally:
            for node in nodes.values():
                node.stop()
    rows = [(phase, r["requests"], r["errors"], r["rps"], r["p50_ms"], r["p99_ms"])
            for phase, r in results.items()]
    _common.emit(f"3 node processes, client -> n1, {CONCURRENCY} in flight, {seconds:.0f} s per phase\n")
    _common.emit(_common.table(("phase", "requests", "errors", "req/s", "p50 ms", "p99 ms"), rows))
    return {"dispatch": {"concurrency": CONCURRENCY, "seconds": seconds, **results}}


if __name__ == "__main__":
    import sys

    run("--quick" in sys.argv)
