"""The partition bed: Consul servers and hosts in network namespaces, and faults between them.

Topology, on a :class:`~voltha_gevent.testing.netns.Fabric` (one private /24, unique names):

* 3 Consul 1.8.7 servers, ``s0``-``s2``, each in its own namespace;
* N hosts ``h1``.. (3 by default), each a namespace with a Consul client agent and one node
  process (``voltha-gevent run --ledger-file``) that talks to its own agent on 127.0.0.1.

The nodes run :class:`~voltha_gevent.testing.ledger.LedgerWork`: every item ticks into the
node's ledger file every ``tick`` seconds while its ownership is valid. The bed judges the
cluster by those files only (:class:`~voltha_gevent.testing.ledger_audit.LedgerIndex`):
it is **converged** when every item has exactly one run that acted within the last
:data:`LIVE_WINDOW`, every expected node runs at least one item, and no run started or ended
for :data:`STABLE_FOR` seconds. Consul itself is read only for the faults' targets (Raft
leader, voltha leader) and for the serf/session timings reported in each fault's notes.

Each fault (:meth:`PartitionBed.run_fault`) starts from a converged, healed bed, injects,
holds, heals, waits (bounded) for convergence, and records a :class:`FaultRun`: recovery
seconds from the ledger, overlaps (double runs) that began during it, token regressions.

The parts: :mod:`~voltha_gevent.testing.netbed_members` (the agents and node processes in
their namespaces), :mod:`~voltha_gevent.testing.netbed_faults` (the fault catalog),
:mod:`~voltha_gevent.testing.netbed_runs` (a fault's record and the table of runs).

Only processes started here are signalled, by pid; :meth:`PartitionBed.stop` stops them all,
then deletes every namespace and link. Every wait and loop is bounded.
"""

from __future__ import annotations

import base64
import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from ..lifecycle import StartStop
from .agents import AgentStartupError, find_consul_binary
from .ledger import control_path_for
from .ledger_audit import LedgerIndex, audit_index, recovery_seconds
from .netbed_faults import VOTER_TIMEOUT, PartitionFaults
from .netbed_members import CONSUL_HTTP_PORT, HTTP_TIMEOUT, SERVERS, NsConsul, NsNode
from .netbed_runs import FaultRun
from .netns import Fabric

log = structlog.get_logger(__name__)

#: Node settings for the bed: short timings that satisfy ``Config``'s fencing budget.
PARTITION_SETTINGS = {
    "VOLTHA_SESSION_TTL": "10",
    "VOLTHA_CHECK_TTL": "2",
    "VOLTHA_LOCK_DELAY": "2",
    "VOLTHA_STOP_TIMEOUT": "1.5",
    "VOLTHA_SOAK": "0.5",
    "VOLTHA_MAX_SOAK_DELAY": "3",
    "VOLTHA_WORKER_SOAK": "0.1",
    "VOLTHA_WATCH_WAIT": "10",
    "VOLTHA_HANDOVER_TIMEOUT": "10",
    # a loop blocked for BLOCK_SECONDS is a wedge here: the heartbeat thread stops signalling
    # after 2 s and the node must be fenced and its items taken over (the busy-but-alive case,
    # where the session is kept, is tests/integration/test_heartbeat_thread_real.py)
    "VOLTHA_MAX_LOOP_STALL": "2",
    "VOLTHA_LOG_FORMAT": "json",
}
#: An item's run counts as live when it acted this recently.
LIVE_WINDOW = 1.0
#: Converged means no run started or ended for this long.
STABLE_FOR = 1.5
#: Pause between two looks while waiting or holding a fault.
POLL = 0.25
#: Bounds of the bed's own waits.
STARTUP_TIMEOUT = 90.0
SETTLE_TIMEOUT = 60.0


