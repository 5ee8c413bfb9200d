"""Ledger work: a handler whose every side effect lands in an append-only file, for an outside audit.

The audit that proves "at most one running owner per item" must not trust the code under
test, so the evidence is written by the *work* itself, not by the library: for each item it
runs, :class:`LedgerWork` appends one line per event to a ledger file that only it writes and
that :mod:`voltha_gevent.testing.ledger_audit` reads.

Events, per run of an item (one ``on_assigned`` call):

* effects - ``start``, then a ``tick`` every ``tick`` seconds (50 ms by default), and ``stop``
  when ``on_revoked`` tells the work to stop. An effect line is written **only right after**
  ``Ownership.valid()`` answered True, with its timestamp taken after that check and just
  before the write, so every effect line is an instant at which the work acted and believed
  it was the owner;
* observations - ``lapse`` when the work notices its ownership is no longer valid (it then
  ends by itself), ``killed`` when the library kills the work greenlet. They are not effects.

A line is ``t instance pid run item event token`` separated by single spaces (:data:`FIELDS`):
``t`` is ``time.monotonic()`` - CLOCK_MONOTONIC is host-wide on Linux, so lines of processes
in different network namespaces of one machine compare; ``run`` numbers the runs of one
process; ``token`` is the ownership's fencing token (0 when the library has none). Each line
is one ``os.write`` on an ``O_APPEND`` descriptor: unbuffered, so a SIGKILLed process loses
nothing it wrote, and lines (far below 4 KiB) never interleave between processes.

The ownership comes from ``voltha_gevent.lease.current_ownership()`` inside the work
greenlet, else from ``ownership_of(item)`` (``Node.ownership``). On a library without leases
:func:`ownership_source` falls back to :class:`HealthShim`, whose ``valid()`` is
``node.healthy`` and token 0 - what work could check before leases existed.

``install_block_trigger`` arms SIGUSR1 to block the event loop with an unpatched sleep: the
"handler that blocks the loop" fault of the partition bed.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.event
import structlog

from .ledger_audit import FIELDS, LedgerAudit, audit_ledger, recovery_seconds

log = structlog.get_logger(__name__)

#: Seconds between two ticks of a running item.
DEFAULT_TICK = 0.05
#: The longest tick: benches of 100,000 items tick seldom, or the ticks alone fill the CPU.
MAX_TICK = 60.0
#: How long ``on_revoked`` waits for the work to write its last line and end.
STOP_WAIT = 5.0
#: Lines must stay below PIPE_BUF-like sizes to be written atomically with O_APPEND.
MAX_LINE = 4000


class OwnershipLike(Protocol):
    """The part of ``voltha_gevent.lease.Ownership`` the ledger work uses."""

    token: int

    def valid(self) -> bool: ...

    def wait(self, seconds: float) -> bool: ...


OwnershipOf = Callable[[str], "OwnershipLike | None"]


class HealthShim:
    """Ownership for a library without leases: valid while ``node.healthy``, token 0.

    It is what an application could check before ``Node.ownership`` existed; the audit
    shows where that is not enough.
    """

    def __init__(self, node: Any, item: str) -> None:
        self.node = node
        self.item = item
        self.value: bytes | None = None
        self.token = 0
        self.deadline = math.inf

    def valid(self) -> bool:
        return bool(self.node.healthy)

    def wait(self, seconds: float) -> bool:
        gevent.sleep(seconds)
        return self.valid()


def ownership_source(node: Any) -> OwnershipOf:
    """``node.ownership`` when the library has it, else a :class:`HealthShim` factory."""
    lookup = getattr(node, "ownership", None)
    if callable(lookup):
        return lookup  # type: ignore[no-any-return]
    return lambda item: HealthShim(node, item)


def _current_ownership() -> OwnershipLike | None:
    """The library's ownership bound to this greenlet, when the library has leases."""
    try:
        from ..lease import current_ownership
    except ImportError:
        return None
    return current_ownership()  # type: ignore[no-any-return]


class LedgerFile:
    """One append-only ledger file: one ``os.write`` per line on an ``O_APPEND`` descriptor."""

    def __init__(self, path: str | Path, instance_id: str) -> None:
        self.path = Path(path)
        self.instance_id = instance_id
        self.pid = os.getpid()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, t: float, run: int, item: str, event: str, token: int) -> None:
        line = f"{t:.6f} {self.instance_id} {self.pid} {run} {item} {event} {token}\n".encode()
        if len(line) > MAX_LINE:
            raise ValueError(f"ledger line too long ({len(line)} bytes) for item {item[:40]!r}")
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class _Run:
    number: int
    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    done: gevent.event.Event = field(default_factory=gevent.event.Event)


