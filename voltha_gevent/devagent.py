"""A local ``consul agent -dev`` for trying voltha-gevent out (``make run``) and for tests.

The dev agent keeps everything **in memory**: when it stops, the workload, the members and
the assignments are gone. It is for trying things out and for tests, never for keeping a
workload.

Guarantees:

* The agent binds to 127.0.0.0/8 only, on ports picked free at start (or the one asked for),
  with its data and log in a private temporary directory, in its own process group, and with
  ``CONSUL_HTTP_ADDR``/``CONSUL_HTTP_TOKEN`` removed from its environment.
* ``start()`` returns only once the agent answers ``/v1/status/leader`` with a leader and its
  node has a passing ``serfHealth`` (so sessions can be created); when startup fails the tail
  of the agent's log is in the exception.
* With ``die_with_parent=True`` (what ``voltha-gevent run`` uses) the agent dies with the
  process that started it, whatever ends that process, SIGKILL included: Linux's parent-death
  signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) is set in the child before ``exec``. Its
  temporary directory is left behind then (nobody is left to remove it): the next such agent
  removes every directory of this user's whose recorded agent is gone
  (:func:`remove_orphaned_workdirs`).
* Only processes started here are ever signalled, by pid: SIGTERM, a wait, then SIGKILL.
  ``stop()`` is idempotent and also runs on context-manager exit.

The test beds (:mod:`voltha_gevent.testing.agents`, ``prometheus``, ``netbed_members``) build
on this module's public helpers (:class:`AgentProcess`, :func:`log_tail`, :func:`leader_of`):
the run path owns them, ``testing/`` reuses them, never the other way round.

The binary is found by :func:`find_consul_binary` with the same order as
``scripts/install-consul.sh``: ``$CONSUL_BIN``, ``consul`` on PATH, the project cache, then
the script itself (which downloads Consul 1.8.7 into the cache).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from .lifecycle import StartStop

log = structlog.get_logger(__name__)

#: How long an agent may take to elect a leader after it is started.
STARTUP_TIMEOUT = 30.0
#: How long ``stop()`` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE = 5.0
#: Poll interval while waiting for an agent.
POLL_INTERVAL = 0.1
#: How many lines of an agent's log go into a startup error.
LOG_TAIL_LINES = 40
#: Environment variables that would redirect a child ``consul`` (or a client) elsewhere.
CONSUL_ENV_VARS = ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY")
#: Linux prctl option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: Prefix of a dev agent's temporary directory.
WORKDIR_PREFIX = "voltha-consul-dev-"
#: File in a ``die_with_parent`` agent's directory holding the agent's pid.
PID_FILE = "agent.pid"

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConsulBinaryNotFound(RuntimeError):
    """No usable ``consul`` binary could be found or installed."""


class AgentStartupError(RuntimeError):
    """A Consul agent did not come up; the message carries the tail of its log."""


# Binary


def find_installed(command: str, *, env_var: str, companions: tuple[str, ...] = (), install: bool = True,
                   error: type[Exception] = RuntimeError) -> str:
    """The path of ``command``: ``$env_var``, ``PATH``, the project cache (with ``companions``
    beside it), else ``scripts/install-<command>.sh``, which installs it into that cache.

    Raises ``error`` with the reason when there is none.
    """
    explicit = os.environ.get(env_var)
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise error(f"{env_var}={explicit} is not an executable file")
    on_path = shutil.which(command)
    if on_path:
        return on_path
    cache = Path(os.environ.get("VOLTHA_CACHE_DIR") or REPO_ROOT / ".cache") / command / "usr" / "bin"
    names = (command, *companions)
    if all(os.path.isfile(cache / name) and os.access(cache / name, os.X_OK) for name in names):
        return str(cache / command)
    script = REPO_ROOT / "scripts" / f"install-{command}.sh"
    if not install or not script.is_file():
        raise error(f"no {command} binary: set {env_var}, put {command} on PATH, or run {script.name}")
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"{script} could not run: {exc}") from exc
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path or not os.access(path, os.X_OK):
        raise error(f"{script} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return path


def find_consul_binary(*, install: bool = True) -> str:
    """The path of a ``consul`` binary: $CONSUL_BIN, PATH, the project cache, else the installer.

    Raises :class:`ConsulBinaryNotFound` with the reason when there is none.
    """
    return find_installed("consul", env_var="CONSUL_BIN", install=install, error=ConsulBinaryNotFound)


# Helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP on ``host`` right now (racy, as all such are)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise OSError(f"no free TCP+UDP port on {host}")


def child_env() -> dict[str, str]:
    """The environment for a child ``consul``: ours without the CONSUL_HTTP_* redirections."""
    env = dict(os.environ)
    for name in CONSUL_ENV_VARS:
        env.pop(name, None)
    return env


def http_get_json(url: str, timeout: float = 2.0) -> Any:
    """GET ``url`` and decode its JSON body; raises OSError/ValueError on trouble."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read().decode("utf-8") or "null")


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class AgentProcess:
    """One ``consul agent`` child: start, signal by pid, wait."""

    def __init__(self, argv: list[str], log_path: Path, *, die_with_parent: bool = False) -> None:
        self.argv = argv
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                start_new_session=True,
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )
        log.debug("consul-agent-started", pid=self.proc.pid, argv=" ".join(self.argv))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL; a no-op when not running."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL and reap; a no-op when not running."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=STOP_GRACE)


