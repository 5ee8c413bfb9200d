"""Exec mode in a node on the mocked Consul: environment, output, restarts, release after reap."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gevent
import pytest
import structlog

from voltha_gevent.exec_work import ExecWork, LeasePublisher, parse_command
from voltha_gevent.lease import Lease, now
from voltha_gevent.metrics import render
from voltha_gevent.node import Node
from voltha_gevent.testing import ledger_child
from voltha_gevent.testing.nodes import FakeCluster

PRINT_ENV = (
    "import os, sys, time; e = os.environ; "
    "print(e['VOLTHA_ITEM'], e['VOLTHA_FENCE_TOKEN'], e['VOLTHA_INSTANCE_ID'], sys.argv[1], "
    "repr(sys.stdin.read()), repr(open(e['VOLTHA_ITEM_VALUE_FILE']).read()), "
    "'VOLTHA_CONSUL_TOKEN' in e, flush=True); time.sleep(60)"
)


def _exec_node(cluster: FakeCluster, name: str, command: list[str], **settings) -> tuple[Node, ExecWork]:
    config = cluster.settings_config(name, **settings)
    work = ExecWork(command, name, stop_timeout=config.stop_timeout,
                    environ={**os.environ, "VOLTHA_CONSUL_TOKEN": "secret"})
    node = Node(config, handler=work, client_factory=cluster.client_factory(name))
    work.attach(node.lease)
    node.add_revoke_barrier(work.barrier)
    cluster.nodes[name] = node
    node.start()
    return node, work


@pytest.fixture
def cluster():
    with FakeCluster() as made:
        yield made


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_child_gets_item_token_value_and_its_output_is_logged(cluster):
    cluster.add_items("dg1", value="hello")
    with structlog.testing.capture_logs() as logs:
        node, work = _exec_node(cluster, "n1", [sys.executable, "-c", PRINT_ENV, "arg-{item}"])
        try:
            assert cluster.wait_until(lambda: any(e["event"] == "exec-output" for e in logs), timeout=15)
            token = node.ownership("dg1").token
        finally:
            cluster.stop("n1")
            work.close()
    line = next(e for e in logs if e["event"] == "exec-output")
    assert line["item"] == "dg1" and line["stream"] == "stdout"
    assert line["line"] == f"dg1 {token} n1 arg-dg1 'hello' 'hello' False"
    assert work.exec_stats.started == 1 and work.exec_stats.restarts == 0


def test_child_that_exits_is_restarted_with_backoff_and_counted(cluster):
    cluster.add_items("dg1")
    node, work = _exec_node(cluster, "n1", [sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        began = now()
        # restarts counts before the start, started after the guard's Popen: wait for both
        assert cluster.wait_until(lambda: work.exec_stats.restarts >= 2 and work.exec_stats.started >= 3,
                                  timeout=15)
        assert now() - began >= 1.0  # two pauses of at least MIN_RESTART_DELAY
        assert work.exec_stats.exited >= 2 and work.exec_stats.started >= 3
        metrics = render(node.metrics_view).decode()
        assert f"voltha_exec_restarts_total {float(work.exec_stats.restarts)}" in metrics
    finally:
        cluster.stop("n1")
        work.close()


def test_owner_lock_is_released_only_after_the_group_is_reaped(cluster, tmp_path: Path):
    """A child that ignores SIGTERM: revocation kills it after the grace; the lock waits for that."""
    ledger = tmp_path / "ledger"
    cluster.add_items("dg1")
    command = [sys.executable, ledger_child.__file__, str(ledger), "--ignore-term"]
    node, work = _exec_node(cluster, "n1", command)
    client = cluster.fake.client()
    try:
        assert cluster.wait_until(lambda: ledger.exists() and " start " in ledger.read_text(), timeout=15)
        pid = int(ledger.read_text().split()[2])
        cluster.remove_items("dg1")
        released_while_alive = []

        def released() -> bool:
            _, entry = client.kv.get("service/voltha/owners/dg1")
            free = entry is None or not entry.get("Session")
            if free and _pid_alive(pid):
                released_while_alive.append(now())
            return free

        assert cluster.wait_until(released, timeout=15, step=0.01)
        assert not released_while_alive
        assert not _pid_alive(pid)
        assert not node.stuck()
    finally:
        cluster.stop("n1")
        work.close()


def test_publisher_sends_forward_deadlines_of_its_own_generation_only():
    lease = Lease()
    lease.live, lease.generation, lease.deadline = True, 1, now() + 5
    publisher = LeasePublisher(lease)
    mine_r, mine_w = os.pipe()
    other_r, other_w = os.pipe()
    publisher._pipes = {mine_w: (1, 0.0), other_w: (2, 0.0)}  # no thread: one round by hand
    publisher.publish()
    publisher.publish()  # nothing new: nothing sent
    lease.deadline += 1
    publisher.publish()
    lease.live = False
    lease.deadline += 1
    publisher.publish()  # an ended lease sends nothing
    os.set_blocking(mine_r, False)
    os.set_blocking(other_r, False)
    sent = os.read(mine_r, 4096).decode().split("\n")
    assert [float(line.split()[1]) for line in sent if line] == pytest.approx(
        [lease.deadline - 2, lease.deadline - 1])
    with pytest.raises(BlockingIOError):
        os.read(other_r, 4096)
    publisher.stop()
    for fd in (mine_r, other_r):
        os.close(fd)


def test_parse_command():
    assert parse_command("prog --name '{item} x'") == ["prog", "--name", "{item} x"]
    with pytest.raises(ValueError):
        parse_command("  ")


def test_removed_item_stops_its_child_and_starts_no_other(cluster):
    """Revocation ends the tenure: the stopped child is not taken for a crash and restarted."""
    cluster.add_items("dg1")
    node, work = _exec_node(cluster, "n1", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert cluster.wait_until(lambda: work.exec_stats.started == 1, timeout=15)
        cluster.remove_items("dg1")
        assert cluster.wait_until(lambda: not work.children and not node.owned(), timeout=15)
        gevent.sleep(0.2)
        assert work.exec_stats.started == 1
    finally:
        cluster.stop("n1")
        work.close()
