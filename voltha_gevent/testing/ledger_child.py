"""A child program for exec mode tests: it ticks into a ledger file until it is told to stop.

``python ledger_child.py LEDGER [--tick S] [--ignore-term] [--exit-after S] [--spawn-grandchild]
[--reload-on-hup]``

It writes the lines of :mod:`voltha_gevent.testing.ledger` (``t instance pid run item event
token``, one ``os.write`` on an ``O_APPEND`` descriptor each): ``start``, a ``tick`` every
``--tick`` seconds, and ``stop`` when SIGTERM arrives (then it exits 0). Identity comes from
exec mode's environment (``VOLTHA_INSTANCE_ID``, ``VOLTHA_ITEM``, ``VOLTHA_FENCE_TOKEN``);
``run`` is always 1, as every run is a new pid. A child cannot check a lease, so every line it
writes is an effect: the audit then shows whether the exec guard ended the child before
another node started the item.

Test knobs: ``--ignore-term`` ignores SIGTERM (only SIGKILL ends it), ``--exit-after`` exits
with status 3 after that many seconds (a crashing program), ``--spawn-grandchild`` starts a
``sleep`` in its process group (the guard must reap it too) and writes its pid to stdout.
It writes ``started item=I value=V`` (V: its stdin) to stdout; ``--reload-on-hup`` makes SIGHUP
re-read ``VOLTHA_ITEM_VALUE_FILE`` and write ``reloaded item=I value=V`` (live values).
Standard library only, run by path: it starts fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ledger")
    parser.add_argument("--tick", type=float, default=0.05)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--exit-after", type=float, default=0.0)
    parser.add_argument("--spawn-grandchild", action="store_true")
    parser.add_argument("--reload-on-hup", action="store_true")
    args = parser.parse_args()
    item = os.environ.get("VOLTHA_ITEM", "?")
    instance = os.environ.get("VOLTHA_INSTANCE_ID", "?")
    token = int(os.environ.get("VOLTHA_FENCE_TOKEN", "0") or 0)
    fd = os.open(args.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def write(event: str) -> None:
        os.write(fd, f"{time.monotonic():.6f} {instance} {pid} 1 {item} {event} {token}\n".encode())

    stopping: list[bool] = []
    hups: list[bool] = []
    if args.reload_on_hup:
        signal.signal(signal.SIGHUP, lambda *_: hups.append(True))
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    if args.spawn_grandchild:
        grandchild = subprocess.Popen(["sleep", "600"])
        sys.stdout.write(f"grandchild {grandchild.pid}\n")
        sys.stdout.flush()
    value = sys.stdin.read()
    sys.stdout.write(f"started item={item} value={value!r}\n")
    sys.stdout.flush()
    write("start")
    began = time.monotonic()
    while not stopping:
        time.sleep(args.tick)
        if stopping:
            break
        if args.exit_after and time.monotonic() - began >= args.exit_after:
            return 3
        write("tick")
        if hups:
            hups.clear()
            with open(os.environ["VOLTHA_ITEM_VALUE_FILE"]) as handle:
                sys.stdout.write(f"reloaded item={item} value={handle.read()!r}\n")
            sys.stdout.flush()
    write("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
