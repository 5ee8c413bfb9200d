"""Peers: kazoo's SetPartitioner on ZooKeeper beside voltha-gevent on Consul, one driver, one analyzer.

Both systems run the same ledger work in worker processes (``bench/peers/kazoo_worker.py``
and ``voltha-gevent run --ledger-file``) under the same driver (:mod:`bench._driver`), and
every figure is read from their ledgers by the same analyzer (:mod:`bench._analysis`). At
T = 1 s and T = 5 s:

* 1,000 items x 3 workers: cold start, graceful leave (SIGTERM of a member that is not the
  leader), the join back, crash (SIGKILL of another member);
* 10,000 items x 10 workers: cold start.

kazoo: SetPartitioner(time_boundary=T), session timeout 4 s, kazoo 2.x with its gevent
handler, on a standalone ZooKeeper from Debian's packages (``scripts/install-zookeeper.sh``;
tickTime 1 s, forceSync off like the dev agent's in-memory log). voltha-gevent: soak T,
check TTL 3 s, lock-delay 1 s, worker soak 0.1 s (:func:`bench._driver.voltha_settings`).
Each trial gets a fresh service. The ratio is voltha-gevent / kazoo, from this one run.

Where kazoo, a JRE or ZooKeeper cannot be had, the section prints ``peers: not run: <why>``
and returns; ``--quick`` skips it (starting a JVM and two systems is not a smoke test).
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import _common  # first: monkey-patches before requests is imported
from bench._driver import REPO, Kazoo, Limits, System, Trial, Voltha, ZooKeeper, describe, voltha_settings

T_VALUES = (1.0, 5.0)
SESSION_TIMEOUT = 4.0
#: (items, workers, limits, phases after the cold start)
SMALL = (1_000, 3, Limits(cold=90, event=60, poll=0.2), ("leave", "join", "crash"))
LARGE = (10_000, 10, Limits(cold=240, event=60, poll=0.25), ())
INSTALLER = REPO / "scripts" / "install-zookeeper.sh"
SYSTEMS = ("kazoo", "voltha-gevent")


def run(quick: bool) -> dict:
    if quick:
        return not_run("--quick (the full `make bench` runs ZooKeeper and kazoo)")
    why, java, classpath = prerequisites()
    if why:
        return not_run(why)
    _common.quiet_logs()
    results: dict[str, Any] = {"run": True, "session_timeout_s": SESSION_TIMEOUT, "trials": {}}
    with tempfile.TemporaryDirectory(prefix="voltha-bench-peers-") as tmp:
        for t in T_VALUES:
            for items, workers, limits, events in (SMALL, LARGE):
                for system_name in SYSTEMS:
                    key = f"{system_name} {items}x{workers} T={t:g}"
                    workdir = Path(tmp) / key.replace(" ", "_")
                    results["trials"][key] = trial(system_name, t, items, workers, limits, events, workdir,
                                                   java, classpath)
    results["voltha_settings"] = {f"T={t:g}": voltha_settings(t) for t in T_VALUES}
    headers = ("scenario", "T (s)", "kazoo", "voltha-gevent", "ratio")
    _common.emit(_common.table(headers, rows(results["trials"])))
    ours = describe(voltha_settings(1.0)).replace("soak 1 s", "soak T")
    _common.emit(f"(kazoo SetPartitioner(time_boundary=T), session timeout {SESSION_TIMEOUT:g} s, ZooKeeper "
                 f"standalone; voltha-gevent: {ours}; ratio = voltha-gevent / kazoo; one run)\n")
    return {"peers": results}


def not_run(why: str) -> dict:
    _common.emit(f"peers: not run: {why}\n")
    return {"peers": {"run": False, "why": why}}


def prerequisites() -> tuple[str | None, str, str]:
    """(why not, java, classpath): kazoo importable, a JRE and ZooKeeper's jars installed."""
    if importlib.util.find_spec("kazoo") is None:
        return "kazoo is not installed (pip install -e '.[bench]', as `make bench` does)", "", ""
    try:
        done = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{INSTALLER.name} could not run: {exc}", "", ""
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if done.returncode != 0 or not found.get("java") or not found.get("classpath"):
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return f"no ZooKeeper or JRE: {reason}", "", ""
    return None, found["java"], found["classpath"]


