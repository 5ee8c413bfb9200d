"""Overload slows the cluster down, never tears it apart (issue 14).

Three node processes share 5,000 items on a real dev agent while two busy-loop processes
keep both cores of the machine full: the cold start must still converge (later than on an
idle machine), with no session lost on any node - liveness signals have their own
connections and bulk work yields to them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.testing.auditor import owners_in_consul
from voltha_gevent.testing.processes import NodeProcess, wait_for
from voltha_gevent.txn import TxnOp, chunked

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEMS = 5_000
#: The budget of the default timings, not the tests' short ones: a lease of 2 s.
SETTINGS = {"VOLTHA_CHECK_TTL": "3", "VOLTHA_LOCK_DELAY": "4", "VOLTHA_STOP_TIMEOUT": "4",
            "VOLTHA_SOAK": "1", "VOLTHA_WORKER_SOAK": "0.2"}
HOG_SECONDS = 60
CONVERGE_LIMIT = 90.0


def session_losses(node: NodeProcess) -> int:
    code, body = node.get("/metrics", timeout=5.0)
    assert code == 200, body
    match = re.search(r"^voltha_session_losses_total (\S+)$", body, re.MULTILINE)
    assert match, "no session-loss counter in /metrics"
    return int(float(match.group(1)))


def test_a_cold_start_under_full_cpu_load_converges_without_losing_a_session(dev_agent, tmp_path: Path):
    prefix = f"overload/{uuid.uuid4().hex[:8]}"
    api = ConsulAPI(make_client(ClientSettings(host=dev_agent.host, port=dev_agent.port)))
    items = {f"dg{i:05d}" for i in range(ITEMS)}
    for batch in chunked([TxnOp.set(f"{prefix}/workload/{i}", "") for i in sorted(items)], []):
        api.txn(batch)
    hogs = [subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {HOG_SECONDS}\n"
                              "while time.time() < end: pass"]) for _ in range(2)]
    nodes = [NodeProcess(f"o{i}", dev_agent.http_addr, tmp_path, prefix=prefix, settings=SETTINGS)
             for i in range(3)]
    try:
        started = time.monotonic()
        for node in nodes:
            node.start()
        converged = wait_for(lambda: set(owners_in_consul(api, f"{prefix}/owners/")) == items
                             and all((s := n.status()) and len(s["owned"]) > 0 for n in nodes),
                             CONVERGE_LIMIT, step=1.0)
        took = time.monotonic() - started
        assert converged, f"not converged in {CONVERGE_LIMIT}s: {nodes[0].log_tail(20)}"
        assert sum(h.poll() is None for h in hogs) == 2, "the load ended before the cluster converged"
        assert [session_losses(n) for n in nodes] == [0, 0, 0], [n.log_tail(10) for n in nodes]
        sys.stdout.write(f"\n{ITEMS} items x 3 nodes converged in {took:.1f}s with both cores busy\n")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)
        for node in nodes:
            node.stop()
