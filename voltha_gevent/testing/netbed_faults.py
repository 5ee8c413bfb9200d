"""The partition bed's fault catalog: each fault is an inject and a heal for ``run_fault``.

:class:`PartitionFaults` is a base of :class:`~voltha_gevent.testing.netbed.PartitionBed`;
every method runs one fault through the bed's ``run_fault`` (which starts from a converged,
healed bed, holds, heals and waits for convergence, bounded) and returns its
:class:`~voltha_gevent.testing.netbed_runs.FaultRun`. A heal undoes exactly its inject.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .ledger import control_path_for
from .netbed_members import BLOCK_SECONDS, NODE_EXIT_TIMEOUT, SERVERS
from .netbed_runs import FaultRun

if TYPE_CHECKING:
    from .netbed_members import NsConsul, NsNode
    from .netns import Fabric

#: How long a server may take to be a Raft voter again.
VOTER_TIMEOUT = 60.0


class PartitionFaults:
    """The faults; the bed supplies the members, its state sets and ``run_fault``."""

    if TYPE_CHECKING:
        fabric: Fabric
        hosts: list[str]
        nodes: dict[str, NsNode]
        agents: dict[str, NsConsul]
        problems: list[str]
        unreachable: set[str]
        frozen: set[str]
        down: set[str]

        def run_fault(self, fault: str, target: str, inject: Callable[[], None], heal: Callable[[], None],
                      hold: float, *, watch: str | None = None, settle: float = ...) -> FaultRun: ...
        def raft_leader(self) -> str | None: ...
        def all_voters(self) -> bool: ...
        def wait_converged(self, timeout: float = ...) -> float | None: ...
        def restart_node(self, host: str) -> None: ...
        def _wait(self, predicate: Callable[[], Any], timeout: float, failure: str | None) -> bool: ...

    def isolate_host(self, host: str, seconds: float, fault: str = "isolate host") -> FaultRun:
        def inject() -> None:
            self.fabric.isolate(host)
            self.unreachable.add(host)

        def heal() -> None:
            self.fabric.rejoin(host)
            self.unreachable.discard(host)

        return self.run_fault(fault, host, inject, heal, seconds, watch=host)

    def cut_agent(self, host: str, seconds: float) -> FaultRun:
        servers = [self.fabric.addresses[s] for s in SERVERS]

        def inject() -> None:
            self.fabric.blackhole(host, servers)
            self.unreachable.add(host)

        def heal() -> None:
            self.fabric.unblackhole(host)
            self.unreachable.discard(host)

        return self.run_fault("cut agent from servers", host, inject, heal, seconds, watch=host)

    def isolate_raft_leader(self, seconds: float) -> FaultRun:
        leader = self.raft_leader()
        if leader is None:
            raise AssertionError("no Raft leader to isolate")

        def inject() -> None:
            self.fabric.isolate(leader)
            self.unreachable.add(leader)

        def heal() -> None:
            self.fabric.rejoin(leader)
            self.unreachable.discard(leader)
            if not self._wait(self.all_voters, VOTER_TIMEOUT, None):
                self.problems.append(f"{leader} did not become a Raft voter again")

        return self.run_fault("isolate raft leader", leader, inject, heal, seconds)

    def slow_link(self, host: str, seconds: float, rate: str = "64kbit") -> FaultRun:
        return self.run_fault(f"slow link ({rate} tbf)", host, lambda: self.fabric.shape(host, rate),
                              lambda: self.fabric.unshape(host), seconds, watch=host)

    def freeze_node(self, host: str, seconds: float, fault: str) -> FaultRun:
        def inject() -> None:
            self.nodes[host].signal(signal.SIGSTOP)
            self.frozen.add(host)

        def heal() -> None:
            self.nodes[host].signal(signal.SIGCONT)
            self.frozen.discard(host)

        return self.run_fault(fault, host, inject, heal, seconds)

    def freeze_agent(self, host: str, seconds: float) -> FaultRun:
        def inject() -> None:
            self.agents[host].signal(signal.SIGSTOP)
            self.unreachable.add(host)

        def heal() -> None:
            self.agents[host].signal(signal.SIGCONT)
            self.unreachable.discard(host)

        return self.run_fault("sigstop client agent", host, inject, heal, seconds, watch=host)

    def block_loop(self, host: str) -> FaultRun:
        def inject() -> None:
            self.nodes[host].signal(signal.SIGUSR1)
            self.frozen.add(host)

        return self.run_fault(f"loop blocked {BLOCK_SECONDS:.0f}s", host, inject,
                              lambda: self.frozen.discard(host), BLOCK_SECONDS + 0.5)

    def set_revoke_delay(self, hosts: list[str], seconds: float) -> None:
        """Make ``on_revoked`` of these hosts' nodes sleep ``seconds`` first (work keeps ticking)."""
        for h in hosts:
            control_path_for(self.nodes[h].ledger_file).write_text(f"{seconds}\n")

    def slow_revoke_leave_and_handover(self, host: str, delay: float) -> FaultRun:
        """Every on_revoked slow; ``host``'s node leaves (SIGTERM), then comes back (handover)."""

        def inject() -> None:
            self.set_revoke_delay(self.hosts, delay)
            node = self.nodes[host]
            self.down.add(host)
            code = node.stop(grace=NODE_EXIT_TIMEOUT)
            if code != 0:
                self.problems.append(f"{node.instance_id} exited {code} on SIGTERM")
            if self.wait_converged() is None:
                self.problems.append(f"no convergence after {node.instance_id} left")
            self.restart_node(host)
            self.down.discard(host)

        def heal() -> None:
            self.wait_converged()
            self.set_revoke_delay(self.hosts, 0.0)

        return self.run_fault(f"slow on_revoked ({delay:.0f}s) + leave/handover", host, inject, heal, 0.0)

    def slow_revoke_session_loss(self, host: str, delay: float, seconds: float) -> FaultRun:
        """``host``'s on_revoked slow, then its session is lost (host isolated ``seconds``)."""

        def inject() -> None:
            self.set_revoke_delay([host], delay)
            self.fabric.isolate(host)
            self.unreachable.add(host)

        def heal() -> None:
            self.fabric.rejoin(host)
            self.unreachable.discard(host)
            self.set_revoke_delay([host], 0.0)

        return self.run_fault(f"slow on_revoked ({delay:.0f}s) + session loss", host, inject, heal, seconds,
                              watch=host)


__all__ = ["VOTER_TIMEOUT", "PartitionFaults"]
