"""Exec mode and live values on a real Consul: ``voltha-gevent workload set`` reaches a node
process's child, which is restarted with the new value on stdin (default) or signalled to
re-read its value file (``--exec-reload-signal HUP``)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from voltha_gevent.testing import ledger_child
from voltha_gevent.testing.agents import CONSUL_ENV_VARS
from voltha_gevent.testing.ledger_audit import LedgerIndex, audit_index
from voltha_gevent.testing.processes import NodeProcess, wait_for

pytestmark = pytest.mark.consul


def _cli(agent, prefix: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """One admin command against the agent, in an environment free of the caller's settings."""
    env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    return subprocess.run([sys.executable, "-m", "voltha_gevent", *argv, "--consul", agent.http_addr,
                           "--prefix", prefix], env=env, capture_output=True, text=True, timeout=30)


def _child_lines(node: NodeProcess) -> list[str]:
    """What the node's children wrote (the node logs each line as ``exec-output``)."""
    lines = []
    for raw in node.log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "exec-output":
            lines.append(event["line"])
    return lines


def _starts(ledger: Path) -> list[tuple[int, int]]:
    """``(pid, token)`` of each ``start`` in the ledger (``t instance pid run item event token``)."""
    rows = [line.split() for line in ledger.read_text().splitlines()]
    return [(int(row[2]), int(row[6])) for row in rows if row[5:6] == ["start"]]


@pytest.mark.parametrize("reload_signal", [None, "HUP"], ids=["restart", "signal"])
def test_workload_set_reaches_the_child(dev_agent, tmp_path: Path, reload_signal: str | None):
    prefix, ledger = f"it/{uuid.uuid4().hex[:8]}", tmp_path / "ledger"
    added = _cli(dev_agent, prefix, "workload", "add", "dg1", "--value", "v1")
    assert added.returncode == 0, added.stderr
    command = [sys.executable, ledger_child.__file__, str(ledger), "--reload-on-hup"]
    args = ["--exec", shlex.join(command)]
    if reload_signal:
        args += ["--exec-reload-signal", reload_signal]
    node = NodeProcess("n1", dev_agent.http_addr, tmp_path, prefix=prefix, args=args).start()
    try:
        assert wait_for(lambda: "started item=dg1 value='v1'" in _child_lines(node), 60), node.log_tail()
        done = _cli(dev_agent, prefix, "workload", "set", "dg1", "--value", "v2")
        assert done.returncode == 0, done.stderr
        if reload_signal is None:
            assert wait_for(lambda: "started item=dg1 value='v2'" in _child_lines(node), 20), node.log_tail()
            (first, token), (second, same_token) = _starts(ledger)  # one replacement, no crash restarts
            assert first != second
            # one tenure, one fencing token: the audit's token rule (a new pid is a new owner) does not apply
            assert token == same_token
            index = LedgerIndex()
            index.feed([ledger])
            audit = audit_index(index)
            assert audit.violations == [], [v.describe() for v in audit.violations]  # the old one ended first
            wanted = "voltha_exec_value_restarts_total 1.0"
        else:
            assert wait_for(lambda: "reloaded item=dg1 value='v2'" in _child_lines(node), 20), node.log_tail()
            assert len(_starts(ledger)) == 1  # the same process took the new value
            wanted = "voltha_exec_value_signals_total 1.0"
        _, metrics = node.get("/metrics")
        assert wanted in metrics
    finally:
        node.stop()
