"""The partition bed's members: a Consul agent or a node process in a namespace.

:class:`NsConsul` runs a Consul server or client agent in a member's namespace;
:class:`NsNode` runs ``voltha-gevent run --ledger-file`` in a host's namespace, talking to the
host's own agent on 127.0.0.1. Each is one process started here and signalled by pid only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .agents import CLUSTER_HCL, AgentProcess
from .netns import Fabric
from .processes import NodeProcess

SERVERS = ("s0", "s1", "s2")
#: Ports inside each namespace (every namespace has its own stack, so they never clash).
CONSUL_HTTP_PORT = 8500
NODE_REST_PORT = 8080
#: Timeout of one HTTP call of the bed.
HTTP_TIMEOUT = 1.0
#: How long a node may take to exit on SIGTERM.
NODE_EXIT_TIMEOUT = 15.0
#: How long SIGUSR1 blocks a node's loop (the node's ``--ledger-block``).
BLOCK_SECONDS = 6.0


class NsConsul:
    """A Consul agent (server or client) in a member's namespace; HTTP on 127.0.0.1 (and its address)."""

    def __init__(self, fabric: Fabric, member: str, binary: str, workdir: Path, *, server: bool,
                 join: list[str]) -> None:
        self.member = member
        self.address = fabric.addresses[member]
        data = workdir / f"consul-{member}"
        data.mkdir(parents=True, exist_ok=True)
        clients = f"127.0.0.1 {self.address}" if server else "127.0.0.1"
        argv = [binary, "agent", f"-node={member}", "-disable-host-node-id",
                f"-bind={self.address}", f"-advertise={self.address}", f"-client={clients}",
                f"-data-dir={data}", "-dns-port=-1", "-grpc-port=-1", "-retry-interval=1s",
                *[f"-retry-join={a}" for a in join if a != self.address]]
        if server:
            argv += ["-server", f"-bootstrap-expect={len(SERVERS)}", "-hcl", CLUSTER_HCL]
        self.process = AgentProcess(fabric.exec_argv(member, argv), workdir / f"consul-{member}.log")

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def signal(self, signum: int) -> None:
        if self.process.alive() and self.process.proc is not None:
            self.process.proc.send_signal(signum)


class NsNode(NodeProcess):
    """A node process in a host's namespace, on the host's agent at 127.0.0.1, with a ledger."""

    def __init__(self, instance_id: str, fabric: Fabric, member: str, workdir: Path, *, prefix: str,
                 tick: float, settings: dict[str, str]) -> None:
        address = fabric.addresses[member]
        settings = {**settings, "VOLTHA_REST_BIND": address, "VOLTHA_INTERNAL_HOST": address}
        super().__init__(instance_id, f"127.0.0.1:{CONSUL_HTTP_PORT}", workdir, prefix=prefix,
                         settings=settings)
        self.fabric = fabric
        self.member = member
        self.address = address
        self.rest_port = NODE_REST_PORT
        self.tick = tick
        self.ledger_file = self.workdir / f"{instance_id}.ledger"

    def start(self) -> NsNode:
        if self.alive():
            return self
        argv = [sys.executable, "-m", "voltha_gevent", "run", "--embedded-consul", "never",
                "--ledger-file", str(self.ledger_file), "--ledger-tick", str(self.tick),
                "--ledger-block", str(BLOCK_SECONDS)]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.fabric.exec_argv(self.member, argv), env=self.env(),
                                            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        return self

    def get(self, path: str, timeout: float = HTTP_TIMEOUT) -> tuple[int, Any]:
        url = f"http://{self.address}:{self.rest_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - a bed member
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None


__all__ = ["BLOCK_SECONDS", "CONSUL_HTTP_PORT", "HTTP_TIMEOUT", "NODE_EXIT_TIMEOUT", "NODE_REST_PORT",
           "SERVERS", "NsConsul", "NsNode"]
