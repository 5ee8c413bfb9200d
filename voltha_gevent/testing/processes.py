"""voltha-gevent nodes as separate processes, for integration tests, benches and chaos runs.

Each :class:`NodeProcess` runs ``python -m voltha_gevent run`` with its own settings in the
environment, a report file of the work it starts and stops (for the auditor), and its log
in a file. Only processes started here are ever signalled, by pid; ``stop()`` sends SIGTERM
and escalates to SIGKILL after a grace period, and is idempotent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .agents import CONSUL_ENV_VARS, free_port

#: Settings for quick convergence in tests (soak short, lock-delay short).
TEST_SETTINGS = {
    "VOLTHA_SOAK": "0.5",
    "VOLTHA_MAX_SOAK_DELAY": "3",
    "VOLTHA_WORKER_SOAK": "0.1",
    "VOLTHA_SESSION_TTL": "10",
    "VOLTHA_CHECK_TTL": "2",
    "VOLTHA_LOCK_DELAY": "2",
    "VOLTHA_WATCH_WAIT": "10",
    "VOLTHA_STOP_TIMEOUT": "1.5",
    "VOLTHA_HANDOVER_TIMEOUT": "10",
    # SIGTERM stops at once, as the stop-path tests and benches measure it; drain tests set it
    "VOLTHA_DRAIN_TIMEOUT": "0",
    "VOLTHA_LOG_FORMAT": "json",
}


#: urllib3's warning when more calls were in flight than a client's pool holds.
POOL_FULL = "Connection pool is full"
#: Every node log written in this process, for :func:`pool_full_warnings`.
_LOGS: list[Path] = []


def pool_full_warnings() -> list[str]:
    """Lines of any node log started here that carry urllib3's pool-full warning."""
    found = []
    for path in _LOGS:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        found.extend(f"{path.name}: {line[:200]}" for line in text.splitlines() if POOL_FULL in line)
    return found


class ChildProcess:
    """A process the tests or benches started, in a session of its own; signalled by its pid
    only (never by name), so nothing else on the machine is touched."""

    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            os.kill(self.process.pid, signum)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGCONT (it may be frozen), SIGTERM, wait up to ``grace``, then SIGKILL; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies without a word."""
        if self.alive():
            assert self.process is not None
            self._killing()
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def _killing(self) -> None:
        """Called just before a SIGKILL (subclasses record it)."""


class NodeProcess(ChildProcess):
    """One node process; ``workdir`` holds its log and report file."""

    def __init__(self, instance_id: str, consul: str, workdir: Path, *, prefix: str = "service/voltha",
                 settings: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.instance_id = instance_id
        self.consul = consul
        self.prefix = prefix
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rest_port = free_port()
        self.report_file = self.workdir / f"{instance_id}.report.jsonl"
        self.log_path = self.workdir / f"{instance_id}.log"
        _LOGS.append(self.log_path)
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.args = list(args or [])  # more flags for ``run`` (e.g. ``--exec``)
        self.process: subprocess.Popen[bytes] | None = None
        self.kills: list[tuple[float, str]] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
        env.update(self.settings)
        env.update({
            "VOLTHA_INSTANCE_ID": self.instance_id,
            "VOLTHA_CONSUL": self.consul,
            "VOLTHA_PREFIX": self.prefix,
            "VOLTHA_REST_PORT": str(self.rest_port),
        })
        return env

    def start(self) -> NodeProcess:
        if self.alive():
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        argv = [sys.executable, "-m", "voltha_gevent", "run", "--embedded-consul", "never",
                "--report-file", str(self.report_file), *self.args]
        self.process = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        return self

    def _killing(self) -> None:
        self.kills.append((time.time(), self.instance_id))  # for the auditor

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        """GET a path of the node's HTTP endpoint: ``(status, parsed JSON or text)``."""
        url = f"http://127.0.0.1:{self.rest_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode("utf-8", "replace")

    def status(self) -> dict[str, Any] | None:
        """The node's ``/status``, or None while it does not answer."""
        try:
            code, body = self.get("/status")
        except (OSError, urllib.error.URLError):
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def wait_for(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (tests only: the library never polls)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
