"""The driver of the scale and peers benches: one cluster of worker processes, its phases, its costs.

One :class:`Trial` starts N worker processes of one system against its coordination service,
with a workload of M items, and runs phases in order:

* ``cold``: every member is started at once; the clock runs from the first spawn;
* ``leave``: SIGTERM to one member that is not the leader (a graceful leave);
* ``join``: that member is started again;
* ``crash``: SIGKILL to another member that is not the leader.

Each phase ends when every item is owned exactly once, every member that should run owns at
least one item, and the ledgers have been quiet for ``quiet`` seconds - or when its limit
runs out, which is reported (``converged`` False), never raised. The figures come from
the ledgers (:mod:`bench._analysis`); the quiet wait only decides when to stop looking.

Costs recorded per phase: the coordination service's requests (Consul's HTTP request counts
from its Prometheus metrics; ZooKeeper's ``zk_packets_received``), peak RSS of the leader, of
the other workers and of the service (``VmRSS`` from /proc), session losses (voltha-gevent's
``voltha_session_losses_total``; kazoo: ``LOST`` states its worker did not cause itself). Per
trial: pool-full warnings, leadership changes and unexpected exits, counted in the logs.

Only processes started here are signalled, by pid; every wait has a limit; :meth:`Trial.close`
stops whatever is still running (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.pool

from bench._analysis import Phase, Tenures, item_names, phase
from bench._common import cpu_seconds
from voltha_gevent.testing.agents import CONSUL_ENV_VARS, DevAgent, free_port
from voltha_gevent.testing.processes import ChildProcess, NodeProcess

REPO = Path(__file__).resolve().parents[1]
#: Ledger ticks per second across the whole cluster we aim for: ticks are evidence for the
#: double-ownership audit, but 100,000 items ticking every second would fill the CPU.
TICKS_PER_SECOND = 4000.0
MIN_TICK, MAX_TICK = 0.25, 60.0
#: Grace between SIGTERM and SIGKILL when a trial stops its members.
STOP_GRACE = 15.0
#: How long a metrics scrape may take before the last value is kept.
SCRAPE_TIMEOUT = 5.0
#: Dev agent telemetry: cumulative Prometheus counts of every HTTP request it served.
CONSUL_TELEMETRY = 'telemetry { prometheus_retention_time = "2h" disable_hostname = true }'
POOL_FULL = "Connection pool is full"
#: How many request kinds (method + path) a phase reports, the most frequent first.
TOP_KINDS = 4


def voltha_settings(soak: float, *, check_ttl: float = 3.0, lock_delay: float = 1.0,
                    stop_timeout: float = 1.5, worker_soak: float = 0.1) -> dict[str, str]:
    """Node settings for a comparison at soak ``soak``: check TTL 3 s, lock-delay 1 s, worker soak 0.1 s.

    The fencing budget (:mod:`voltha_gevent.budget`) must hold or a node refuses to start:
    when lock-delay 1 s does not fit, stop_timeout is lowered first, then lock-delay raised
    in half seconds, to the smallest setting :meth:`Config.load` accepts.
    """
    from voltha_gevent.config import Config
    from voltha_gevent.errors import ConfigError

    base = {"VOLTHA_SOAK": f"{soak:g}", "VOLTHA_MAX_SOAK_DELAY": f"{max(30.0, 6 * soak):g}",
            "VOLTHA_WORKER_SOAK": f"{worker_soak:g}", "VOLTHA_SESSION_TTL": "10",
            "VOLTHA_CHECK_TTL": f"{check_ttl:g}", "VOLTHA_HANDOVER_TIMEOUT": "30", "VOLTHA_WATCH_WAIT": "10"}
    candidates = [(lock_delay, stop_timeout), (lock_delay, 0.5)]
    candidates += [(lock_delay + 0.5 * k, 0.5) for k in range(1, 9)]
    for delay, stop in candidates:
        settings = {**base, "VOLTHA_LOCK_DELAY": f"{delay:g}", "VOLTHA_STOP_TIMEOUT": f"{stop:g}"}
        try:
            Config.load(environ={**settings, "VOLTHA_INSTANCE_ID": "bench"})
        except ConfigError:
            continue
        return settings
    raise RuntimeError("no lock_delay up to 5 s satisfies the fencing budget with check TTL "
                       f"{check_ttl:g} s")


def describe(settings: dict[str, str]) -> str:
    """The timing settings of a voltha-gevent run, for a table's footnote."""
    def get(name: str) -> str:
        return settings[f"VOLTHA_{name}"]

    return (f"soak {get('SOAK')} s, worker soak {get('WORKER_SOAK')} s, check TTL {get('CHECK_TTL')} s, "
            f"lock-delay {get('LOCK_DELAY')} s, stop_timeout {get('STOP_TIMEOUT')} s")