def trial(system_name: str, t: float, items: int, workers: int, limits: Limits, events: tuple[str, ...],
          workdir: Path, java: str, classpath: str) -> dict[str, Any]:
    """One trial on a fresh service; a service that will not start is reported, not raised."""
    zookeeper: ZooKeeper | None = None
    system: System
    try:
        if system_name == "kazoo":
            zookeeper = ZooKeeper(java, classpath, workdir)
            system = Kazoo(zookeeper, "/bench/peers", t, SESSION_TIMEOUT)
        else:
            system = Voltha("bench/peers", voltha_settings(t))
    except RuntimeError as exc:
        _common.emit(f"  {system_name}: service did not start: {exc}\n")
        return {"error": str(exc)}
    runner = Trial(system, workers, items, workdir / "trial", limits,
                   progress=lambda text: _common.emit(f"  {text} (T={t:g})\n"))
    try:
        return runner.run(events)
    finally:
        runner.close()
        if zookeeper is not None:
            zookeeper.stop()


def rows(trials: dict[str, dict[str, Any]]) -> list[tuple]:
    """The comparison table, one row per (figure, T)."""
    def get(system: str, size: str, t: float) -> dict[str, Any]:
        return trials.get(f"{system} {size} T={t:g}", {})

    def seconds(p: dict[str, Any] | None) -> Any:
        if not p or p.get("skipped") or "converged" not in p:
            return "n/a"
        return p["seconds"] if p["converged"] else "none"

    figures = [
        ("crash of a worker, 1,000 x 3", "1000x3", lambda o: seconds(o.get("crash"))),
        ("graceful leave, 1,000 x 3", "1000x3", lambda o: seconds(o.get("leave"))),
        ("join, 1,000 x 3", "1000x3", lambda o: seconds(o.get("join"))),
        ("cold start, 1,000 x 3", "1000x3", lambda o: seconds(o.get("cold"))),
        ("cold start, 10,000 x 10", "10000x10", lambda o: seconds(o.get("cold"))),
        ("moved / optimum: leave", "1000x3", lambda o: _field(o, "leave", "movement")),
        ("moved / optimum: crash", "1000x3", lambda o: _field(o, "crash", "movement")),
        ("survivors' items interrupted: crash", "1000x3", lambda o: _field(o, "crash", "interrupted")),
        ("requests per item, cold 10,000 x 10", "10000x10", lambda o: _per_item(o)),
        ("peak worker RSS MiB, 10,000 x 10", "10000x10", lambda o: _field(o, "cold", "worker_rss_mib")),
        ("service RSS MiB, 10,000 x 10", "10000x10", lambda o: _field(o, "cold", "service_rss_mib")),
        ("session losses (all phases, both sizes)", "", None),
        ("double-owned items (all phases, both sizes)", "", None),
    ]
    out = []
    for label, size, read in figures:
        for t in T_VALUES:
            if read is None:
                field = "session_losses" if label.startswith("session") else "double_owned_items"
                values = [_total(trials, system, t, field) for system in SYSTEMS]
            else:
                values = [read(get(system, size, t)) for system in SYSTEMS]
            out.append((label, f"{t:g}", *values, _ratio(values[1], values[0])))
    return out


def _field(outcome: dict[str, Any], phase: str, name: str) -> Any:
    value = (outcome.get(phase) or {}).get(name)
    return "n/a" if value is None else value


def _per_item(outcome: dict[str, Any]) -> Any:
    cold = outcome.get("cold") or {}
    requests = cold.get("requests")
    return requests / outcome["items"] if requests is not None and outcome.get("items") else "n/a"


def _total(trials: dict[str, dict[str, Any]], system: str, t: float, field: str) -> Any:
    total = 0
    for key, outcome in trials.items():
        if not key.startswith(system + " ") or not key.endswith(f"T={t:g}"):
            continue
        if field == "double_owned_items":
            total += outcome.get(field) or 0
        else:
            total += sum((outcome.get(p) or {}).get(field) or 0 for p in ("cold", "leave", "join", "crash"))
    return total


def _ratio(ours: Any, theirs: Any) -> Any:
    if isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs:
        return ours / theirs
    return ""


if __name__ == "__main__":
    run("--quick" in __import__("sys").argv)
