"""The dev agent ``voltha-gevent run`` embeds dies with the node that started it, however the
node dies (SIGKILL included), so no orphan keeps the port and is silently joined later; its
directory is removed by the next embedded agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from voltha_gevent.devagent import PID_FILE, WORKDIR_PREFIX, remove_orphaned_workdirs
from voltha_gevent.testing.agents import CONSUL_ENV_VARS, free_port


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _ready_pid(log_path: Path, node: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if '"embedded-consul-ready"' in line:
                return int(json.loads(line)["pid"])
        assert node.poll() is None, log_path.read_text()[-2000:]
        time.sleep(0.1)
    raise AssertionError("the embedded agent did not come up: " + log_path.read_text()[-2000:])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_the_embedded_dev_agent_dies_with_the_node_that_started_it(consul_bin, tmp_path, sig):
    env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    env["CONSUL_BIN"] = consul_bin
    port = free_port()
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        node = subprocess.Popen(
            [sys.executable, "-m", "voltha_gevent", "run", "--consul", f"127.0.0.1:{port}",
             "--embedded-consul", "always", "--rest-port", "0", "--no-dispatch", "--log-format", "json"],
            env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    agent_pid = None
    try:
        agent_pid = _ready_pid(log_path, node)
        assert not _gone(agent_pid)
        node.send_signal(sig)
        node.wait(10)
        deadline = time.monotonic() + 5
        while not _gone(agent_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(agent_pid), f"agent {agent_pid} outlived the node ({sig.name})"
        workdirs = [p for p in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*")
                    if (p / PID_FILE).is_file() and (p / PID_FILE).read_text().strip() == str(agent_pid)]
        assert len(workdirs) == 1  # left behind by the dead node; the next embedded agent removes it
        assert workdirs[0] in remove_orphaned_workdirs()
        assert not workdirs[0].exists()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)
        if agent_pid is not None and not _gone(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)  # the orphan this test started, by pid
