"""Idle cost: Consul requests per second and CPU per idle node, 3 node processes on a dev agent.

Three ``voltha-gevent run`` processes share 100 items; once every item is owned and the
cluster is quiet, the bench watches a window of 30 s (quick: 10 s) and reports, per node:

* CPU: utime + stime from ``/proc/<pid>/stat`` over the window, as % of one core;
* Consul requests: the dev agent logs every HTTP request it finishes (``agent.http:
  Request finished: method=... url=...``); the lines logged during the window are counted
  by kind - session renewals, health-check passes, blocking-query returns (watch re-arms)
  and anything else, which the target says should be nothing.

Nodes run with the default session TTL (10 s), check TTL (3 s) and watch wait (60 s), so
the expected idle traffic is one renewal per TTL/3 and one check pass per check TTL/3 per
node, plus a watch re-arm per watch every ~60 s. Nothing fails on a number.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import _common  # first: monkey-patches before requests is imported
from voltha_gevent.testing.agents import DevAgent
from voltha_gevent.testing.auditor import owners_in_consul
from voltha_gevent.testing.processes import NodeProcess, wait_for
from voltha_gevent.txn import TxnOp, chunked

PREFIX = "bench/idle"
NAMES = ("n1", "n2", "n3")
ITEMS = 100
FULL_WINDOW, QUICK_WINDOW = 30.0, 10.0
#: Quiet time after convergence before the window opens (soaks, last handovers).
SETTLE = 3.0
SETTINGS = {"VOLTHA_SESSION_TTL": "10", "VOLTHA_CHECK_TTL": "3", "VOLTHA_WATCH_WAIT": "60"}
KINDS = ("session renew", "check pass", "watch re-arm", "other")
_REQUEST = re.compile(r"agent\.http: Request finished: method=(\S+) url=(\S+)")


def kind_of(method: str, url: str) -> str:
    if url.startswith("/v1/session/renew/"):
        return "session renew"
    if url.startswith("/v1/agent/check/pass/"):
        return "check pass"
    if method == "GET" and "index=" in url:
        return "watch re-arm"
    return "other"


def count_requests(log_text: str) -> tuple[Counter, Counter]:
    """Requests by kind, and the "other" ones by method and path (for the curious)."""
    kinds: Counter = Counter()
    others: Counter = Counter()
    for method, url in _REQUEST.findall(log_text):
        kind = kind_of(method, url)
        kinds[kind] += 1
        if kind == "other":
            others[f"{method} {url.split('?', 1)[0]}"] += 1
    return kinds, others


def run(quick: bool) -> dict:
    _common.quiet_logs()
    window = QUICK_WINDOW if quick else FULL_WINDOW
    items = {f"device_group_{i:05d}" for i in range(ITEMS)}
    with DevAgent() as agent, tempfile.TemporaryDirectory(prefix="voltha-bench-idle-") as tmp:
        api = _common.api_for(agent.http_addr)
        for batch in chunked([TxnOp.set(f"{PREFIX}/workload/{i}", "") for i in sorted(items)], []):
            api.txn(batch)
        nodes = [NodeProcess(n, agent.http_addr, Path(tmp), prefix=PREFIX, settings=SETTINGS) for n in NAMES]
        try:
            for node in nodes:
                node.start()
            settled = wait_for(lambda: set(owners_in_consul(api, f"{PREFIX}/owners/")) == items, 60.0, 0.2)
            time.sleep(SETTLE)
            offset = agent.log_path.stat().st_size
            cpu0 = {n.instance_id: _common.cpu_seconds(n.pid) for n in nodes if n.pid}
            start = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - start
            cpu1 = {n.instance_id: _common.cpu_seconds(n.pid) for n in nodes if n.pid}
            with open(agent.log_path, errors="replace") as f:
                f.seek(offset)
                kinds, others = count_requests(f.read())
        finally:
            for node in nodes:
                node.stop()
    cpu = {n: 100.0 * (cpu1[n] - cpu0[n]) / elapsed for n in cpu0}
    per_node = {k: kinds[k] / elapsed / len(NAMES) for k in KINDS}
    rows = [(k, kinds[k], per_node[k]) for k in KINDS]
    rows.append(("total", sum(kinds.values()), sum(per_node.values())))
    _common.emit(_common.table(("requests in window", "count (3 nodes)", "per node per s"), rows))
    _common.emit(_common.table(("node", "CPU % of a core"), [(n, c) for n, c in sorted(cpu.items())]))
    _common.emit(f"({window:.0f} s window, {ITEMS} items, settled={settled}; session TTL 10 s, check TTL 3 s,"
                 f" watch wait 60 s; other requests: {dict(others) or 'none'})\n")
    return {"idle": {"window_s": elapsed, "requests": dict(kinds), "requests_per_node_per_s": per_node,
                     "other_requests": dict(others), "cpu_percent": cpu,
                     "cpu_percent_median": _common.median(list(cpu.values())), "settled": settled}}


if __name__ == "__main__":
    run("--quick" in __import__("sys").argv)
