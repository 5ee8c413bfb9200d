"""Benchmark of the assignment function against its two baselines.

For K items x N equal-weight members it measures, for the plain consistent-hash ring,
plain bounded loads (same epsilon, no stickiness) and the project's
``desired_assignment``:

* compute time (median of several runs, ring cache cleared so the ring build is
  included) and microseconds per item; for ``desired_assignment`` also the sticky
  recompute after a join, which is what the leader runs on a membership change;
* balance: max and min of load / weighted share, initially and after the join;
* movement when one member leaves / one joins, as a ratio to the optimum (the
  leaver's items; K / (N + 1)).  Baselines recompute from scratch (they have no
  ``current``); ``desired_assignment`` is given the previous result as ``current``.

Usage: ``python bench/bench_assignment.py [--quick] [--json PATH]``.  ``run(quick)``
returns ``{"assignment": {...}}`` for a bench runner to merge into bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voltha_gevent import assignment as asg  # noqa: E402
from voltha_gevent import hash_ring  # noqa: E402
from voltha_gevent.load_stats import load_stats  # noqa: E402

FULL_K = (1_000, 10_000, 100_000)
QUICK_K = (1_000, 10_000)
GRID_N = (3, 10, 100)
FULL_RUNS = 5
QUICK_RUNS = 2
POLICY = asg.AssignmentPolicy()

Algo = Callable[[Mapping[str, float], list[str], Mapping[str, str] | None], dict[str, str]]

ALGOS: dict[str, Algo] = {
    "plain_ring": lambda m, i, c: hash_ring.plain_ring_assignment(m, i, POLICY.vnodes),
    "plain_bounded": lambda m, i, c: asg.plain_bounded_assignment(m, i, POLICY.epsilon, POLICY.vnodes),
    "desired": lambda m, i, c: asg.desired_assignment(m, i, c, POLICY),
}


def _timed(fn: Callable[[], dict[str, str]], runs: int) -> tuple[float, dict[str, str]]:
    """Median wall time over ``runs`` cold calls (ring cache cleared) and the result."""
    times = []
    result: dict[str, str] = {}
    for _ in range(runs):
        hash_ring.build_ring.cache_clear()  # include the ring build: the cold, post-change cost
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _moved(before: Mapping[str, str], after: Mapping[str, str]) -> int:
    return sum(1 for item, owner in before.items() if after.get(item) != owner)


def _measure(name: str, algo: Algo, k: int, n: int, runs: int) -> dict:
    """One table row: time, balance, leave and join movement ratios."""
    members = {f"m{i}": 1.0 for i in range(n)}
    items = [f"item-{i}" for i in range(k)]
    seconds, before = _timed(lambda: algo(members, items, None), runs)
    stats = load_stats(before, members)

    leaver = f"m{n // 2}"
    survivors = {m: w for m, w in members.items() if m != leaver}
    after_leave = algo(survivors, items, before)
    leave_opt = sum(1 for owner in before.values() if owner == leaver)

    joined = dict(members, joiner=1.0)
    join_seconds, after_join = _timed(lambda: algo(joined, items, before), runs)
    join_opt = k / (n + 1)
    join_stats = load_stats(after_join, joined)
    return {
        "algo": name,
        "K": k,
        "N": n,
        "t_ms": round(seconds * 1e3, 2),
        "us_per_item": round(seconds * 1e6 / k, 3),
        "t_join_ms": round(join_seconds * 1e3, 2),
        "max_over_mean": round(stats.max_over_mean, 4),
        "min_over_mean": round(stats.min_over_mean, 4),
        "leave_ratio": round(_moved(before, after_leave) / leave_opt, 4) if leave_opt else None,
        "join_ratio": round(_moved(before, after_join) / join_opt, 4),
        "join_max_over_mean": round(join_stats.max_over_mean, 4),
        "join_min_over_mean": round(join_stats.min_over_mean, 4),
    }


def run(quick: bool) -> dict:
    """Measure the grid; quick: K in {1k, 10k}, 2 runs (well under 30 s)."""
    runs = QUICK_RUNS if quick else FULL_RUNS
    rows = [
        _measure(name, algo, k, n, runs)
        for k in (QUICK_K if quick else FULL_K)
        for n in GRID_N
        for name, algo in ALGOS.items()
    ]
    sys.stdout.write(format_table(rows))
    params = {"epsilon": POLICY.epsilon, "vnodes": POLICY.vnodes, "sticky": POLICY.sticky, "runs": runs}
    return {"assignment": {"quick": quick, "policy": params, "rows": rows}}


_COLUMNS = (
    ("K", "{:>7}"),
    ("N", "{:>4}"),
    ("algo", "{:<14}"),
    ("t_ms", "{:>9}"),
    ("us_per_item", "{:>11}"),
    ("t_join_ms", "{:>9}"),
    ("max_over_mean", "{:>13}"),
    ("min_over_mean", "{:>13}"),
    ("leave_ratio", "{:>11}"),
    ("join_ratio", "{:>10}"),
    ("join_max_over_mean", "{:>18}"),
    ("join_min_over_mean", "{:>18}"),
)


def format_table(rows: list[dict]) -> str:
    """Plain-text table, one row per (K, N, algorithm)."""
    header = " ".join(fmt.format(col) for col, fmt in _COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(" ".join(fmt.format("-" if row[col] is None else row[col]) for col, fmt in _COLUMNS))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grid, 2 runs (< 30 s)")
    parser.add_argument("--json", type=Path, help="also write the result dict to this path")
    args = parser.parse_args(argv)
    result = run(args.quick)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
