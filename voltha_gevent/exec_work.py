"""Exec mode: run any program once per owned item (``voltha-gevent run --exec 'CMD ARGS...'``).

:class:`ExecWork` is an :class:`~voltha_gevent.worker.AssignmentHandler` that supervises one
child process per item this node owns. The child gets, in its environment, ``VOLTHA_ITEM``,
``VOLTHA_FENCE_TOKEN`` (the ownership's fencing token), ``VOLTHA_INSTANCE_ID`` and
``VOLTHA_ITEM_VALUE_FILE`` (a private file holding the item's workload value, which is also
the child's stdin); ``{item}`` in the command's arguments is replaced by the item name. The
node's own secrets (``VOLTHA_CONSUL_TOKEN``, ``VOLTHA_DISPATCH_TOKEN``) are not passed on.
Each line the child writes to stdout or stderr is logged as ``exec-output`` with the item.

Why a guard process per child (:mod:`voltha_gevent.exec_guard`): the library fences a
greenlet at its next switch, but a child process does not freeze or die with its node, and a
SIGSTOPped or SIGKILLed node runs no code at all. The guard owns the child's process group
and ends it by itself on the lease deadline it last heard of, so a frozen or dead node's
children stop within the fencing budget; the formula is in that module's docstring.

Who feeds the guards: one native thread of this node (:class:`LeasePublisher`, not a
greenlet: a busy event loop must not starve the guards of deadlines while the heartbeat
thread keeps the lease) writes ``d <deadline>`` to every guard's lease pipe when the lease
moves forward. Revocation writes ``stop``: SIGTERM to the group, SIGKILL after
``stop_timeout - STOP_MARGIN``; the revoke barrier (:meth:`ExecWork.barrier`) returns only
once the guard has exited, which it does only once the whole group is reaped - so the owner
lock is released after that, never before (a barrier that times out keeps the lock: the
item is reported stuck until the group is gone).

A child that exits while the item is still owned is restarted after a backoff
(``retrying.backoff_step``, at least :data:`MIN_RESTART_DELAY`; the count starts again
after a run of :data:`HEALTHY_RUN` seconds)
and counted (:class:`ExecStats`, ``exec-child-exited``).

A changed workload value (:meth:`ExecWork.on_updated`) is renamed into the child's value file
(a reader sees the old value or the new one, never half of one); then the child is stopped as
a revocation stops it and started again at once with the new value on stdin - or, with
``reload_signal`` (``--exec-reload-signal HUP``), its group gets that signal from the guard
(which alone knows the group and reaps it: a reused process group id is never signalled).

Per child (:class:`_Child`)::

    registered (lease pipe open) --guard started--> running --guard reaped--> done
    any --stop (revocation, node stop)--> the guard ends the group --> done
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import gevent.pool
import gevent.subprocess
import structlog

from . import exec_guard
from .lease import Lease, Ownership, current_ownership, now
from .retrying import backoff_step

log = structlog.get_logger(__name__)

#: How often the publisher thread looks at the lease (a guard's view lags by at most this).
PUBLISH_INTERVAL = 0.1
#: A child that ran this long before it exited restarts after the shortest backoff again.
HEALTHY_RUN = 10.0
#: The shortest pause before a restart (a program that fails at once is not started 20 times a second).
MIN_RESTART_DELAY = 0.5
#: Longest output line logged (longer lines are cut).
MAX_LINE = 4096
#: How long the output readers may outlive their guard (a process that left the group).
READER_LINGER = 1.0
#: Environment variables of the node that a child must not see.
SECRET_ENV = ("VOLTHA_CONSUL_TOKEN", "VOLTHA_DISPATCH_TOKEN")


@dataclass
class ExecStats:
    """Counters of exec mode (``/metrics``: ``voltha_exec_*``)."""

    started: int = 0
    exited: int = 0  # ended by themselves while the item was still owned
    restarts: int = 0
    value_restarts: int = 0  # stopped and started again for a changed value
    value_signals: int = 0  # sent the reload signal for a changed value


def parse_command(text: str) -> list[str]:
    """``--exec`` text as argv (shell-like quoting, no shell); ValueError when empty."""
    argv = shlex.split(text)
    if not argv:
        raise ValueError("--exec needs a command")
    return argv


def parse_reload_signal(text: str) -> signal.Signals:
    """``--exec-reload-signal`` text (``HUP``, ``SIGUSR1``) as a signal; ValueError otherwise.

    SIGKILL and SIGSTOP are refused: a child cannot catch them, so it could not reload on them.
    """
    name = text.strip().upper()
    try:
        signum = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise ValueError(f"--exec-reload-signal {text!r} is not a signal name") from None
    if signum in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"--exec-reload-signal {signum.name}: a child cannot catch it to reload")
    return signum


class LeasePublisher:
    """A native thread that writes the lease deadline to every registered guard's pipe.

    Reads ``deadline`` before ``generation`` and ``live``: :meth:`Lease.begin` sets the
    generation before the deadline, so a deadline of a newer session is never sent to the
    guard of an older one. Writes are non-blocking; a full or broken pipe is skipped.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._lock = gevent.monkey.get_original("_thread", "allocate_lock")()
        self._sleep = gevent.monkey.get_original("time", "sleep")
        self._pipes: dict[int, tuple[int, float]] = {}  # fd -> (generation, last deadline sent)
        self._running = False
        self._stopping = False

    def add(self, fd: int, generation: int, deadline: float) -> None:
        os.set_blocking(fd, False)
        with self._lock:
            self._pipes[fd] = (generation, deadline)
        if not self._running:
            self._running = True
            gevent.monkey.get_original("_thread", "start_new_thread")(self._run, ())

    def send(self, fd: int, line: bytes) -> None:
        with self._lock:
            if fd in self._pipes:
                _write(fd, line)

    def close(self, fd: int) -> None:
        """Forget and close ``fd`` (under the lock: the thread never writes to a reused fd)."""
        with self._lock:
            if self._pipes.pop(fd, None) is not None:
                os.close(fd)

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            for fd in self._pipes:
                os.close(fd)
            self._pipes.clear()

    def _run(self) -> None:
        while not self._stopping:
            self.publish()
            self._sleep(PUBLISH_INTERVAL)
        self._running = False

    def publish(self) -> None:
        """One round: send each pipe the deadline when it moved forward (also called in tests)."""
        lease = self.lease
        deadline = lease.deadline
        generation, live = lease.generation, lease.live
        if not live:
            return
        with self._lock:
            for fd, (wanted, sent) in list(self._pipes.items()):
                if wanted == generation and deadline > sent and _write(fd, b"d %.6f\n" % deadline):
                    self._pipes[fd] = (wanted, deadline)