def tick_for(items: int) -> float:
    """The ledger tick for a workload (see :data:`TICKS_PER_SECOND`)."""
    return min(MAX_TICK, max(MIN_TICK, items / TICKS_PER_SECOND))


def rss_mib(pid: int | None) -> float | None:
    """Resident set size of ``pid`` in MiB, from /proc/<pid>/status; None when it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def prometheus_values(text: str) -> dict[str, float]:
    """Sum of samples per metric name (labels dropped) from Prometheus text format."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def http_text(url: str, timeout: float = SCRAPE_TIMEOUT) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - loopback only
            return answer.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None


@dataclass(frozen=True)
class Requests:
    """Requests a coordination service served so far: the total, and per kind (count, seconds)."""

    total: int
    by_kind: dict[str, tuple[int, float]] = field(default_factory=dict)

    def since(self, earlier: Requests | None) -> dict[str, Any] | None:
        """The requests served after ``earlier``, with the most frequent kinds (blocking queries'
        service time includes their wait, so time is shown but does not rank)."""
        if earlier is None:
            return None
        kinds = {}
        for kind, (count, seconds) in self.by_kind.items():
            count0, seconds0 = earlier.by_kind.get(kind, (0, 0.0))
            if count > count0:
                kinds[kind] = (count - count0, round(seconds - seconds0, 3))
        top = dict(sorted(kinds.items(), key=lambda kv: -kv[1][0])[:TOP_KINDS])
        return {"total": self.total - earlier.total, "top": top}


def consul_requests(text: str) -> Requests:
    """HTTP requests per method and path from the agent's Prometheus metrics (summaries, in ms)."""
    by_kind: dict[str, tuple[int, float]] = {}
    values = prometheus_values(text)
    for name, count in values.items():
        if not (name.startswith("consul_http_") and name.endswith("_count")) or "agent_metrics" in name:
            continue
        kind = name[len("consul_http_"):-len("_count")]
        by_kind[kind] = (int(count), values.get(f"consul_http_{kind}_sum", 0.0) / 1000.0)
    return Requests(sum(c for c, _ in by_kind.values()), by_kind)


# -- members ---------------------------------------------------------------------------------------


class Member(Protocol):
    """One worker process of a trial."""

    instance_id: str
    log_path: Path

    @property
    def pid(self) -> int | None: ...

    def start(self) -> Any: ...

    def alive(self) -> bool: ...

    def signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...

    def stop(self, grace: float = 10.0) -> int | None: ...


