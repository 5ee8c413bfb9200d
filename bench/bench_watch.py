"""Watch cost at scale: one workload change seen through a blocking query, 100,000 items.

The leader watches ``<prefix>/workload/`` with a keys-only listing and ``separator=/``
(:class:`~voltha_gevent.watch.Watch`, ``WatchKind.KEYS``). With 100,000 items (quick:
10,000) already in Consul, each run arms a blocking query at the current index, adds one
key, and measures from the PUT until the blocking query's answer is fully read: latency
and response bytes. The same for a recurse (values) listing, the naive alternative, and
the Python cost of turning each answer into what the leader uses (``ConsulAPI.keys`` /
``ConsulAPI.list`` on the non-blocking listing). Medians over several runs; nothing fails
on a number.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
import gevent.pool

from bench import _common  # first: monkey-patches before requests is imported
from voltha_gevent.testing.agents import DevAgent
from voltha_gevent.txn import TxnOp, chunked

PREFIX = "bench/watch"
FULL_ITEMS, QUICK_ITEMS = 100_000, 10_000
FULL_RUNS, QUICK_RUNS = 7, 3
SEED_CONCURRENCY = 8
WAIT = "30s"
MODES = {"keys + separator": {"keys": "", "separator": "/"}, "recurse (values)": {"recurse": ""}}


def seed(api: Any, items: int) -> None:
    ops = [TxnOp.set(f"{PREFIX}/workload/device_group_{i:06d}", "") for i in range(items)]
    pool = gevent.pool.Pool(SEED_CONCURRENCY)
    gevent.joinall([pool.spawn(api.txn, batch) for batch in chunked(ops, [])], raise_error=True)


def one_change(base: str, http: Any, params: dict, n: int) -> tuple[float, int]:
    """Arm a blocking query, add one key; (seconds from PUT to full answer, answer bytes)."""
    url = f"{base}/v1/kv/{PREFIX}/workload/"
    first = http.get(url, params=params, timeout=60)
    index = first.headers["X-Consul-Index"]
    got: dict[str, Any] = {}

    def block() -> None:
        answer = http.get(url, params={**params, "index": index, "wait": WAIT}, timeout=60)
        got["t"], got["bytes"] = time.perf_counter(), len(answer.content)

    waiter = gevent.spawn(block)
    gevent.sleep(0.05)  # let the query arrive and block
    start = time.perf_counter()
    http.put(f"{base}/v1/kv/{PREFIX}/workload/added_{n:06d}", data=b"", timeout=10)
    waiter.join(timeout=60)
    return got["t"] - start, got["bytes"]


def parse_cost(api: Any, runs: int) -> dict[str, float]:
    """Seconds per non-blocking listing as the leader's API returns it (HTTP + parse)."""
    out = {}
    for name, call in (("keys + separator", lambda: api.keys(f"{PREFIX}/workload/", separator="/")),
                       ("recurse (values)", lambda: api.list(f"{PREFIX}/workload/"))):
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        out[name] = _common.median(samples)
    return out


def run(quick: bool) -> dict:
    _common.quiet_logs()
    items, runs = (QUICK_ITEMS, QUICK_RUNS) if quick else (FULL_ITEMS, FULL_RUNS)
    results: dict[str, Any] = {"items": items, "runs": runs}
    with DevAgent() as agent:
        api = _common.api_for(agent.http_addr, timeout=120.0)
        started = time.perf_counter()
        seed(api, items)
        results["seed_s"] = time.perf_counter() - started
        base = f"http://{agent.http_addr}"
        n = 0
        import requests  # after _common's monkey-patching

        with requests.Session() as http:
            for mode, params in MODES.items():
                lat, size = [], []
                for _ in range(runs):
                    n += 1
                    seconds, nbytes = one_change(base, http, params, n)
                    lat.append(seconds)
                    size.append(nbytes)
                results[mode] = {"latency_s": _common.median(lat), "bytes": int(_common.median(size))}
        for mode, seconds in parse_cost(api, runs).items():
            results[mode]["api_call_s"] = seconds
    keys, rec = results["keys + separator"], results["recurse (values)"]
    rows = [(mode, r["latency_s"] * 1000, r["bytes"], r["bytes"] / items, r["api_call_s"] * 1000)
            for mode, r in ((m, results[m]) for m in MODES)]
    rows.append(("ratio recurse / keys", rec["latency_s"] / keys["latency_s"], rec["bytes"] / keys["bytes"],
                 "", rec["api_call_s"] / keys["api_call_s"]))
    _common.emit(_common.table(("listing", "PUT -> notified (ms)", "answer bytes", "bytes/item",
                                "ConsulAPI call + parse (ms)"), rows))
    _common.emit(f"({items:,} items seeded in {results['seed_s']:.1f} s; median of {runs} changes)\n")
    return {"watch": results}


if __name__ == "__main__":
    run("--quick" in __import__("sys").argv)