def _replace_file(path: Path, value: bytes | None, directory: Path) -> None:
    """Write ``value`` to a new private file in ``directory``, then rename it over ``path``."""
    fd, temporary = tempfile.mkstemp(dir=directory, suffix=".new")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(value or b"")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write(fd: int, line: bytes) -> bool:
    try:
        return os.write(fd, line) == len(line)
    except (BlockingIOError, BrokenPipeError):
        return False


class _Child:
    """One run of the command for one item: its lease pipe, value file and guard."""

    def __init__(self, item: str, number: int, value_path: Path, value: bytes | None) -> None:
        self.item = item
        self.number = number
        self.value_path = value_path
        self.value = value  # what its value file holds
        self.read_fd, self.write_fd = os.pipe()
        self.stop_requested = False
        self.replacing = False  # stopped for a changed value: start again at once
        self.guard: gevent.subprocess.Popen | None = None
        self.code: int | None = None
        self.done = gevent.event.Event()


class ExecWork:
    """Supervises one child process per owned item (see the module docstring).

    Before the node starts, give it the node's lease (``work.attach(node.lease)``: the guards
    are fed its deadline) and add its barrier (``node.add_revoke_barrier(work.barrier)``: an
    owner lock is released only once the item's process group is reaped); call :meth:`close`
    after ``node.stop()``. ``reload_signal``: a changed
    value is signalled to the child's group instead of restarting it (see the module docstring).
    """

    def __init__(self, command: Sequence[str], instance_id: str, *, stop_timeout: float,
                 environ: dict[str, str] | None = None, reload_signal: signal.Signals | None = None) -> None:
        self.command = list(command)
        self.instance_id = instance_id
        self.stop_timeout = stop_timeout
        self.reload_signal = reload_signal
        self.grace = exec_guard.grace_for(stop_timeout)
        self.environ = {k: v for k, v in (os.environ if environ is None else environ).items()
                        if k not in SECRET_ENV}
        self.exec_stats = ExecStats()
        self.lease: Lease | None = None
        self.publisher: LeasePublisher | None = None
        self.children: dict[str, list[_Child]] = {}
        self._numbers = itertools.count(1)
        self._group = gevent.pool.Group()
        self._dir = Path(tempfile.mkdtemp(prefix="voltha-exec-"))

    def attach(self, lease: Lease) -> None:
        """Feed the guards ``lease``'s deadline (the node's session lease, ``node.lease``)."""
        self.lease = lease
        self.publisher = LeasePublisher(lease)

    def close(self) -> None:
        """Stop feeding the guards (any left see their pipe close and end their groups)."""
        if self.publisher is not None:
            self.publisher.stop()
        self._group.join(timeout=self.stop_timeout + 1.0)
        self._group.kill(block=False)
        shutil.rmtree(self._dir, ignore_errors=True)

    # The handler

    def on_assigned(self, item: str, value: bytes | None) -> None:
        """Run the command for ``item`` until revoked, restarting it with backoff when it exits."""
        ownership = current_ownership()
        if ownership is None or self.lease is None:
            raise RuntimeError("ExecWork.on_assigned outside a work greenlet, or attach() not called")
        failures = 0
        while ownership.valid():  # a revocation makes it False before on_revoked is called
            started = now()
            child = self._start(item, ownership, value)
            child.done.wait()
            if not ownership.valid():
                return
            value = ownership.value  # value_updates keeps it current
            if child.replacing:
                self.exec_stats.value_restarts += 1
                log.info("exec-child-replaced", item=item, code=child.code)
                continue
            self.exec_stats.exited += 1
            failures = 1 if now() - started >= HEALTHY_RUN else failures + 1
            delay = max(MIN_RESTART_DELAY, backoff_step(failures))
            log.warning("exec-child-exited", item=item, code=child.code, retry_in=delay,
                        restarts=self.exec_stats.restarts)
            if not ownership.wait(delay):
                return
            self.exec_stats.restarts += 1

    def on_updated(self, item: str, value: bytes | None) -> None:
        """A changed value: rewrite the child's value file, then restart or signal the child.

        A child that has ``value`` already or is stopping is left alone (the next one starts
        with ``ownership.value``). Returns once a replaced child is reaped (up to
        ``stop_timeout``), so the item's next change is told after this one is done."""
        children = [c for c in self.children.get(item, ()) if not c.stop_requested and c.value != value]
        for child in children:
            _replace_file(child.value_path, value, self._dir)
            child.value = value
        if not children:
            return
        assert self.publisher is not None
        if self.reload_signal is not None:
            for child in children:
                self.publisher.send(child.write_fd, b"signal %d\n" % self.reload_signal)
            self.exec_stats.value_signals += len(children)
            log.info("exec-child-signalled", item=item, signal=self.reload_signal.name)
            return
        for child in children:
            child.replacing = child.stop_requested = True
            self.publisher.send(child.write_fd, b"stop value changed\n")
        gevent.wait([c.done for c in children], timeout=self.stop_timeout)

    def on_revoked(self, item: str) -> None:
        """Ask the item's guards to end their groups; wait (up to ``stop_timeout``) for them."""
        children = self._stop_children(item)
        gevent.wait([c.done for c in children], timeout=self.stop_timeout)

    def barrier(self, item: str, timeout: float) -> bool:
        """Revoke barrier: True once every child of ``item`` is reaped, group and all."""
        children = self._stop_children(item)
        gevent.wait([c.done for c in children], timeout=timeout)
        return all(c.done.is_set() for c in children)

    def _stop_children(self, item: str) -> list[_Child]:
        children = list(self.children.get(item, ()))
        for child in children:
            if not child.stop_requested:
                child.stop_requested = True
                assert self.publisher is not None
                self.publisher.send(child.write_fd, b"stop\n")
        return children

    # One child

    def _start(self, item: str, ownership: Ownership, value: bytes | None) -> _Child:
        """Register a child (so a revocation from now on sees it), then start it outside the
        work greenlet: the fence must never kill what supervises a running process."""
        number = next(self._numbers)
        value_path = self._dir / f"{number}.value"
        fd = os.open(value_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(value or b"")
        child = _Child(item, number, value_path, value)
        assert self.lease is not None and self.publisher is not None
        self.publisher.add(child.write_fd, self.lease.generation, ownership.deadline)
        self.children.setdefault(item, []).append(child)
        env = {**self.environ, "VOLTHA_ITEM": item, "VOLTHA_FENCE_TOKEN": str(ownership.token),
               "VOLTHA_INSTANCE_ID": self.instance_id, "VOLTHA_ITEM_VALUE_FILE": str(value_path)}
        # run in the hub: a greenlet spawned there is no work greenlet's child
        gevent.get_hub().loop.run_callback(self._group.spawn, self._supervise, child, ownership, env)
        return child

    def _supervise(self, child: _Child, ownership: Ownership, env: dict[str, str]) -> None:
        try:
            if not child.stop_requested and ownership.valid():
                self._run_guard(child, ownership, env)
        except Exception:  # noqa: BLE001 - a failed start is logged, then treated as an exit
            log.exception("exec-start-failed", item=child.item)
        finally:
            self._forget(child)

    def _run_guard(self, child: _Child, ownership: Ownership, env: dict[str, str]) -> None:
        argv = [sys.executable, "-I", "-S", exec_guard.__file__, "--lease-fd", str(child.read_fd),
                "--deadline", f"{ownership.deadline:.6f}", "--grace", f"{self.grace:g}", "--",
                *(arg.replace("{item}", child.item) for arg in self.command)]
        with open(child.value_path, "rb") as stdin:
            guard = gevent.subprocess.Popen(argv, stdin=stdin, stdout=gevent.subprocess.PIPE,
                                            stderr=gevent.subprocess.PIPE, env=env,
                                            pass_fds=(child.read_fd,), start_new_session=True)
        os.close(child.read_fd)
        child.read_fd = -1
        child.guard = guard
        self.exec_stats.started += 1
        log.info("exec-child-started", item=child.item, guard_pid=guard.pid, token=ownership.token)
        readers = [gevent.spawn(self._relay, child.item, stream, name)
                   for stream, name in ((guard.stdout, "stdout"), (guard.stderr, "stderr"))]
        child.code = guard.wait()
        gevent.joinall(readers, timeout=READER_LINGER)
        gevent.killall(readers, block=False)
        log.info("exec-child-ended", item=child.item, code=child.code, stopped=child.stop_requested)

    def _relay(self, item: str, stream: Any, name: str) -> None:
        """Log every line of one output stream of the child, with its item."""
        try:
            for raw in iter(lambda: stream.readline(MAX_LINE), b""):
                log.info("exec-output", item=item, stream=name,
                         line=raw.decode("utf-8", "replace").rstrip("\n"))
        finally:
            stream.close()

    def _forget(self, child: _Child) -> None:
        if child.read_fd >= 0:
            os.close(child.read_fd)
        if self.publisher is not None:
            self.publisher.close(child.write_fd)
        child.value_path.unlink(missing_ok=True)
        children = self.children.get(child.item, [])
        if child in children:
            children.remove(child)
        if not children:
            self.children.pop(child.item, None)
        child.done.set()


__all__ = ["ExecStats", "ExecWork", "LeasePublisher", "parse_command", "parse_reload_signal"]
