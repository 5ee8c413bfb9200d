"""The exec guard: one small process per child of exec mode, so the child stops in budget even
when its node cannot stop it.

Why a process of its own: a node that is SIGSTOPped, SIGKILLed or wedged runs no code, and a
child process does not freeze or die with its parent. Something outside the node's event
loop has to stop it before another node may take the item over. The guard is that thing; it
sits between the node and the child (``node -> guard -> child``), runs nothing but a 50 ms
poll loop, and never needs the node to act:

* the node tells it the lease deadline (``time.monotonic()`` seconds; CLOCK_MONOTONIC is
  host-wide, and the guard is the node's child, so both read the same clock) over a pipe,
  the **lease pipe**: one line ``d <deadline>`` each time the lease moves forward, written by
  a native thread of the node (:mod:`voltha_gevent.exec_work`), ``stop`` for a revocation
  (``stop value changed`` when a changed value replaces the child), and ``signal <number>``
  for a reload signal to the group. A frozen node writes nothing, so the guard acts on the
  last deadline it got; deadlines only ever move forward;
* the read end is the only copy the guard holds of that pipe and the node is the only
  writer, so the node's death - any death, SIGKILL included - is an end of file at once.

What it does (``grace`` is the node's ``stop_timeout`` less :data:`STOP_MARGIN`)::

    now >= deadline            SIGTERM to the child's process group, SIGKILL at deadline + grace
    "stop", end of file,       SIGTERM now, SIGKILL at min(now + grace, deadline + grace)
      or SIGTERM to the guard
    the child exits by itself  the rest of its group gets the same treatment
    group empty and reaped     the guard exits with the child's status (128 + signal when a
                               signal ended it, 127/126 when it could not be run)

The group is the child's own (``setpgid`` before ``exec``); the guard is a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so members orphaned inside the group are reparented to it and
reaped by it: "the group is gone" is checked with ``kill(-pgid, 0)`` after reaping, and only
then does the guard exit - and only then does the node release the item's owner lock.

The budget (:mod:`voltha_gevent.budget`): the last deadline a frozen or dead node gave is at
most ``t0 + lease``, so the group is killed by ``t0 + lease + grace`` and reaped one poll
later, ``t0 + lease + stop_timeout - STOP_MARGIN + POLL``, inside
``fenced_by = t0 + lease + stop_timeout + FENCE_MARGIN <= takeover = t0 + trust + lock_delay``.

Limits: a process that leaves the group (``setsid``) is out of reach; if the guard itself is
SIGKILLed the child leader gets SIGKILL too (``PR_SET_PDEATHSIG``) but its own children do
not. The node starts each guard in a session of its own, so terminal job control (Ctrl-Z,
Ctrl-C) and signals to the node's process group do not reach it.

The guard is started by path (``python -I -S .../exec_guard.py``), not with ``-m``: it uses
the standard library only, so it starts in milliseconds without importing gevent or Consul.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

#: Seconds between two looks at the lease pipe, the clock and the group.
POLL = 0.05
#: ``grace = stop_timeout - STOP_MARGIN``: the group is gone before the node's stop budget ends.
STOP_MARGIN = 0.4
#: Exit statuses when the command could not be run (as a shell reports them), and when the
#: lease was already over (or a stop already asked for) before the child was started.
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE, EXIT_NOT_STARTED = 127, 126, 125
#: Linux prctl options.
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def grace_for(stop_timeout: float) -> float:
    """The SIGTERM-to-SIGKILL grace the guard gets for a node's ``stop_timeout``."""
    return max(0.0, stop_timeout - STOP_MARGIN)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Guard:
    """Runs one command in its own process group and ends the group on the rules above."""

    def __init__(self, lease_fd: int, deadline: float, grace: float, command: Sequence[str]) -> None:
        self.lease_fd: int | None = lease_fd
        self.deadline = deadline
        self.grace = grace
        self.command = list(command)
        self.kill_at = math.inf
        self.terminating = False
        self.killed = False
        self.status: int | None = None  # the leader's wait status, once reaped
        self.pgid = 0
        self._pending = b""

    def run(self) -> int:
        """Start the child and guard it; the exit status to pass on."""
        libc = _libc()
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        signal.signal(signal.SIGTERM, lambda *_: self.terminate("guard got SIGTERM"))
        self._read_lease(0.0)
        if self.terminating or time.monotonic() >= self.deadline:
            return _fail("lease over or stop requested before the start: not started", EXIT_NOT_STARTED)
        try:
            child = subprocess.Popen(self.command, preexec_fn=_child_setup(libc, os.getpid()))
        except FileNotFoundError as exc:
            return _fail(f"cannot run {self.command[0]!r}: {exc.strerror}", EXIT_NOT_FOUND)
        except PermissionError as exc:
            return _fail(f"cannot run {self.command[0]!r}: {exc.strerror}", EXIT_NOT_EXECUTABLE)
        self.pgid = child.pid
        try:
            return self._guard(child)
        except BaseException:
            self._signal(signal.SIGKILL)  # whatever went wrong here, the group does not outlive us
            raise

    def _guard(self, child: subprocess.Popen[bytes]) -> int:
        while True:
            self._read_lease(POLL)
            self._reap(child)
            now = time.monotonic()
            if self.status is not None:
                self.terminate("")  # the leader ended: whatever is left of its group goes too
            if now >= self.deadline:
                self.terminate("lease deadline passed")
            if self.terminating and not self.killed and now >= self.kill_at:
                self._signal(signal.SIGKILL)
                self.killed = True
            if self.status is not None and self._group_gone():
                return _exit_status(self.status)

    def terminate(self, why: str) -> None:
        """SIGTERM to the group now; SIGKILL at ``min(now, deadline) + grace`` (idempotent)."""
        now = time.monotonic()
        self.kill_at = min(self.kill_at, min(now, self.deadline) + self.grace)
        if self.terminating:
            return
        self.terminating = True
        if why:
            left = max(0.0, self.kill_at - now)
            _say(f"{why}: SIGTERM to process group {self.pgid}, SIGKILL in {left:.2f}s")
        self._signal(signal.SIGTERM)

    def _read_lease(self, timeout: float) -> None:
        if self.lease_fd is None:
            time.sleep(timeout)
            return
        ready, _, _ = select.select([self.lease_fd], [], [], timeout)
        if not ready:
            return
        data = os.read(self.lease_fd, 4096)
        if not data:
            os.close(self.lease_fd)
            self.lease_fd = None
            self.terminate("node gone (lease pipe closed)")
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self._message(line.decode("ascii", "replace").split())

    def _message(self, words: list[str]) -> None:
        if words[:1] == ["d"] and len(words) == 2:
            try:
                self.deadline = max(self.deadline, float(words[1]))
            except ValueError:
                pass
        elif words[:1] == ["stop"]:
            self.terminate(f"stop requested ({' '.join(words[1:]) or 'item revoked'})")
        elif words[:1] == ["signal"] and len(words) == 2 and words[1].isdigit() and not self.terminating:
            if int(words[1]) in signal.valid_signals():  # a reload signal; none to a group ending
                self._signal(int(words[1]))

    def _reap(self, child: subprocess.Popen[bytes]) -> None:
        """Reap every child that ended (the leader and orphans reparented to us)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == child.pid:
                self.status = status
                child.returncode = _exit_status(status)  # reaped here; Popen must not wait again

    def _signal(self, signum: int) -> None:
        if self.pgid <= 0:
            return  # no child yet: killpg(0) would signal the guard's own group
        try:
            os.killpg(self.pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_gone(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _child_setup(libc: ctypes.CDLL, guard_pid: int) -> Callable[[], None]:
    """``preexec_fn``: own process group, SIGKILL when the guard dies."""

    def setup() -> None:
        os.setpgid(0, 0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != guard_pid:  # the guard died before prctl took effect
            os._exit(1)

    return setup


def _exit_status(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _say(message: str) -> None:
    """One line for the node's log. Never raises: when the node is gone its end of stderr is
    closed, and a guard that died of the broken pipe would leave its child unguarded."""
    try:
        sys.stderr.write(f"voltha-exec-guard: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _fail(message: str, code: int) -> int:
    _say(message)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="exec_guard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lease-fd", type=int, required=True, help="read end of the lease pipe")
    parser.add_argument("--deadline", type=float, required=True, help="lease deadline, time.monotonic()")
    parser.add_argument("--grace", type=float, required=True, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    return Guard(args.lease_fd, args.deadline, args.grace, command).run()


if __name__ == "__main__":
    sys.exit(main())
