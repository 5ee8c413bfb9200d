"""Real Consul processes for tests and benches: a dev agent and a 3-server cluster on loopback.

Guarantees:

* Every agent binds to 127.0.0.0/8 only, on ports picked free at start, with its data and
  log in a private temporary directory, in its own process group, and with
  ``CONSUL_HTTP_ADDR``/``CONSUL_HTTP_TOKEN`` removed from its environment.
* ``start()`` returns only once the agent answers ``/v1/status/leader`` with a leader (and,
  for :class:`DevAgent`, once its node has a passing ``serfHealth`` so sessions can be
  created); when startup fails the tail of the agent's log is in the exception.
* Only processes started here are ever signalled, by pid: SIGTERM, a wait, then SIGKILL.
  ``stop()`` is idempotent and also runs on context-manager exit.

The binary is found by :func:`find_consul_binary` with the same order as
``scripts/install-consul.sh``: ``$CONSUL_BIN``, ``consul`` on PATH, the project cache, then
the script itself (which downloads Consul 1.8.7 into the cache).
"""

from __future__ import annotations

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
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

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
#: The cluster's Raft tuning: dev-style timings so that elections take about a second.
CLUSTER_HCL = "performance { raft_multiplier = 1 }"

_REPO_ROOT = Path(__file__).resolve().parents[2]


class ConsulBinaryNotFound(RuntimeError):
    """No usable ``consul`` binary could be found or installed."""


class AgentStartupError(RuntimeError):
    """A Consul agent did not come up; the message carries the tail of its log."""


# --------------------------------------------------------------------------- binary


def _cache_dir() -> Path:
    override = os.environ.get("VOLTHA_CACHE_DIR")
    return (Path(override) if override else _REPO_ROOT / ".cache") / "consul"


def find_consul_binary(*, install: bool = True) -> str:
    """The path of a ``consul`` binary: $CONSUL_BIN, PATH, the project cache, else the installer.

    Raises :class:`ConsulBinaryNotFound` with the reason when there is none.
    """
    explicit = os.environ.get("CONSUL_BIN")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise ConsulBinaryNotFound(f"CONSUL_BIN={explicit} is not an executable file")
    on_path = shutil.which("consul")
    if on_path:
        return on_path
    cached = _cache_dir() / "usr" / "bin" / "consul"
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    script = _REPO_ROOT / "scripts" / "install-consul.sh"
    if not install or not script.is_file():
        raise ConsulBinaryNotFound(
            "no consul binary: set CONSUL_BIN, put consul on PATH, or run scripts/install-consul.sh"
        )
    return _run_installer(script)