class LedgerNode(NodeProcess):
    """``voltha-gevent run`` with ledger work instead of the demo handler (no dispatcher)."""

    def __init__(self, instance_id: str, consul: str, workdir: Path, *, prefix: str,
                 settings: dict[str, str], ledger: Path, tick: float) -> None:
        super().__init__(instance_id, consul, workdir, prefix=prefix, settings=settings)
        self.ledger = ledger
        self.tick = tick

    def start(self) -> LedgerNode:
        if self.alive():
            return self
        argv = [sys.executable, "-m", "voltha_gevent", "run", "--embedded-consul", "never",
                "--ledger-file", str(self.ledger), "--ledger-tick", f"{self.tick:g}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def metrics(self) -> dict[str, float] | None:
        text = http_text(f"http://127.0.0.1:{self.rest_port}/metrics")
        return prometheus_values(text) if text is not None else None


class KazooMember(ChildProcess):
    """``python -m bench.peers.kazoo_worker``: kazoo's SetPartitioner with ledger work."""

    def __init__(self, instance_id: str, hosts: str, workdir: Path, *, path: str, items: int,
                 ledger: Path, tick: float, time_boundary: float, session_timeout: float) -> None:
        self.instance_id = instance_id
        self.log_path = workdir / f"{instance_id}.log"
        self.argv = [sys.executable, "-m", "bench.peers.kazoo_worker", "--hosts", hosts, "--path", path,
                     "--items", str(items), "--instance", instance_id, "--ledger", str(ledger),
                     "--tick", f"{tick:g}", "--time-boundary", f"{time_boundary:g}",
                     "--session-timeout", f"{session_timeout:g}"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> KazooMember:
        if self.alive():
            return self
        env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, cwd=REPO, env=env, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        return self


# -- systems ---------------------------------------------------------------------------------------


class System(Protocol):
    """A coordination service plus the way its workers are made and observed."""

    name: str
    service_pid: int | None

    def seed(self, items: list[str]) -> None: ...

    def member(self, instance_id: str, workdir: Path, items: int, tick: float) -> Member: ...

    def requests(self) -> Requests | None: ...

    def member_metrics(self, member: Member) -> dict[str, float] | None: ...

    def session_losses(self, members: dict[str, Member], metrics: dict[int, dict[str, float]]) -> int | None:
        """Sessions lost so far by every process of ``members`` (``metrics``: last scrape per pid)."""

    def close(self) -> None: ...


class Voltha:
    """voltha-gevent node processes on one Consul dev agent (started here, with telemetry)."""

    name = "voltha-gevent"

    def __init__(self, prefix: str, settings: dict[str, str]) -> None:
        self.prefix = prefix
        self.settings = settings
        self.agent = DevAgent(extra_args=("-hcl", CONSUL_TELEMETRY)).start()

    @property
    def service_pid(self) -> int | None:
        return self.agent.pid

    def seed(self, items: list[str]) -> None:
        """Write the workload keys, 64 per transaction, a few transactions in flight."""
        url = f"http://{self.agent.http_addr}/v1/txn"

        def put(batch: list[str]) -> None:
            body = json.dumps([{"KV": {"Verb": "set", "Key": f"{self.prefix}/workload/{i}", "Value": ""}}
                               for i in batch]).encode()
            request = urllib.request.Request(url, data=body, method="PUT")
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback only
                answer.read()

        pool = gevent.pool.Pool(4)
        for start in range(0, len(items), 64):
            pool.spawn(put, items[start:start + 64])
        pool.join(raise_error=True)

    def member(self, instance_id: str, workdir: Path, items: int, tick: float) -> LedgerNode:
        return LedgerNode(instance_id, self.agent.http_addr, workdir, prefix=self.prefix,
                          settings=self.settings, ledger=workdir / f"{instance_id}.ledger", tick=tick)

    def requests(self) -> Requests | None:
        text = http_text(f"http://{self.agent.http_addr}/v1/agent/metrics?format=prometheus")
        return consul_requests(text) if text is not None else None

    def member_metrics(self, member: Member) -> dict[str, float] | None:
        return member.metrics() if isinstance(member, LedgerNode) else None

    def session_losses(self, members: dict[str, Member], metrics: dict[int, dict[str, float]]) -> int | None:
        counts = [int(m["voltha_session_losses_total"]) for m in metrics.values()
                  if "voltha_session_losses_total" in m]
        return sum(counts) if counts else None

    def close(self) -> None:
        self.agent.stop()


class ZooKeeper:
    """A standalone ZooKeeper server on 127.0.0.1 (free port, temporary data dir), by pid."""

    def __init__(self, java: str, classpath: str, workdir: Path, startup_timeout: float = 60.0) -> None:
        self.port = free_port()
        self.dir = workdir / "zookeeper"
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        config = self.dir / "zoo.cfg"
        # tickTime 1 s lets sessions of 2-20 s; forceSync off matches the dev agent's in-memory
        # Raft log; no admin server (it needs Jetty); mntr for the request count.
        config.write_text(
            f"tickTime=1000\ndataDir={self.dir / 'data'}\nclientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\nadmin.enableServer=false\nforceSync=no\n"
            "maxClientCnxns=0\n4lw.commands.whitelist=ruok,mntr,srvr\n")
        self.log_path = self.dir / "zookeeper.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [java, "-Xmx512m", "-cp", classpath, "org.apache.zookeeper.server.ZooKeeperServerMain",
                 str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while self.four_letters("ruok") != "imok":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError("ZooKeeper did not start: " + " | ".join(tail))
            time.sleep(0.2)

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def four_letters(self, word: str, timeout: float = 2.0) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
                conn.sendall(word.encode())
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks).decode("utf-8", "replace")
        except OSError:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class Kazoo:
    """kazoo SetPartitioner workers on one standalone ZooKeeper."""

    name = "kazoo"

    def __init__(self, zookeeper: ZooKeeper, path: str, time_boundary: float,
                 session_timeout: float = 4.0) -> None:
        self.zookeeper = zookeeper
        self.path = path
        self.time_boundary = time_boundary
        self.session_timeout = session_timeout

    @property
    def service_pid(self) -> int | None:
        return self.zookeeper.process.pid

    def seed(self, items: list[str]) -> None:
        """Nothing to write: a SetPartitioner is given its set by every member."""

    def member(self, instance_id: str, workdir: Path, items: int, tick: float) -> KazooMember:
        return KazooMember(instance_id, self.zookeeper.hosts, workdir, path=self.path, items=items,
                           ledger=workdir / f"{instance_id}.ledger", tick=tick,
                           time_boundary=self.time_boundary, session_timeout=self.session_timeout)

    def requests(self) -> Requests | None:
        text = self.zookeeper.four_letters("mntr")
        match = re.search(r"^zk_packets_received\s+(\d+)", text or "", re.M)
        return Requests(int(match.group(1))) if match else None

    def member_metrics(self, member: Member) -> dict[str, float] | None:
        return None

    def session_losses(self, members: dict[str, Member], metrics: dict[int, dict[str, float]]) -> int | None:
        return sum(_read(m.log_path).count("kazoo-session-lost") for m in members.values())

    def close(self) -> None:
        """The ZooKeeper server belongs to the caller (one server serves several trials)."""


# -- the trial -------------------------------------------------------------------------------------


@dataclass
class Limits:
    cold: float = 120.0
    event: float = 60.0
    quiet: float = 2.0
    poll: float = 0.2


@dataclass
class Costs:
    """What the processes cost during one phase."""

    rss_peak: dict[int, float] = field(default_factory=dict)  # pid -> MiB
    service_rss_peak: float = 0.0
    #: CPU seconds (utime + stime) per pid when the phase began (absent: started during it)
    cpu_start: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)

    @classmethod
    def starting_now(cls, pids: Sequence[int]) -> Costs:
        """Costs of a phase that begins now, with ``pids`` (and the service) already running."""
        costs = cls()
        for pid in pids:
            seconds = _cpu(pid)
            if seconds is not None:
                costs.cpu_start[pid] = seconds
        return costs

    def sample(self, pids: Sequence[int], service_pid: int | None) -> None:
        for pid in [*pids, *([service_pid] if service_pid else [])]:
            seconds = _cpu(pid)
            if seconds is not None:
                self.cpu_last[pid] = seconds
                if pid == service_pid:
                    self.cpu_start.setdefault(pid, seconds)  # the service ran before the phase
        for pid in pids:
            rss = rss_mib(pid)
            if rss is not None and rss > self.rss_peak.get(pid, 0.0):
                self.rss_peak[pid] = rss
        service = rss_mib(service_pid)
        if service is not None:
            self.service_rss_peak = max(self.service_rss_peak, service)

    def cpu_seconds(self, pid: int) -> float:
        """CPU ``pid`` spent in the phase (as last sampled)."""
        return max(0.0, self.cpu_last.get(pid, 0.0) - self.cpu_start.get(pid, 0.0))