class LedgerWork:
    """An ``AssignmentHandler`` whose work ticks into a ledger file (see the module docstring).

    ``on_assigned`` runs the work in the library's work greenlet and returns when the work
    ends. ``on_revoked`` first sleeps ``revoke_delay`` seconds (the control file, when it
    exists, overrides it with the float it holds) while the work keeps ticking, then tells the
    work to stop and waits for its last line.
    """

    def __init__(self, instance_id: str, path: str | Path, ownership_of: OwnershipOf | None = None, *,
                 tick: float = DEFAULT_TICK, revoke_delay: float = 0.0,
                 control_path: str | Path | None = None) -> None:
        if not 0 < tick <= MAX_TICK:
            raise ValueError(f"tick must be in (0, {MAX_TICK:g}] seconds")
        self.ledger = LedgerFile(path, instance_id)
        self.ownership_of = ownership_of
        self.tick = tick
        self.revoke_delay = revoke_delay
        self.control_path = Path(control_path) if control_path else None
        self._runs = itertools.count(1)
        self._active: dict[str, list[_Run]] = {}

    def attach(self, node: Any) -> None:
        """Take ownerships from ``node`` (``Node.ownership``, or the health shim)."""
        self.ownership_of = ownership_source(node)

    def on_assigned(self, item: str, value: bytes | None) -> None:
        run = _Run(next(self._runs))
        ownership = _current_ownership() or (self.ownership_of(item) if self.ownership_of else None)
        token = int(getattr(ownership, "token", 0) or 0)
        self._active.setdefault(item, []).append(run)
        try:
            if ownership is None:
                self._observe(run, item, "lapse", token)
                return
            self._work(run, item, ownership, token)
        except gevent.GreenletExit:
            self._observe(run, item, "killed", token)
            raise
        finally:
            run.done.set()
            runs = self._active.get(item, [])
            if run in runs:
                runs.remove(run)
            if not runs:
                self._active.pop(item, None)

    def on_revoked(self, item: str) -> None:
        runs = list(self._active.get(item, []))
        if not runs:
            return
        delay = self._revoke_delay()
        if delay > 0:
            gevent.sleep(delay)
        for run in runs:
            run.stop.set()
        for run in runs:
            run.done.wait(STOP_WAIT)

    def _work(self, run: _Run, item: str, ownership: OwnershipLike, token: int) -> None:
        if not self._effect(run, item, "start", ownership, token):
            return
        while True:
            if run.stop.is_set():
                self._effect(run, item, "stop", ownership, token)
                return
            if not ownership.wait(self.tick):
                self._observe(run, item, "lapse", token)
                return
            if run.stop.is_set():
                continue
            if not self._effect(run, item, "tick", ownership, token):
                return

    def _effect(self, run: _Run, item: str, event: str, ownership: OwnershipLike, token: int) -> bool:
        """Write an effect line if, and only if, the ownership is valid right now."""
        if not ownership.valid():
            self._observe(run, item, "lapse", token)
            return False
        self.ledger.write(time.monotonic(), run.number, item, event, token)
        return True

    def _observe(self, run: _Run, item: str, event: str, token: int) -> None:
        self.ledger.write(time.monotonic(), run.number, item, event, token)

    def _revoke_delay(self) -> float:
        if self.control_path is None:
            return self.revoke_delay
        try:
            text = self.control_path.read_text().strip()
        except FileNotFoundError:
            return self.revoke_delay
        except OSError as exc:
            log.warning("ledger-control-unreadable", path=str(self.control_path), error=str(exc))
            return self.revoke_delay
        try:
            return max(0.0, float(text))
        except ValueError:
            log.warning("ledger-control-invalid", path=str(self.control_path), content=text[:40])
            return self.revoke_delay


def block_loop(seconds: float) -> None:
    """Block the whole event loop for ``seconds`` with the unpatched ``time.sleep``."""
    from gevent import monkey

    log.warning("ledger-loop-blocking", seconds=seconds)
    monkey.get_original("time", "sleep")(seconds)
    log.warning("ledger-loop-unblocked", seconds=seconds)


def install_block_trigger(seconds: float, signum: int = signal.SIGUSR1) -> None:
    """On ``signum``, a greenlet blocks the event loop for ``seconds`` (a stuck handler)."""
    gevent.signal_handler(signum, block_loop, seconds)


def control_path_for(ledger_path: str | Path) -> Path:
    """The revoke-delay control file that goes with a ledger file."""
    return Path(f"{ledger_path}.revoke-delay")


__all__ = [
    "DEFAULT_TICK",
    "FIELDS",
    "HealthShim",
    "LedgerAudit",
    "LedgerFile",
    "LedgerWork",
    "audit_ledger",
    "block_loop",
    "control_path_for",
    "install_block_trigger",
    "ownership_source",
    "recovery_seconds",
]
