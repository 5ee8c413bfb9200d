"""Exec mode and live values on the mocked Consul: a changed value restarts the child with the
new value on stdin, or (``--exec-reload-signal``) signals it to re-read its value file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
import structlog

from voltha_gevent.exec_work import ExecWork, parse_reload_signal
from voltha_gevent.metrics import render
from voltha_gevent.node import Node
from voltha_gevent.testing.nodes import FakeCluster

#: Prints its pid and stdin, then sleeps (SIGTERM ends it).
STDIN_CHILD = ("import os, sys, time; print(os.getpid(), 'stdin', repr(sys.stdin.read()), flush=True); "
               "time.sleep(60)")
#: Prints its pid and stdin; on SIGHUP prints what its value file holds now.
HUP_CHILD = """
import os, signal, sys, time
hups = []
signal.signal(signal.SIGHUP, lambda *_: hups.append(1))
print(os.getpid(), 'stdin', repr(sys.stdin.read()), flush=True)
while True:
    time.sleep(0.02)
    if hups:
        hups.clear()
        print(os.getpid(), 'reloaded', repr(open(os.environ['VOLTHA_ITEM_VALUE_FILE']).read()), flush=True)
"""


@pytest.fixture
def cluster():
    with FakeCluster() as made:
        yield made


def _exec_node(cluster: FakeCluster, code: str, **work: Any) -> tuple[Node, ExecWork]:
    config = cluster.settings_config("n1")
    handler = ExecWork([sys.executable, "-c", code], "n1", stop_timeout=config.stop_timeout, **work)
    node = Node(config, handler=handler, client_factory=cluster.client_factory("n1"))
    handler.attach(node.lease)
    node.add_revoke_barrier(handler.barrier)
    cluster.nodes["n1"] = node
    node.start()
    return node, handler


def _lines(logs: list[dict[str, Any]]) -> list[list[str]]:
    """The children's stdout lines, split into ``[pid, what, value]``."""
    return [e["line"].split(" ", 2) for e in logs if e["event"] == "exec-output" and e["stream"] == "stdout"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_changed_value_restarts_the_child_with_the_new_value_on_stdin(cluster):
    cluster.add_items("dg1", value="v1")
    with structlog.testing.capture_logs() as logs:
        node, work = _exec_node(cluster, STDIN_CHILD)
        try:
            assert cluster.wait_until(lambda: len(_lines(logs)) == 1, timeout=15)
            token = node.ownership("dg1").token
            cluster.add_items("dg1", value="v2")  # an overwrite, as `workload set` does
            assert cluster.wait_until(lambda: len(_lines(logs)) == 2, timeout=15), _lines(logs)
            (old_pid, _, first), (new_pid, _, second) = _lines(logs)
            assert (first, second) == ("'v1'", "'v2'")
            assert old_pid != new_pid and not _alive(int(old_pid))
            assert node.ownership("dg1").token == token  # same tenure: not revoked and taken again
            stats = work.exec_stats
            assert (stats.started, stats.value_restarts, stats.exited, stats.restarts) == (2, 1, 0, 0)
            assert "voltha_exec_value_restarts_total 1.0" in render(node.metrics_view).decode()
        finally:
            cluster.stop("n1")
            work.close()
    assert any(e["event"] == "exec-child-replaced" for e in logs)


def test_with_a_reload_signal_the_child_is_signalled_and_reads_the_new_value(cluster):
    cluster.add_items("dg1", value="v1")
    with structlog.testing.capture_logs() as logs:
        node, work = _exec_node(cluster, HUP_CHILD, reload_signal=signal.SIGHUP)
        try:
            assert cluster.wait_until(lambda: len(_lines(logs)) == 1, timeout=15)
            cluster.add_items("dg1", value="v2")
            assert cluster.wait_until(lambda: len(_lines(logs)) == 2, timeout=15), _lines(logs)
            (pid, _, first), reloaded = _lines(logs)
            assert first == "'v1'" and reloaded == [pid, "reloaded", "'v2'"]  # the same process
            stats = work.exec_stats
            assert (stats.started, stats.value_signals, stats.value_restarts) == (1, 1, 0)
            assert "voltha_exec_value_signals_total 1.0" in render(node.metrics_view).decode()
        finally:
            cluster.stop("n1")
            work.close()


def test_parse_reload_signal():
    assert parse_reload_signal("HUP") is signal.SIGHUP
    assert parse_reload_signal("sigusr1") is signal.SIGUSR1
    for bad in ("FOO", "1", "", "KILL", "SIGSTOP"):
        with pytest.raises(ValueError, match="--exec-reload-signal"):
            parse_reload_signal(bad)


#: Runs cli._work_handler once per argv in a fresh interpreter (importing the CLI monkey-patches
#: the process, which the other tests of this process must not get).
_HANDLERS = """
import json, sys
from voltha_gevent.cli import _work_handler, build_parser
from voltha_gevent.config import Config
from voltha_gevent.errors import ConfigError
results = []
for argv in json.loads(sys.argv[1]):
    try:
        work = _work_handler(Config(), build_parser().parse_args(argv))
    except ConfigError as exc:
        results.append(str(exc))
    else:
        results.append(work.reload_signal.name)
        work.close()
sys.stdout.write(json.dumps(results))
"""


def test_cli_checks_the_reload_signal_and_passes_it_on():
    bad = "invalid setting exec: --exec-reload-signal"
    cases = {
        ("run", "--exec", "sleep 60", "--exec-reload-signal", "hup"): "SIGHUP",
        ("run", "--exec-reload-signal", "HUP"): "invalid setting exec: only exec mode has children",
        ("run", "--exec", "sleep 60", "--exec-reload-signal", "NOPE"): bad,
        ("run", "--exec", "sleep 60", "--exec-reload-signal", "KILL"): bad,
    }
    result = subprocess.run([sys.executable, "-c", _HANDLERS, json.dumps(list(cases))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for (argv, wanted), got in zip(cases.items(), json.loads(result.stdout), strict=True):
        assert got.startswith(wanted), (argv, got)