def _cpu(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return None


class Trial:
    """N members of one system on M items through the phases of the module docstring."""

    def __init__(self, system: System, members: int, items: int, workdir: Path, limits: Limits,
                 *, progress: Callable[[str], None] | None = None) -> None:
        self.system = system
        self.n = members
        self.m = items
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self.items = item_names(items)
        self.tick = tick_for(items)
        self.members: dict[str, Member] = {
            f"w{i:02d}": system.member(f"w{i:02d}", workdir, items, self.tick) for i in range(1, members + 1)}
        self.tenures = Tenures(self.items)
        self.all_pids: dict[int, str] = {}  # every pid ever started -> member name
        self.expected: set[str] = set()  # members that should be running
        self.last_metrics: dict[int, dict[str, float]] = {}
        self.unexpected_exits: list[str] = []
        self.progress = progress or (lambda text: None)
        self.leader_pids: set[int] = set()

    # -- observation ---------------------------------------------------------------------------

    def ledgers(self) -> list[Path]:
        return sorted(self.workdir.glob("*.ledger"))

    def observe(self, costs: Costs) -> None:
        """Feed new ledger lines, note processes that ended, sample RSS."""
        self.tenures.feed(self.ledgers())
        for name, member in self.members.items():
            pid = member.pid
            if pid is not None and pid not in self.tenures.deaths and not member.alive():
                self.tenures.feed(self.ledgers())
                self.tenures.mark_dead(pid, time.monotonic())
                if name in self.expected:
                    self.expected.discard(name)
                    self.unexpected_exits.append(f"{name} (pid {pid}) exited with {self._code(member)}")
        costs.sample([m.pid for m in self.members.values() if m.pid is not None and m.alive()],
                     self.system.service_pid)

    @staticmethod
    def _code(member: Member) -> Any:
        process = getattr(member, "process", None)
        return process.returncode if process is not None else None

    def converged(self, t0: float, leavers: Sequence[int]) -> bool:
        """Every item owned once, by the members that should run, none by ``leavers``, quiet."""
        t = self.tenures
        if t.off or any(t.owned_by(pid) for pid in leavers):
            return False
        if self.m >= self.n:
            for name in self.expected:
                pid = self.members[name].pid
                if pid is None or t.owned_by(pid) == 0:
                    return False
        return time.monotonic() - max(t0, t.last_change) >= self.limits.quiet

    def wait(self, t0: float, limit: float, costs: Costs, leavers: Sequence[int] = ()) -> bool:
        deadline = t0 + limit
        while True:
            self.observe(costs)
            if self.converged(t0, leavers):
                return True
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(self.limits.poll)

    def scrape(self) -> None:
        """Every running member's metrics, kept per pid (a killed member keeps its last)."""
        members = [m for m in self.members.values() if m.alive() and m.pid is not None]
        jobs = [gevent.spawn(self.system.member_metrics, m) for m in members]
        gevent.joinall(jobs, timeout=SCRAPE_TIMEOUT * 2)
        for member, job in zip(members, jobs, strict=True):
            values = job.value if job.successful() else None
            if values is not None and member.pid is not None:
                self.last_metrics[member.pid] = values
                if values.get("voltha_is_leader"):
                    self.leader_pids.add(member.pid)

    def session_losses(self) -> int | None:
        """Session losses of every process of the trial so far."""
        return self.system.session_losses(self.members, self.last_metrics)

    def leader(self) -> str | None:
        for name in self.expected:
            pid = self.members[name].pid
            if pid is not None and self.last_metrics.get(pid, {}).get("voltha_is_leader"):
                return name
        return None

    def watch_bytes_per_change(self) -> float | str:
        """The leader's watch bytes per change, when the nodes expose them."""
        leader = self.leader()
        values = self.last_metrics.get(self.members[leader].pid or -1, {}) if leader else {}
        size = sum(v for k, v in values.items() if "watch" in k and "bytes" in k)
        changes = sum(v for k, v in values.items() if k.startswith("voltha_watch_changes"))
        if not any("watch" in k and "bytes" in k for k in values):
            return "not exposed"
        return size / changes if changes else size

    # -- phases ----------------------------------------------------------------------------------

    def _start(self, name: str) -> int:
        member = self.members[name]
        member.start()
        assert member.pid is not None
        self.all_pids[member.pid] = name
        self.expected.add(name)
        return member.pid

    def _phase(self, name: str, t0: float, before: dict, costs: Costs, requests0: Requests | None,
               losses0: int | None, limit: float, **kwargs: Any) -> Phase:
        done = self.wait(t0, limit, costs, kwargs.get("leavers", ()))
        self.scrape()
        result = phase(name, self.tenures, before, t0, converged=done, **kwargs)
        requests1 = self.system.requests()
        served = requests1.since(requests0) if requests1 is not None else None
        losses1 = self.session_losses()
        leader = self.leader()
        leader_pid = self.members[leader].pid if leader else None
        workers = [v for pid, v in costs.rss_peak.items() if pid != leader_pid]
        service_pid = self.system.service_pid
        node_pids = [pid for pid in costs.cpu_last if pid != service_pid]
        result.extra.update({
            "nodes_cpu_s": sum(costs.cpu_seconds(pid) for pid in node_pids) or None,
            "leader_cpu_s": costs.cpu_seconds(leader_pid) if leader_pid in costs.cpu_last else None,
            "service_cpu_s": costs.cpu_seconds(service_pid) if service_pid in costs.cpu_last else None,
            "requests": served["total"] if served else None,
            "requests_top": served["top"] if served else None,
            "session_losses": (losses1 - losses0) if losses0 is not None and losses1 is not None else None,
            "leader_rss_mib": costs.rss_peak.get(leader_pid) if leader_pid else None,
            "worker_rss_mib": max(workers) if workers else None,
            "service_rss_mib": costs.service_rss_peak or None,
            "waited_s": time.monotonic() - t0,
        })
        self.progress(f"{self.system.name} {self.m:,} x {self.n} {name}: "
                      + (f"{result.seconds:.2f} s" if result.seconds is not None else
                         f"not converged in {limit:.0f} s ({result.owned:,} of {self.m:,} owned once)"))
        return result

    def run(self, events: Sequence[str] = ("leave", "join", "crash")) -> dict[str, Any]:
        """Run the phases; a phase that does not converge ends the trial (reported, not raised)."""
        self.system.seed(self.items)
        out: dict[str, Any] = {"members": self.n, "items": self.m, "tick_s": self.tick}
        requests0, losses0 = self.system.requests(), 0
        costs = Costs()
        t0 = time.monotonic()
        for name in self.members:
            self._start(name)
        cold = self._phase("cold", t0, {}, costs, requests0, losses0, self.limits.cold, optimum=self.m)
        first = self.tenures.first_start()
        cold.extra["first_item_s"] = first - t0 if first is not None else None
        out["cold"] = cold.as_dict()
        ok = cold.converged
        victim: str | None = None
        for event in events:
            if not ok:
                out[event] = {"converged": False, "skipped": "an earlier phase did not converge"}
                continue
            result, victim = self._event(event, victim)
            out[event] = result.as_dict()
            ok = result.converged
        out.update(self._trial_totals())
        return out

    def _victim(self, exclude: str | None) -> str:
        """The last running member that is neither the leader nor ``exclude``."""
        leader = self.leader()
        names = sorted(self.expected)
        for name in reversed(names):
            if name not in (leader, exclude):
                return name
        return names[-1]

    def _event(self, event: str, previous: str | None) -> tuple[Phase, str]:
        self.scrape()
        costs = Costs.starting_now([m.pid for m in self.members.values() if m.pid is not None and m.alive()])
        requests0, losses0 = self.system.requests(), self.session_losses()
        self.tenures.feed(self.ledgers())
        before = self.tenures.snapshot()
        if event == "join":
            assert previous is not None
            name = previous
            t0 = time.monotonic()
            pid = self._start(name)
            return self._phase(event, t0, before, costs, requests0, losses0, self.limits.event,
                               joiners=[pid], optimum=self.m // len(self.expected)), name
        name = self._victim(exclude=previous)
        member = self.members[name]
        pid = member.pid
        assert pid is not None
        self.expected.discard(name)
        t0 = time.monotonic()
        if event == "crash":
            member.kill()
            self.tenures.feed(self.ledgers())
            self.tenures.mark_dead(pid, time.monotonic())
        else:
            member.signal(signal.SIGTERM)
        result = self._phase(event, t0, before, costs, requests0, losses0, self.limits.event, leavers=[pid])
        code = member.stop(STOP_GRACE)  # a leaver may linger after its items moved: let it end
        self.tenures.feed(self.ledgers())
        self.tenures.mark_dead(pid, time.monotonic())
        result.extra["exit_code"] = code
        return result, name

    def _trial_totals(self) -> dict[str, Any]:
        self.tenures.feed(self.ledgers())
        items, overlaps = self.tenures.double_owned()
        logs = {name: _read(m.log_path) for name, m in self.members.items()}
        return {
            "double_owned_items": items, "double_owned_overlaps": overlaps,
            "pool_full_warnings": sum(text.count(POOL_FULL) for text in logs.values()),
            "leaderships": sum(text.count('"became-leader"') for text in logs.values()),
            "session_lost_logs": sum(text.count('"session-lost"') for text in logs.values()),
            "unexpected_exits": self.unexpected_exits,
            "watch_bytes_per_change": self.watch_bytes_per_change(),
            "ledger_lines": self.tenures.effects + self.tenures.lapses + self.tenures.kills,
        }

    def close(self) -> None:
        """Stop every member still running (SIGTERM, SIGKILL after STOP_GRACE), then the system."""
        members = [m for m in self.members.values() if m.alive()]
        jobs = [gevent.spawn(m.stop, STOP_GRACE) for m in members]
        gevent.joinall(jobs, timeout=STOP_GRACE + 15)
        for member in members:
            member.kill()
        self.system.close()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
