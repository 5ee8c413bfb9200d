"""The exec guard on its own (no node, no Consul): it ends the child's group on the lease rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voltha_gevent import exec_guard
from voltha_gevent.testing import ledger_child
from voltha_gevent.testing.ledger_audit import LedgerIndex

CHILD = ledger_child.__file__


class GuardRun:
    """A guard subprocess with its lease pipe; the test plays the node."""

    def __init__(self, tmp_path: Path, deadline_in: float, grace: float, *child_args: str) -> None:
        self.ledger = tmp_path / "ledger"
        self.read_fd, self.write_fd = os.pipe()
        self.started = time.monotonic()
        argv = [sys.executable, "-I", "-S", exec_guard.__file__, "--lease-fd", str(self.read_fd),
                "--deadline", f"{self.started + deadline_in:.6f}", "--grace", str(grace), "--",
                sys.executable, CHILD, str(self.ledger), *child_args]
        env = {**os.environ, "VOLTHA_ITEM": "dg1", "VOLTHA_INSTANCE_ID": "n1", "VOLTHA_FENCE_TOKEN": "7"}
        self.process = subprocess.Popen(argv, env=env, pass_fds=(self.read_fd,), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True)
        os.close(self.read_fd)

    def send(self, line: str) -> None:
        os.write(self.write_fd, line.encode() + b"\n")

    def close_pipe(self) -> None:
        os.close(self.write_fd)
        self.write_fd = -1

    def wait(self, timeout: float) -> tuple[int, float]:
        code = self.process.wait(timeout)
        return code, time.monotonic() - self.started

    def output(self) -> str:
        assert self.process.stdout is not None and self.process.stderr is not None
        return self.process.stdout.read().decode() + self.process.stderr.read().decode()

    def ledger_events(self) -> list[str]:
        index = LedgerIndex()
        index.feed([self.ledger])
        return [line.split(" ")[5] for line in self.ledger.read_text().splitlines()] if index.runs else []

    def wait_started(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ledger.exists() and "start" in self.ledger.read_text():
                return
            time.sleep(0.02)
        raise AssertionError("child did not start")

    def cleanup(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def runs():
    made: list[GuardRun] = []
    yield made
    for run in made:
        run.cleanup()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_deadline_passes_child_gets_sigterm_at_the_deadline(tmp_path, runs):
    run = GuardRun(tmp_path, 1.0, 1.0)
    runs.append(run)
    run.wait_started()
    code, took = run.wait(5)
    assert code == 0  # the child wrote "stop" on SIGTERM and exited 0
    assert 1.0 <= took < 1.8
    assert run.ledger_events()[-1] == "stop"
    assert "lease deadline passed" in run.output()


def test_deadlines_keep_it_running_and_stop_ends_it(tmp_path, runs):
    run = GuardRun(tmp_path, 0.6, 1.0)
    runs.append(run)
    run.wait_started()
    for _ in range(8):  # 1.6 s of fresh deadlines, past the first one
        run.send(f"d {time.monotonic() + 0.6:.6f}")
        time.sleep(0.2)
    assert run.process.poll() is None
    run.send("stop")
    code, _ = run.wait(3)
    assert code == 0
    assert "stop requested" in run.output()


def test_child_ignoring_sigterm_and_its_grandchild_are_killed_by_deadline_plus_grace(tmp_path, runs):
    run = GuardRun(tmp_path, 0.8, 0.7, "--ignore-term", "--spawn-grandchild")
    runs.append(run)
    run.wait_started()
    code, took = run.wait(5)
    assert code == 128 + signal.SIGKILL
    assert 1.5 <= took < 2.2  # deadline 0.8 + grace 0.7, plus a poll or two
    out = run.output()
    grandchild = int(out.split("grandchild ")[1].split()[0])
    assert not _alive(grandchild)  # reaped by the guard (subreaper) before it exited


def test_node_gone_pipe_closed_ends_the_group_at_once(tmp_path, runs):
    run = GuardRun(tmp_path, 60.0, 2.0)
    runs.append(run)
    run.wait_started()
    closed = time.monotonic()
    run.close_pipe()
    code = run.process.wait(3)
    # at once: well before the 2 s grace a SIGTERM-ignoring child would get (a loaded
    # machine can add a few hundred ms to the guard's own poll and exit)
    assert code == 0 and time.monotonic() - closed < 1.5
    assert "node gone" in run.output()


def test_node_gone_with_its_end_of_the_output_pipes_still_ends_the_group_gracefully(tmp_path, runs):
    """A SIGKILLed node closes the guard's stderr too: the guard's own message must not kill it
    (a broken pipe), or its child would die of the parent-death signal without a clean stop."""
    run = GuardRun(tmp_path, 60.0, 2.0)
    runs.append(run)
    run.wait_started()
    assert run.process.stdout is not None and run.process.stderr is not None
    run.process.stdout.close()
    run.process.stderr.close()
    run.close_pipe()
    run.process.wait(3)
    assert run.ledger_events()[-1] == "stop"


def test_child_exit_status_is_passed_on(tmp_path, runs):
    run = GuardRun(tmp_path, 60.0, 1.0, "--exit-after", "0.2")
    runs.append(run)
    code, _ = run.wait(5)
    assert code == 3


def test_missing_command_and_late_start(tmp_path):
    read_fd, write_fd = os.pipe()
    try:
        argv = [sys.executable, "-I", "-S", exec_guard.__file__, "--lease-fd", str(read_fd), "--deadline",
                f"{time.monotonic() + 60:.6f}", "--grace", "1", "--", "/nonexistent/program"]
        done = subprocess.run(argv, pass_fds=(read_fd,), capture_output=True, timeout=10)
        assert done.returncode == exec_guard.EXIT_NOT_FOUND
        argv[7] = f"{time.monotonic() - 1:.6f}"  # the lease is already over: nothing starts
        argv[-1] = "true"
        done = subprocess.run(argv, pass_fds=(read_fd,), capture_output=True, timeout=10)
        assert done.returncode == exec_guard.EXIT_NOT_STARTED
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_grace_leaves_a_margin_inside_stop_timeout():
    assert exec_guard.grace_for(4.0) == pytest.approx(4.0 - exec_guard.STOP_MARGIN)
    assert exec_guard.grace_for(0.1) == 0.0