def _run_installer(script: Path) -> str:
    try:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConsulBinaryNotFound(f"{script} could not run: {exc}") from exc
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not path or not os.access(path, os.X_OK):
        raise ConsulBinaryNotFound(f"{script} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return path


# --------------------------------------------------------------------------- helpers


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


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class _Process:
    """One ``consul agent`` child: start, signal by pid, wait."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
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


def _leader_of(http_addr: str) -> str:
    """The Raft leader's "ip:port" as ``http_addr`` sees it, or "" when there is none."""
    try:
        leader = http_get_json(f"http://{http_addr}/v1/status/leader", timeout=1.0)
    except (OSError, ValueError):
        return ""
    return leader if isinstance(leader, str) else ""


# --------------------------------------------------------------------------- dev agent


class DevAgent:
    """``consul agent -dev`` on 127.0.0.1 (or another loopback address) on free ports.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
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
    ) -> None:
        self.binary = binary or find_consul_binary()
        self.host = host
        self.node = node
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        self.port = port or free_port(host)
        self.workdir = Path(tempfile.mkdtemp(prefix="voltha-consul-dev-"))
        self.log_path = self.workdir / "consul.log"
        self._process = _Process(self._argv(), self.log_path)

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
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self._process.alive():
                break
            if _leader_of(self.http_addr) and self._node_healthy():
                log.info("consul-dev-agent-ready", http_addr=self.http_addr, pid=self.pid)
                return self
            time.sleep(POLL_INTERVAL)
        self._process.kill()
        raise AgentStartupError(
            f"consul dev agent on {self.http_addr} did not come up within {self.startup_timeout}s;"
            f" log {self.log_path}:\n{_log_tail(self.log_path)}"
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

    def __enter__(self) -> DevAgent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- cluster


class _Server:
    """One server of a :class:`Cluster`, with fixed ports so that it can be restarted."""

    def __init__(self, binary: str, index: int, host: str, workdir: Path) -> None:
        self.index = index
        self.host = host
        self.binary = binary
        self.http_port = free_port(host)
        self.serf_lan_port = free_port(host)
        self.serf_wan_port = free_port(host)
        self.server_port = free_port(host)
        self.data_dir = workdir / f"server{index}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"server{index}.log"
        self.process: _Process | None = None

    @property
    def http_addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def rpc_addr(self) -> str:
        return f"{self.host}:{self.server_port}"

    @property
    def serf_addr(self) -> str:
        return f"{self.host}:{self.serf_lan_port}"

    def argv(self, n: int, peers: list[str]) -> list[str]:
        h = self.host
        return [
            self.binary, "agent", "-server", f"-bootstrap-expect={n}",
            f"-node=server{self.index}", "-disable-host-node-id",
            f"-bind={h}", f"-client={h}", f"-advertise={h}",
            f"-http-port={self.http_port}", "-dns-port=-1", "-grpc-port=-1",
            f"-serf-lan-port={self.serf_lan_port}", f"-serf-wan-port={self.serf_wan_port}",
            f"-server-port={self.server_port}",
            f"-data-dir={self.data_dir}",
            "-retry-interval=1s",
            *[f"-retry-join={p}" for p in peers],
            "-hcl", CLUSTER_HCL,
        ]  # fmt: skip

    def start(self, n: int, peers: list[str]) -> None:
        self.process = _Process(self.argv(n, peers), self.log_path)
        self.process.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


class Cluster:
    """``n`` Consul servers on 127.0.0.1 .. 127.0.0.n that bootstrap a Raft cluster together.

    ``http_addrs[i]`` is server ``i``'s HTTP API. :meth:`kill` and :meth:`restart` take a
    server index; :meth:`leader_index` names the Raft leader.
    """

    def __init__(
        self, n: int = 3, binary: str | None = None, *, startup_timeout: float = STARTUP_TIMEOUT
    ) -> None:
        if not 1 <= n <= 254:
            raise ValueError("a cluster has 1 to 254 servers")
        self.n = n
        self.binary = binary or find_consul_binary()
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="voltha-consul-cluster-"))
        self.servers = [_Server(self.binary, i, f"127.0.0.{i + 1}", self.workdir) for i in range(n)]

    @property
    def http_addrs(self) -> list[str]:
        return [s.http_addr for s in self.servers]

    def host_port(self, i: int) -> tuple[str, int]:
        """``(host, http_port)`` of server ``i``, for a client."""
        return self.servers[i].host, self.servers[i].http_port

    def _peers(self, i: int) -> list[str]:
        return [s.serf_addr for s in self.servers if s.index != i]

    def start(self) -> Cluster:
        """Start every server and wait until they agree on a leader."""
        for server in self.servers:
            server.start(self.n, self._peers(server.index))
        try:
            self.wait_for_leader(self.startup_timeout)
        except AgentStartupError:
            self.stop()
            raise
        return self

    def leader_index(self) -> int | None:
        """Index of the server that is Raft leader as the live servers see it, or None."""
        by_rpc = {s.rpc_addr: s.index for s in self.servers}
        for server in self.servers:
            if server.alive():
                leader = _leader_of(server.http_addr)
                if leader in by_rpc and self.servers[by_rpc[leader]].alive():
                    return by_rpc[leader]
        return None

    def wait_for_leader(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """Wait until every live server names the same live leader; its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self._agreed_leader()
            if leader is not None:
                return leader
            time.sleep(POLL_INTERVAL)
        tails = "\n".join(f"--- {s.log_path}:\n{_log_tail(s.log_path, 15)}" for s in self.servers)
        raise AgentStartupError(f"no Raft leader within {timeout}s\n{tails}")

    def _agreed_leader(self) -> int | None:
        by_rpc = {s.rpc_addr: s.index for s in self.servers}
        seen = {_leader_of(s.http_addr) for s in self.servers if s.alive()}
        if len(seen) != 1:
            return None
        leader = by_rpc.get(seen.pop())
        if leader is None or not self.servers[leader].alive():
            return None
        return leader

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` (its data dir stays, so :meth:`restart` rejoins it)."""
        process = self.servers[i].process
        if process is not None:
            process.kill()

    def restart(self, i: int, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start server ``i`` again on its old ports and data, and wait for a common leader."""
        server = self.servers[i]
        if server.process is not None:
            server.process.stop()
        server.start(self.n, self._peers(i))
        self.wait_for_leader(timeout)

    def stop(self) -> None:
        """Stop every server and remove the cluster's directory; idempotent."""
        for server in self.servers:
            if server.process is not None:
                server.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = [
    "AgentStartupError",
    "Cluster",
    "ConsulBinaryNotFound",
    "DevAgent",
    "child_env",
    "find_consul_binary",
    "free_port",
]