def _parent_death_signal() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies.

    libc is loaded here, before the fork; the child only calls ``prctl`` and then checks that
    its parent did not die in between (the signal would never come: it kills itself).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def remove_orphaned_workdirs(root: str | None = None) -> list[Path]:
    """Remove this user's dev-agent directories whose agent (named in :data:`PID_FILE`) is gone.

    Only directories with the prefix, owned by this user and carrying the pid file are
    considered, so another user's or a still-running agent's directory is never touched.
    """
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            if path.stat().st_uid != os.getuid():
                continue
            pid = int((path / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if not _running(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def leader_of(http_addr: str) -> str:
    """The Raft leader's "ip:port" as ``http_addr`` sees it, or "" when there is none."""
    try:
        leader = http_get_json(f"http://{http_addr}/v1/status/leader", timeout=1.0)
    except (OSError, ValueError):
        return ""
    return leader if isinstance(leader, str) else ""


# Dev agent


class DevAgent(StartStop):
    """``consul agent -dev`` on 127.0.0.1 (or another loopback address) on free ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``die_with_parent``:
    the agent gets SIGKILL when this process dies, however it dies (Linux only).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        host: str = "127.0.0.1",
        node: str = "dev",
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = False,
    ) -> None:
        self.binary = binary or find_consul_binary()
        self.host = host
        self.node = node
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.port = port or free_port(host)
        self.die_with_parent = die_with_parent
        if die_with_parent:
            remove_orphaned_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        self.log_path = self.workdir / "consul.log"
        self._process = AgentProcess(self._argv(), self.log_path, die_with_parent=die_with_parent)

    @property
    def http_addr(self) -> str:
        """``host:port`` of the HTTP API."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _argv(self) -> list[str]:
        h = self.host
        return [
            self.binary, "agent", "-dev",
            f"-node={self.node}",
            f"-bind={h}", f"-client={h}", f"-advertise={h}",
            f"-http-port={self.port}", "-dns-port=-1", "-grpc-port=-1",
            f"-serf-lan-port={free_port(h)}", f"-serf-wan-port={free_port(h)}",
            f"-server-port={free_port(h)}",
            f"-data-dir={self.workdir / 'data'}",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> DevAgent:
        """Start the agent and wait until it has a leader and a healthy node."""
        if self._process.alive():
            return self
        self._process.start()
        if self.die_with_parent:
            (self.workdir / PID_FILE).write_text(f"{self.pid}\n")
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self._process.alive():
                break
            if leader_of(self.http_addr) and self._node_healthy():
                log.info("consul-dev-agent-ready", http_addr=self.http_addr, pid=self.pid)
                return self
            time.sleep(POLL_INTERVAL)
        self._process.kill()
        raise AgentStartupError(
            f"consul dev agent on {self.http_addr} did not come up within {self.startup_timeout}s;"
            f" log {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def _node_healthy(self) -> bool:
        try:
            checks = http_get_json(f"http://{self.http_addr}/v1/health/node/{self.node}")
        except (OSError, ValueError):
            return False
        return any(c.get("CheckID") == "serfHealth" and c.get("Status") == "passing" for c in checks or [])

    def stop(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL) and remove its directory; idempotent."""
        self._process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the agent, leaving its directory for inspection until :meth:`stop`."""
        self._process.kill()

    def alive(self) -> bool:
        return self._process.alive()


__all__ = [
    "REPO_ROOT",
    "AgentProcess",
    "AgentStartupError",
    "ConsulBinaryNotFound",
    "DevAgent",
    "child_env",
    "find_consul_binary",
    "free_port",
    "http_get_json",
    "leader_of",
    "log_tail",
    "remove_orphaned_workdirs",
]
