"""Fault injection on a real 3-server Consul cluster with voltha-gevent node processes.

A :class:`ChaosBed` runs a :class:`~voltha_gevent.testing.agents.Cluster` of 3 servers on
127.0.0.1-3, a few :class:`~voltha_gevent.testing.processes.NodeProcess` nodes (node ``i``
talks to server ``i % 3`` only) and a workload of a few hundred items. It injects faults -
SIGKILL/SIGTERM/SIGSTOP of nodes, SIGKILL/SIGSTOP of Consul servers - records when, and
checks the invariants:

* **one running owner**, with the **resume fence latency** of a SIGSTOPped node: the replay
  of the nodes' report files by :func:`~voltha_gevent.testing.chaos_audit.audit_timeline`;
* **convergence**: after a fault settles, within :meth:`ChaosBed.settle_bound`, every item is
  owned exactly once (by the nodes' ``/status`` and by Consul's ``owners/`` locks) and the
  published assignment equals :func:`~voltha_gevent.assignment.desired_assignment` for the
  live members;
* **workload untouched**: every workload entry keeps its value and ``ModifyIndex``;
* **processes stay up** unless the bed killed or stopped them.

Every wait is bounded; only processes started here are signalled, by pid. The randomized
run takes its seed from the caller (printed by the tests) so a failure can be replayed.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from ..assignment import desired_assignment
from ..assignment_docs import read_assignments
from ..client_settings import ClientSettings
from ..consul_api import ConsulAPI, make_client
from ..errors import VolthaError
from ..keys import Keys
from ..lifecycle import StartStop
from .agents import Cluster, http_get_json
from .auditor import owners_in_consul, read_reports
from .chaos_audit import AuditResult, Fault, audit_timeline
from .processes import TEST_SETTINGS, NodeProcess, wait_for

log = structlog.get_logger(__name__)

#: Session TTL, check TTL, lock-delay and soaks of the nodes (from TEST_SETTINGS).
SESSION_TTL = float(TEST_SETTINGS["VOLTHA_SESSION_TTL"])
LOCK_DELAY = float(TEST_SETTINGS["VOLTHA_LOCK_DELAY"])
SOAK = float(TEST_SETTINGS["VOLTHA_MAX_SOAK_DELAY"])
#: Extra time on top of the protocol bound: process start, Raft elections, 2 slow cores.
SETTLE_MARGIN = 15.0
#: How long a frozen node stays frozen: longer than its session TTL.
PAUSE_SECONDS = SESSION_TTL + 2.0
#: Seconds between two looks at the cluster while waiting for convergence.
POLL = 0.25
#: Timeout of the bed's own Consul calls.
CALL_TIMEOUT = 3.0
#: How long a restarted server may take to be a Raft voter again (autopilot stabilization is 10 s).
VOTER_TIMEOUT = 60.0


class ChaosBed(StartStop):
    """A 3-server cluster, node processes, a workload, and the invariant checks."""

    def __init__(self, workdir: Path, *, nodes: int = 4, items: int = 300, binary: str | None = None,
                 prefix: str = "chaos/voltha") -> None:
        self.workdir = Path(workdir)
        self.node_count = nodes
        self.item_count = items
        self.prefix = prefix
        self.cluster = Cluster(3, binary)
        self.nodes: dict[str, NodeProcess] = {}
        self.server_of: dict[str, int] = {}
        self.retired: list[NodeProcess] = []
        self.down_nodes: set[str] = set()  # killed or terminated by us, not yet restarted
        self.paused_nodes: set[str] = set()
        self.down_servers: set[int] = set()
        self.pauses: list[list[Any]] = []  # [t_stop, t_cont | None, instance]
        self.faults: list[Fault] = []
        self.violations: list[tuple[float, str]] = []  # (time, what)
        self.workload: dict[str, tuple[bytes | None, int]] = {}
        self._apis = [ConsulAPI(make_client(ClientSettings(host=h, port=p), CALL_TIMEOUT))
                      for h, p in (self.cluster.host_port(i) for i in range(3))]

    # Set-up and tear-down

    def start(self, timeout: float = 60.0) -> ChaosBed:
        self.cluster.start()
        api = self.api()
        for i in range(1, self.item_count + 1):
            api.put(self.key(f"workload/dg{i:04d}"), f"value-{i}")
        self.workload = self.read_workload()
        for i in range(1, self.node_count + 1):
            name = f"n{i}"
            self.server_of[name] = (i - 1) % 3
            self.nodes[name] = self._new_node(name).start()
        if self.wait_converged(timeout) is None:
            raise AssertionError(f"the chaos bed never converged\n{self.explain()}")
        return self

    def _new_node(self, name: str) -> NodeProcess:
        address = self.cluster.http_addrs[self.server_of[name]]
        return NodeProcess(name, address, self.workdir, prefix=self.prefix)

    def stop(self) -> None:
        for server in list(self.down_servers):
            self._signal_server(server, signal.SIGCONT)
        for node in self.nodes.values():
            node.stop()
        self.cluster.stop()

    # Consul access

    def key(self, rest: str) -> str:
        return f"{self.prefix}/{rest}"

    def api(self) -> ConsulAPI:
        """A client on some live server."""
        for i, api in enumerate(self._apis):
            if i not in self.down_servers and self.cluster.servers[i].alive():
                return api
        raise RuntimeError("no live Consul server")

    def read_workload(self) -> dict[str, tuple[bytes | None, int]]:
        _, entries = self.api().list(self.key("workload/"), consistent=True)
        return {e.key: (e.value, e.modify_index) for e in entries}

    # Nodes

    def live_nodes(self) -> list[str]:
        """Nodes that should be members now: running, not frozen, their server up."""
        return [n for n, p in self.nodes.items()
                if n not in self.down_nodes and n not in self.paused_nodes
                and self.server_of[n] not in self.down_servers and p.alive()]

    def leader_node(self) -> str | None:
        leaders = [n for n in self.live_nodes() if (self.nodes[n].status() or {}).get("is_leader")]
        return leaders[0] if len(leaders) == 1 else None

    def kill_node(self, name: str) -> None:
        self.nodes[name].kill()
        self.down_nodes.add(name)

    def term_node(self, name: str) -> None:
        code = self.nodes[name].stop()
        if code != 0:
            self.violation(f"{name} exited {code} on SIGTERM")
        self.down_nodes.add(name)

    def restart_node(self, name: str) -> None:
        """Start a new process for ``name`` (same id, same report file)."""
        old = self.nodes[name]
        if old.alive():
            raise RuntimeError(f"{name} is still running")
        self.retired.append(old)
        node = self._new_node(name)
        node.report_file = old.report_file  # one report per instance id; appended to
        self.nodes[name] = node.start()
        self.down_nodes.discard(name)

    def pause_node(self, name: str) -> None:
        self.nodes[name].signal(signal.SIGSTOP)
        self.pauses.append([time.time(), None, name])
        self.paused_nodes.add(name)

    def resume_node(self, name: str) -> None:
        for pause in self.pauses:
            if pause[2] == name and pause[1] is None:
                pause[1] = time.time()
        self.nodes[name].signal(signal.SIGCONT)
        self.paused_nodes.discard(name)

    # Servers

    def raft_leader(self) -> int | None:
        return self.cluster.leader_index()

    def kill_server(self, index: int) -> None:
        self.cluster.kill(index)
        self.down_servers.add(index)

    def restart_server(self, index: int) -> None:
        """Restart server ``index`` and wait until all 3 servers are Raft voters again.

        Autopilot removes a dead server from the Raft configuration and re-adds it as a
        non-voter until it has been stable for 10 s: killing another server before that
        would leave the cluster without a quorum - a Consul precondition, not ours to test.
        """
        self.cluster.restart(index, timeout=60.0)
        self.down_servers.discard(index)
        if not wait_for(self.all_voters, VOTER_TIMEOUT, 0.5):
            self.violation(f"server{index} did not become a Raft voter again within {VOTER_TIMEOUT:.0f}s")

    def all_voters(self) -> bool:
        leader = self.raft_leader()
        if leader is None:
            return False
        try:
            raft = http_get_json(f"http://{self.cluster.http_addrs[leader]}/v1/operator/raft/configuration")
        except (OSError, ValueError):
            return False
        servers = raft.get("Servers") or [] if isinstance(raft, dict) else []
        return len(servers) == 3 and all(s.get("Voter") for s in servers)

    def pause_servers(self, indexes: Iterable[int]) -> None:
        for i in indexes:
            self._signal_server(i, signal.SIGSTOP)
            self.down_servers.add(i)

    def resume_servers(self, indexes: Iterable[int]) -> None:
        for i in indexes:
            self._signal_server(i, signal.SIGCONT)
            self.down_servers.discard(i)

    def _signal_server(self, index: int, signum: int) -> None:
        process = self.cluster.servers[index].process
        if process is not None and process.proc is not None and process.alive():
            process.proc.send_signal(signum)

    # Invariants

    @staticmethod
    def settle_bound() -> float:
        """Session TTL x 2 + lock-delay + soak + margin: the re-convergence bound."""
        return SESSION_TTL * 2 + LOCK_DELAY + SOAK + SETTLE_MARGIN

    def converged(self) -> bool:
        """Every item owned once, by the member the pure function picks for the live members."""
        live = self.live_nodes()
        if not live:
            return False
        statuses = {n: self.nodes[n].status() for n in live}
        if not all(s and s["healthy"] and not s["pending"] and not s["revoking"] for s in statuses.values()):
            return False
        owned = [(item, n) for n, s in statuses.items() for item in s["owned"]]  # type: ignore[union-attr]
        items = {k.rsplit("/", 1)[1] for k in self.workload}
        if len(owned) != len(items) or {i for i, _ in owned} != items:
            return False
        try:
            api = self.api()
            documents = read_assignments(api, Keys(self.prefix), consistent=True)
            in_consul = owners_in_consul(api, self.key("owners/"))
            _, members = api.keys(self.key("members/"), consistent=True)
        except (VolthaError, RuntimeError):
            return False
        if any(len(ms) != 1 for ms in documents.assigned.values()):
            return False  # an item published to two members
        published = {item: m for item, ms in documents.assigned.items() for m in ms}
        desired = desired_assignment({n: 1.0 for n in live}, items, published)
        return published == desired == dict(owned) == in_consul

    def wait_converged(self, timeout: float | None = None) -> float | None:
        """Seconds until converged, or None (and a recorded violation) after ``timeout``."""
        timeout = self.settle_bound() if timeout is None else timeout
        started = time.monotonic()
        if wait_for(self.converged, timeout, POLL):
            return time.monotonic() - started
        self.violation(f"no convergence within {timeout:.0f}s (live {self.live_nodes()})")
        return None

    def check_processes(self) -> None:
        """Every node we did not stop must still run."""
        for name, node in self.nodes.items():
            if name not in self.down_nodes and not node.alive():
                self.violation(f"{name} died on its own (exit {node.process.returncode})")  # type: ignore[union-attr]
                self.down_nodes.add(name)

    def check_workload(self) -> None:
        try:
            now = self.read_workload()
        except (VolthaError, RuntimeError) as exc:
            self.violation(f"workload unreadable: {exc}")
            return
        for key, (value, index) in self.workload.items():
            if key not in now:
                self.violation(f"workload entry {key} deleted")
            elif now[key] != (value, index):
                self.violation(f"workload entry {key} changed: {now[key]!r}")
        for key in set(now) - set(self.workload):
            self.violation(f"workload entry {key} appeared")

    def violation(self, what: str) -> None:
        log.error("chaos-violation", what=what)
        self.violations.append((time.time(), what))

    def audit(self) -> AuditResult:
        everyone = [*self.nodes.values(), *self.retired]
        reports = sorted({str(n.report_file) for n in everyone})
        kills = [k for n in everyone for k in n.kills]
        pauses = [(p[0], p[1], p[2]) for p in self.pauses]
        return audit_timeline(read_reports(reports), kills, pauses)

    def record(self, scenario: str, kind: str, target: str) -> Fault:
        fault = Fault(scenario, kind, target, time.time())
        self.faults.append(fault)
        log.info("chaos-fault", scenario=scenario, kind=kind, target=target)
        return fault

    def settle(self, fault: Fault, timeout: float | None = None, since: float | None = None) -> float | None:
        """Wait for convergence, note the time on ``fault``, check processes and workload.

        The time counts from ``since`` (monotonic) when given, else from now.
        """
        waited = time.monotonic() - since if since is not None else 0.0
        seconds = self.wait_converged(None if timeout is None else timeout)
        if seconds is not None:
            seconds += waited
            fault.converge.append(seconds)
        self.check_processes()
        self.check_workload()
        return seconds

    def explain(self, lines: int = 12) -> str:
        parts = [f"violations: {self.violations}",
                 f"live: {self.live_nodes()}, down servers: {sorted(self.down_servers)}"]
        for name, node in self.nodes.items():
            status = node.status() if node.alive() and name not in self.paused_nodes else None
            brief = {k: (len(v) if isinstance(v, list) else v) for k, v in (status or {}).items()
                     if k != "members"}
            parts.append(f"--- {name} (server {self.server_of[name]}) {brief}\n{node.log_tail(lines)}")
        return "\n".join(parts)

    # Scenarios

    def follower(self, rng: random.Random | None = None) -> str:
        leader = self.leader_node()
        followers = [n for n in self.live_nodes() if n != leader]
        return (rng or random).choice(followers) if rng else followers[0]

    def kill_and_restart(self, scenario: str, name: str) -> Fault:
        fault = self.record(scenario, "sigkill-node", name)
        self.kill_node(name)
        self.settle(fault)
        self.restart_node(name)
        self.settle(fault)
        return fault

    def term_and_restart(self, scenario: str, name: str) -> Fault:
        fault = self.record(scenario, "sigterm-node", name)
        self.term_node(name)
        self.settle(fault)
        self.restart_node(name)
        self.settle(fault)
        return fault

    def freeze_node(self, scenario: str, name: str, seconds: float = PAUSE_SECONDS) -> Fault:
        fault = self.record(scenario, "sigstop-node", name)
        until = time.monotonic() + seconds
        self.pause_node(name)
        self.settle(fault, timeout=seconds)  # the others take over while it is frozen
        time.sleep(max(0.0, until - time.monotonic()))
        self.resume_node(name)
        self.settle(fault)
        return fault

    def kill_server_and_restart(self, scenario: str, index: int, kind: str = "sigkill-server") -> Fault:
        fault = self.record(scenario, kind, f"server{index}")
        self.kill_server(index)
        if self.live_nodes():
            self.settle(fault)
        since = time.monotonic()
        self.restart_server(index)
        self.settle(fault, since=since)
        return fault

    def consul_outage(self, scenario: str, seconds: float) -> Fault:
        fault = self.record(scenario, "sigstop-all-servers", "server0-2")
        self.pause_servers(range(3))
        time.sleep(seconds)
        self.check_processes()
        self.resume_servers(range(3))
        self.settle(fault)
        return fault

    def random_run(self, seconds: float, seed: int, scenario: str = "random") -> list[Fault]:
        """Random faults, one after the other, each settled, until ``seconds`` have passed."""
        rng = random.Random(seed)
        deadline = time.monotonic() + seconds
        done: list[Fault] = []
        actions: list[tuple[str, Callable[[], Fault]]] = [
            ("kill-node", lambda: self.kill_and_restart(scenario, rng.choice(self.live_nodes()))),
            ("term-node", lambda: self.term_and_restart(scenario, rng.choice(self.live_nodes()))),
            ("freeze-node", lambda: self.freeze_node(scenario, rng.choice(self.live_nodes()))),
            ("kill-server", lambda: self.kill_server_and_restart(scenario, rng.randrange(3))),
            ("kill-raft-leader", lambda: self.kill_server_and_restart(
                scenario, self.raft_leader() or 0, "sigkill-raft-leader")),
        ]
        while time.monotonic() < deadline and len(done) < 100:
            name, action = rng.choice(actions)
            log.info("chaos-random-step", seed=seed, step=len(done), action=name)
            done.append(action())
        return done
