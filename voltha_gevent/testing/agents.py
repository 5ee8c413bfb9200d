"""Real Consul processes for tests and benches: a dev agent and a 3-server cluster on loopback.

The dev agent (and the helpers both use) live in :mod:`voltha_gevent.devagent`, the run
path's own module since ``voltha-gevent run`` starts one; they are re-exported here.

Guarantees of :class:`Cluster`:

* Every server binds to 127.0.0.0/8 only, on ports picked free at start, with its data and
  log in a private temporary directory, in its own process group, and with
  ``CONSUL_HTTP_ADDR``/``CONSUL_HTTP_TOKEN`` removed from its environment.
* ``start()`` returns only once the servers agree on a Raft leader; when startup fails the
  tail of every server's log is in the exception.
* Only processes started here are ever signalled, by pid: SIGTERM, a wait, then SIGKILL.
  ``stop()`` is idempotent and also runs on context-manager exit.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ..devagent import (
    CONSUL_ENV_VARS,
    LOG_TAIL_LINES,
    POLL_INTERVAL,
    STARTUP_TIMEOUT,
    STOP_GRACE,
    AgentProcess,
    AgentStartupError,
    ConsulBinaryNotFound,
    DevAgent,
    child_env,
    find_consul_binary,
    free_port,
    http_get_json,
    leader_of,
    log_tail,
)
from ..lifecycle import StartStop

#: The cluster's Raft tuning: dev-style timings so that elections take about a second.
CLUSTER_HCL = "performance { raft_multiplier = 1 }"


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
        self.process: AgentProcess | None = None

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
        self.process = AgentProcess(self.argv(n, peers), self.log_path)
        self.process.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


class Cluster(StartStop):
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
                leader = leader_of(server.http_addr)
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
        tails = "\n".join(f"--- {s.log_path}:\n{log_tail(s.log_path, 15)}" for s in self.servers)
        raise AgentStartupError(f"no Raft leader within {timeout}s\n{tails}")

    def _agreed_leader(self) -> int | None:
        by_rpc = {s.rpc_addr: s.index for s in self.servers}
        seen = {leader_of(s.http_addr) for s in self.servers if s.alive()}
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


__all__ = [
    "CLUSTER_HCL",
    "CONSUL_ENV_VARS",
    "LOG_TAIL_LINES",
    "STARTUP_TIMEOUT",
    "STOP_GRACE",
    "AgentStartupError",
    "Cluster",
    "ConsulBinaryNotFound",
    "DevAgent",
    "child_env",
    "find_consul_binary",
    "free_port",
    "http_get_json",
]