class PartitionBed(PartitionFaults, StartStop):
    """Servers, hosts, ledgers and faults; see the module docstring."""

    def __init__(self, workdir: Path, *, hosts: int = 3, items: int = 60, tick: float = 0.05,
                 binary: str | None = None, prefix: str = "netbed/voltha") -> None:
        self.workdir = Path(workdir)
        self.binary = binary or find_consul_binary()
        self.hosts = [f"h{i}" for i in range(1, hosts + 1)]
        self.items = [f"item{i:03d}" for i in range(1, items + 1)]
        self.tick = tick
        self.prefix = prefix
        self.fabric = Fabric()
        self.servers: dict[str, NsConsul] = {}
        self.agents: dict[str, NsConsul] = {}
        self.nodes: dict[str, NsNode] = {}
        self.retired: list[NsNode] = []
        self.index = LedgerIndex()
        self.runs: list[FaultRun] = []
        self.problems: list[str] = []
        self.unreachable: set[str] = set()  # members cut off from the servers right now
        self.frozen: set[str] = set()  # hosts whose node is SIGSTOPped or blocked
        self.down: set[str] = set()  # hosts whose node is stopped on purpose

    # Set-up and tear-down

    def start(self) -> PartitionBed:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fabric.create([*SERVERS, *self.hosts])
        server_addresses = [self.fabric.addresses[s] for s in SERVERS]
        for s in SERVERS:
            self.servers[s] = NsConsul(self.fabric, s, self.binary, self.workdir, server=True,
                                       join=server_addresses)
            self.servers[s].process.start()
        self._wait(self.raft_leader, STARTUP_TIMEOUT, "the servers elected no Raft leader")
        for h in self.hosts:
            self.agents[h] = NsConsul(self.fabric, h, self.binary, self.workdir, server=False,
                                      join=server_addresses)
            self.agents[h].process.start()
        self._wait(lambda: all(self.serf_status(h) == "passing" for h in self.hosts), STARTUP_TIMEOUT,
                   "the client agents did not join")
        for item in self.items:
            self.consul("PUT", f"/v1/kv/{self.prefix}/workload/{item}", body=f"value-{item}".encode())
        for h in self.hosts:
            self.nodes[h] = self._new_node(h).start()
        if self.wait_converged(STARTUP_TIMEOUT) is None:
            raise AgentStartupError(f"the partition bed never converged\n{self.explain()}")
        return self

    def _new_node(self, host: str) -> NsNode:
        return NsNode(self.instance(host), self.fabric, host, self.workdir, prefix=self.prefix,
                      tick=self.tick, settings=PARTITION_SETTINGS)

    @staticmethod
    def instance(host: str) -> str:
        return "n" + host[1:]

    def stop(self) -> None:
        """Stop every process started here (by pid), then delete the fabric; idempotent."""
        for node in self.nodes.values():
            node.stop(grace=5.0)
        for agent in [*self.agents.values(), *self.servers.values()]:
            agent.signal(signal.SIGCONT)
            agent.process.stop()
        self.fabric.destroy()

    # Consul, read from a reachable server

    def consul(self, method: str, path: str, body: bytes | None = None) -> Any:
        """One call to the first server that answers; raises OSError when none does."""
        error: Exception | None = None
        for s in SERVERS:
            if s in self.unreachable:
                continue
            url = f"http://{self.fabric.addresses[s]}:{CONSUL_HTTP_PORT}{path}"
            request = urllib.request.Request(url, data=body, method=method)
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                    return json.loads(answer.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                error = exc
            except (OSError, ValueError) as exc:
                error = exc
        raise OSError(f"no server answered {method} {path}: {error}")

    def raft_leader(self) -> str | None:
        """The server (``s0``..) every reachable server names as Raft leader, or None."""
        seen = set()
        for s in SERVERS:
            if s in self.unreachable:
                continue
            try:
                url = f"http://{self.fabric.addresses[s]}:{CONSUL_HTTP_PORT}/v1/status/leader"
                with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                    seen.add(json.loads(answer.read() or b'""'))
            except (OSError, ValueError):
                return None
        by_address = {f"{self.fabric.addresses[s]}:8300": s for s in SERVERS}
        return by_address.get(seen.pop()) if len(seen) == 1 else None

    def all_voters(self) -> bool:
        try:
            raft = self.consul("GET", "/v1/operator/raft/configuration")
        except OSError:
            return False
        servers = (raft or {}).get("Servers") or []
        return len(servers) == len(SERVERS) and all(s.get("Voter") for s in servers)

    def leader_host(self) -> str | None:
        """The host whose node holds the voltha leader lock, or None."""
        try:
            entries = self.consul("GET", f"/v1/kv/{self.prefix}/leader")
        except OSError:
            return None
        if not entries or not entries[0].get("Session"):
            return None
        holder = base64.b64decode(entries[0].get("Value") or b"").decode("utf-8", "replace")
        return next((h for h in self.hosts if self.instance(h) == holder), None)

    def serf_status(self, host: str) -> str | None:
        try:
            checks = self.consul("GET", f"/v1/health/node/{host}") or []
        except OSError:
            return None
        return next((c.get("Status") for c in checks if c.get("CheckID") == "serfHealth"), None)

    def session_count(self, host: str) -> int | None:
        try:
            return len(self.consul("GET", f"/v1/session/node/{host}") or [])
        except OSError:
            return None

    # The ledger's view

    def ledger_files(self) -> list[Path]:
        return sorted({n.ledger_file for n in [*self.nodes.values(), *self.retired]})

    def feed(self) -> None:
        self.index.feed(self.ledger_files())

    def expected_hosts(self) -> list[str]:
        return [h for h in self.hosts if h not in self.down and h not in self.frozen
                and h not in self.unreachable and self.nodes[h].alive()]

    def converged(self) -> bool:
        """Every item on exactly one live run, every expected node busy, nothing changing."""
        self.feed()
        now = time.monotonic()
        if now - self.index.last_change < STABLE_FOR:
            return False
        live = self.index.live_runs(now, LIVE_WINDOW)
        load: dict[str, int] = {}
        for item in self.items:
            runs = live.get(item, [])
            if len(runs) != 1:
                return False
            load[runs[0].instance] = load.get(runs[0].instance, 0) + 1
        return all(load.get(self.instance(h), 0) > 0 for h in self.expected_hosts())

    def wait_converged(self, timeout: float = SETTLE_TIMEOUT) -> float | None:
        """Seconds until converged, or None after ``timeout``."""
        started = time.monotonic()
        if self._wait(self.converged, timeout, None):
            return time.monotonic() - started
        return None

    def owned_by(self, host: str) -> set[str]:
        self.feed()
        live = self.index.live_runs(time.monotonic(), LIVE_WINDOW)
        return {item for item, runs in live.items() if any(r.instance == self.instance(host) for r in runs)}

    # Running a fault

    def run_fault(self, fault: str, target: str, inject: Callable[[], None], heal: Callable[[], None],
                  hold: float, *, watch: str | None = None, settle: float = SETTLE_TIMEOUT) -> FaultRun:
        """Inject, hold ``hold`` seconds (watching host ``watch``'s serf and session), heal, settle."""
        self.ensure_healthy()
        victims = self.owned_by(target) if target in self.hosts else set()
        run = FaultRun(fault, target, time.monotonic())
        self.runs.append(run)
        log.info("netbed-fault", fault=fault, target=target)
        try:
            inject()
            self._hold(run, hold, watch)
        finally:
            heal()
            run.healed = time.monotonic()
        if self.wait_converged(settle) is not None:
            run.converged = time.monotonic()
        else:
            self.problems.append(f"{fault} on {target}: no convergence within {settle:.0f}s")
        self._conclude(run, victims)
        return run

    def _hold(self, run: FaultRun, seconds: float, watch: str | None) -> None:
        end = run.t0 + seconds
        for _ in range(int(seconds / POLL) + 10):
            now = time.monotonic()
            if now >= end:
                return
            if watch is not None:
                self._observe_serf(run, watch)
            time.sleep(min(POLL, max(0.0, end - time.monotonic())))

    def _observe_serf(self, run: FaultRun, host: str) -> None:
        if "serf_critical_s" not in run.notes and self.serf_status(host) not in ("passing", None):
            run.notes["serf_critical_s"] = time.monotonic() - run.t0
        if "session_gone_s" not in run.notes and self.session_count(host) == 0:
            run.notes["session_gone_s"] = time.monotonic() - run.t0

    def _conclude(self, run: FaultRun, victims: set[str]) -> None:
        self.feed()
        end = run.converged if run.converged is not None else time.monotonic()
        audit = audit_index(self.index)
        run.violations = audit.violations_between(run.t0, end)
        run.regressions = audit.regressions_between(run.t0, end)
        if run.converged is not None:
            run.recovery = recovery_seconds(self.index, run.t0, run.converged, items=self.items)
        if victims and run.target in self.hosts:
            self._note_takeover(run, victims)
        log.info("netbed-fault-done", fault=run.fault, target=run.target, recovery=run.recovery,
                 violations=len(run.violations), notes=run.notes)

    def _note_takeover(self, run: FaultRun, victims: set[str]) -> None:
        """When the cut-off node last acted on its items, and when others first and last took them."""
        me = self.instance(run.target)
        last_own = [r.last for i in victims for r in self.index.by_item.get(i, [])
                    if r.instance == me and r.start < run.t0]
        takeovers = []
        for item in victims:
            runs = self.index.by_item.get(item, [])
            starts = [r.start for r in runs if r.instance != me and r.start > run.t0]
            if starts:
                takeovers.append(min(starts))
        if last_own:
            run.notes["victim_last_effect_s"] = max(last_own) - run.t0
        if takeovers:
            run.notes["takeover_first_s"] = min(takeovers) - run.t0
            run.notes["takeover_last_s"] = max(takeovers) - run.t0

    def ensure_healthy(self) -> None:
        """Undo anything left over, restart dead nodes, and wait for convergence."""
        for member in [*SERVERS, *self.hosts]:
            self.fabric.heal(member)
        for h in self.hosts:
            self.agents[h].signal(signal.SIGCONT)
            self.nodes[h].signal(signal.SIGCONT)
            control_path_for(self.nodes[h].ledger_file).unlink(missing_ok=True)
            if not self.nodes[h].alive():
                if h not in self.down:
                    self.problems.append(f"{self.instance(h)} died on its own:\n{self.nodes[h].log_tail(15)}")
                self.restart_node(h)
        self.unreachable.clear()
        self.frozen.clear()
        self.down.clear()
        if not self._wait(self.all_voters, VOTER_TIMEOUT, None):
            self.problems.append("the servers are not all Raft voters")
        if self.wait_converged() is None:
            self.problems.append(f"not converged before a fault\n{self.explain()}")

    def restart_node(self, host: str) -> None:
        old = self.nodes[host]
        self.retired.append(old)
        self.nodes[host] = self._new_node(host).start()

    # Helpers

    def _wait(self, predicate: Callable[[], Any], timeout: float, failure: str | None) -> bool:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / POLL) + 10):
            if predicate():
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        if failure is not None:
            raise AgentStartupError(f"{failure} within {timeout:.0f}s\n{self.explain()}")
        return False

    def explain(self, lines: int = 8) -> str:
        parts = [f"problems: {self.problems}", f"fabric {self.fabric.prefix} {self.fabric.subnet}"]
        self.feed()
        live = self.index.live_runs(time.monotonic(), LIVE_WINDOW)
        counts: dict[str, int] = {}
        for runs in live.values():
            key = ",".join(sorted(r.instance for r in runs)) or "-"
            counts[key] = counts.get(key, 0) + 1
        parts.append(f"items by live owners: {counts}")
        for h, node in self.nodes.items():
            parts.append(f"--- {node.instance_id} on {h} (pid {node.pid}, alive {node.alive()})\n"
                         f"{node.log_tail(lines)}")
        return "\n".join(parts)


__all__ = ["PARTITION_SETTINGS", "PartitionBed"]
