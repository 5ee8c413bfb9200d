"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print, write JSON.

Each ``bench/bench_<name>.py`` module exposes ``run(quick: bool) -> dict`` and prints its
own table; this runner calls them in order, merges their dicts and writes
``bench/results.json`` with the machine it ran on. Nothing here fails on a number.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything imports requests: the benches run greenlets on sockets

# ruff: noqa: E402 - imports follow the monkey-patching
import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

SECTIONS = ("assignment", "orchestration", "failover", "idle", "watch", "dispatch", "scale", "peers")
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    results: dict = {"machine": _machine(), "quick": args.quick, "started": time.time()}
    for name in args.only or SECTIONS:
        try:
            module = importlib.import_module(f"bench.bench_{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.bench_{name}":
                raise
            continue
        sys.stdout.write(f"\n== {name} ==\n")
        sys.stdout.flush()
        started = time.monotonic()
        results.update(module.run(args.quick))
        sys.stdout.write(f"({name}: {time.monotonic() - started:.1f} s)\n")
    args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"\nwrote {args.json}\n")
    return 0


def _machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "processor": platform.processor()}


if __name__ == "__main__":
    sys.exit(main())
