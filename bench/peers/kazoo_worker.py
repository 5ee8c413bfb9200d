"""A kazoo SetPartitioner worker that runs ledger work on every item it acquires.

``python -m bench.peers.kazoo_worker --hosts H:P --path /p --items M --instance ID --ledger F``

The peer of ``voltha-gevent run --ledger-file``: the same
:class:`~voltha_gevent.testing.ledger.LedgerWork` writes the same start/tick/lapse lines, so one
analyzer reads both systems. The worker is kazoo's documented recipe loop, nothing tuned:

* ``ALLOCATING``: wait for the partitioner to acquire (kazoo takes one lock after another);
* ``ACQUIRED``: start the work of every item of the partition, then wait for a state change;
* ``RELEASE`` (the party changed, or the connection was suspended): end every item's work,
  then ``release_set()``; kazoo re-partitions the whole set, so every member stops all its
  items, not only the ones that move;
* ``FAILURE`` (session lost, or a lock could not be had): end the work and exit 3.

An item's ownership is valid while the partition it came with is held and the client is
connected; the main loop revokes it *before* calling ``on_revoked``, as voltha-gevent's
revocation does, so the work ends at once (a ``lapse`` line) instead of after a tick.

SIGTERM is the graceful leave: end the work, ``finish()`` (release the locks, leave the
party), close the session, exit 0. The session timeout is ``--session-timeout`` (4 s).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - imports follow the monkey-patching
import argparse
import signal
import sys
import types
from collections.abc import Sequence

import gevent
import gevent.event

# The kazoo process has no voltha-gevent lease: without this stub LedgerWork's first item
# would import voltha_gevent.lease, and with it the Consul client (~90 ms of a cold start).
_stub = types.ModuleType("voltha_gevent.lease")
_stub.current_ownership = lambda: None  # type: ignore[attr-defined]
sys.modules.setdefault("voltha_gevent.lease", _stub)

from kazoo.client import KazooClient, KazooState
from kazoo.handlers.gevent import SequentialGeventHandler
from kazoo.recipe.partitioner import SetPartitioner

from bench._analysis import item_names
from voltha_gevent.testing.ledger import LedgerWork

#: How long the worker waits for a state change before it looks again (a bound, not a poll).
STATE_WAIT = 1.0
#: How long the client may take to connect at start.
CONNECT_TIMEOUT = 15.0
EXIT_FAILURE = 3


class Partition:
    """The ownership of every item of one acquired partition (``OwnershipLike``)."""

    token = 0

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self.ended = gevent.event.Event()

    def valid(self) -> bool:
        return not self.ended.is_set() and self.client.state == KazooState.CONNECTED

    def wait(self, seconds: float) -> bool:
        self.ended.wait(seconds)
        return self.valid()


class Worker:
    """The recipe loop (see the module docstring); ``stop()`` is the graceful leave."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = KazooClient(hosts=args.hosts, timeout=args.session_timeout,
                                  handler=SequentialGeventHandler())
        self.work = LedgerWork(args.instance, args.ledger, tick=args.tick)
        self.partition: Partition | None = None
        self.running: dict[str, gevent.Greenlet] = {}
        self.stopping = gevent.event.Event()

    def run(self) -> int:
        self.client.add_listener(self._state_changed)
        self.client.start(timeout=CONNECT_TIMEOUT)
        partitioner = SetPartitioner(self.client, self.args.path, set(item_names(self.args.items)),
                                     identifier=self.args.instance,
                                     time_boundary=self.args.time_boundary)
        try:
            return self._loop(partitioner)
        finally:
            self._end_work()
            partitioner.finish()
            self.client.stop()
            self.client.close()

    def _loop(self, partitioner: SetPartitioner) -> int:
        changed = partitioner.state_change_event
        while not self.stopping.is_set():
            changed.clear()
            if partitioner.failed:
                sys.stderr.write(f"{self.args.instance}: partitioner failed (session lost?)\n")
                return EXIT_FAILURE
            if partitioner.release:
                self._end_work()
                partitioner.release_set()
            elif partitioner.acquired:
                self._start_work(list(partitioner))
                gevent.wait([changed, self.stopping], count=1, timeout=STATE_WAIT)
            else:
                gevent.wait([changed, self.stopping], count=1, timeout=STATE_WAIT)
        return 0

    def _start_work(self, items: list[str]) -> None:
        if self.partition is None:
            partition = self.partition = Partition(self.client)
            self.work.ownership_of = lambda item: partition
            for item in items:
                self.running[item] = gevent.spawn(self.work.on_assigned, item, None)

    def _end_work(self) -> None:
        """Revoke the partition, then wait for every item's work to end (``on_revoked``)."""
        if self.partition is None:
            return
        self.partition.ended.set()
        stoppers = [gevent.spawn(self.work.on_revoked, item) for item in self.running]
        gevent.joinall(stoppers)
        gevent.joinall(list(self.running.values()))
        self.running.clear()
        self.partition = None

    def stop(self) -> None:
        self.stopping.set()

    def _state_changed(self, state: str) -> None:
        """Log session state changes; a ``LOST`` one not caused by our own stop is a session loss."""
        lost = state == KazooState.LOST and not self.stopping.is_set()
        note = " kazoo-session-lost" if lost else ""
        sys.stderr.write(f"{self.args.instance}: kazoo-state {state}{note}\n")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.kazoo_worker",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", required=True, help="ZooKeeper host:port")
    parser.add_argument("--path", required=True, help="the partitioner's znode path")
    parser.add_argument("--items", type=int, required=True, help="workload size (device_group_NNNNNN)")
    parser.add_argument("--instance", required=True, help="party identifier, also the ledger's instance")
    parser.add_argument("--ledger", required=True, help="ledger file to append to")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between ledger ticks")
    parser.add_argument("--time-boundary", type=float, default=1.0, help="SetPartitioner time_boundary")
    parser.add_argument("--session-timeout", type=float, default=4.0, help="ZooKeeper session timeout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    worker = Worker(parse(argv))
    gevent.signal_handler(signal.SIGTERM, worker.stop)
    gevent.signal_handler(signal.SIGINT, worker.stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
