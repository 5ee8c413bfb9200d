"""The node's lease on its session, and the per-item :class:`Ownership` work can check.

A node may act on an item only while Consul could not yet have handed the item's owner
lock to anyone else. :class:`Lease` is the node's local, conservative view of that: it
runs until ``deadline`` (monotonic), which the session keeper pushes forward each time a
liveness signal is confirmed (see :mod:`voltha_gevent.budget` for the formula). Nothing in
:meth:`Lease.valid` or :meth:`Ownership.valid` talks to Consul: they compare the clock with
the deadline, so they are ``False`` from the first instruction after the deadline passed,
even if no greenlet has run since - after a SIGSTOP, a VM pause or a handler that blocked
the event loop.

Freeze-proof fencing. After a stall gevent's loop runs every expired timer in expiry order,
and the work greenlets' ``sleep`` timers expired long before anything noticed the lease was
gone; libev has no hook that runs before them (a check watcher runs after the timers of its
iteration - measured). So the guard sits on the greenlet switch itself: a
``greenlet.settrace`` tracer sees every switch before the target runs, and when the target
is a work greenlet (one that runs ``on_assigned``, or one spawned from it) whose lease has
run out, it raises ``GreenletExit`` *into the target* - the work dies at the point where it
would have resumed, running its ``finally`` blocks and nothing else, before any of its own
code after the stall. This holds for timers already queued in the same loop iteration as a
handler that blocked the loop, where any once-per-iteration hook would come too late. A
timer at the deadline wakes an idle loop and tells the listeners (the session keeper), so
the rest of the fence - ``on_revoked``, forgetting the items, a new session - starts at once.
Work that checks :meth:`Ownership.valid` before each side effect needs none of this: it
stops at the deadline by itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import gevent
import gevent.event
import greenlet
import structlog

from .entries import KVEntry

log = structlog.get_logger(__name__)

#: A lease found expired later than this after its deadline means the loop was stalled.
STALL_GRACE = 0.25
#: How far up the spawning chain the guard looks for the work greenlet a greenlet came from.
SPAWN_DEPTH = 8

ExpiryListener = Callable[[float], None]
"""Called in the hub when the lease ends, with how many seconds after its deadline."""


def now() -> float:
    """The lease clock: ``time.monotonic()`` (host-wide on Linux, so a ledger can share it)."""
    return time.monotonic()


class Lease:
    """Trust in the current session, by deadline; one per node, reused across sessions.

    ``generation`` is the session generation the lease belongs to: an :class:`Ownership`
    of an older generation is never valid again, even when a new session starts a new lease.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.deadline = -math.inf
        self.live = False
        self.expiries = 0
        self.stalls = 0
        self._sealed = False  # work was fenced on this lease: it ends, whatever extend() says
        self._ended = gevent.event.Event()  # set when this generation's lease ends (wakes waits)
        self._listeners: list[ExpiryListener] = []
        self._timer: object | None = None

    # Queries (local only)

    def valid(self, generation: int | None = None) -> bool:
        """True while the lease of ``generation`` (default: the current one) has not run out."""
        if generation is not None and generation != self.generation:
            return False
        return self.live and not self._sealed and now() < self.deadline

    def remaining(self) -> float:
        return max(0.0, self.deadline - now()) if self.live else 0.0

    # The session keeper's side

    def begin(self, generation: int, deadline: float) -> None:
        """A new session is live and trusted until ``deadline``."""
        self._ended.set()  # whatever still waits on the previous generation is over
        self._ended = gevent.event.Event()
        self.generation = generation
        self.deadline = deadline
        self.live = True
        self._sealed = False
        self._arm()

    def extend(self, generation: int, deadline: float) -> None:
        """A liveness signal was confirmed: trust the session until ``deadline`` (never shortens).

        Safe to call from the heartbeat thread: it only moves the deadline forward (a float,
        under the GIL); the armed timer, when it fires at the old deadline, finds it moved
        and waits again (:meth:`_expire`). A lease whose deadline has passed is over, even
        when a late confirmation arrives: the switch guard may already have fenced work on
        it (see :meth:`seal`), and a revived lease would leave that work dead while the node
        still counts the item as running.
        """
        if generation == self.generation and self.live and not self._sealed \
                and now() < self.deadline < deadline:
            self.deadline = deadline

    def seal(self) -> None:
        """The switch guard fenced work on this lease: end it now, whatever extends it later.

        Closes the race with a confirmation from the heartbeat thread that passed
        :meth:`extend`'s checks just before the deadline and lands just after the guard
        acted: :meth:`_expire` then ends the lease anyway, and the session is declared lost.
        """
        if self.live and not self._sealed:
            self._sealed = True
            gevent.get_hub().loop.run_callback(self._expire)

    def end(self) -> None:
        """The session ended by other means (lost, destroyed): no ownership is valid any more."""
        self.live = False
        self.deadline = min(self.deadline, now())
        self._disarm()
        self._ended.set()

    def on_expired(self, listener: ExpiryListener) -> None:
        self._listeners.append(listener)

    # The guard

    @property
    def ran_out(self) -> bool:
        """The deadline has passed or the lease was ended: work under it must not resume."""
        return not self.live or self._sealed or now() >= self.deadline

    def _arm(self) -> None:
        _install_tracer()
        if self._timer is not None:
            self._timer.close()  # type: ignore[attr-defined]
        loop = gevent.get_hub().loop
        loop.update_now()  # libev counts the delay from its cached time, which may lag
        timer = loop.timer(max(0.0, self.deadline - now()), ref=False)
        timer.start(self._expire)
        self._timer = timer

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.close()  # type: ignore[attr-defined]
            self._timer = None

    def _expire(self) -> None:
        """The deadline timer: runs in the hub; tells the listeners how late the loop was."""
        if not self.live:
            return
        overdue = now() - self.deadline
        if overdue < 0 and not self._sealed:  # fired early (libev's clock), or extended: wait again
            self._arm()
            return
        self.live = False
        self.expiries += 1
        if overdue > STALL_GRACE:
            self.stalls += 1
        self._disarm()
        self._ended.set()
        for listener in list(self._listeners):
            try:
                listener(overdue)
            except Exception:  # noqa: BLE001 - one listener must not keep the others from fencing
                log.exception("lease-listener-failed")


class Ownership:
    """This node's right to act on one item, as work sees it.

    ``token`` is the fencing token: the ``ModifyIndex`` Consul gave the owner lock when this
    node took it, a Raft index, so it strictly grows every time the item changes owner. Pass
    it to any external resource the work writes to and have that resource refuse a token
    lower than the highest it has seen: that stops even a write already in flight when the
    lease ended.
    """

    def __init__(self, item: str, value: bytes | None, token: int, lease: Lease, generation: int) -> None:
        self.item = item
        self.value = value
        self.token = token
        self._lease = lease
        self._generation = generation
        self._revoked = gevent.event.Event()
        self._lease_ended = lease._ended if generation == lease.generation else None

    @property
    def deadline(self) -> float:
        """Monotonic time after which this ownership is not trusted (moves forward with the lease)."""
        if self._revoked.is_set() or self._generation != self._lease.generation:
            return -math.inf
        return self._lease.deadline

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    def valid(self) -> bool:
        """True while the item is still this node's: not revoked and the lease has not run out.

        Answers from local state only (no Consul call); check it right before each side effect.
        """
        return not self._revoked.is_set() and self._lease.valid(self._generation)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less when the item is revoked or the lease ends; then :meth:`valid`.

        One timer per wait, woken by the lease's own deadline timer: waking every lease
        period to look at the clock cost a node with 10,000 items 4,400 wake-ups a second.
        After a stall the lease's timer is due as soon as the loop runs again.
        """
        if self.valid() and self._lease_ended is not None:
            gevent.wait([self._revoked, self._lease_ended], timeout=max(0.0, seconds), count=1)
        return self.valid()

    def _lease_ran_out(self) -> bool:
        return self._generation != self._lease.generation or self._lease.ran_out

    def _fence(self) -> None:
        """The guard stops this work: the lease it ran under is over for good."""
        if self._generation == self._lease.generation:
            self._lease.seal()

    def revoke(self) -> None:
        """The library stops the item: from now on :meth:`valid` is False (idempotent)."""
        self._revoked.set()

    @classmethod
    def from_lock(cls, item: str, lock: KVEntry, value: bytes | None, lease: Lease,
                  generation: int) -> Ownership:
        return cls(item, value, lock.modify_index, lease, generation)

    def __repr__(self) -> str:
        return f"Ownership({self.item!r}, token={self.token}, valid={self.valid()})"


#: The attribute a greenlet carries: its Ownership, or False once looked up and found none.
#: An attribute, not a weak dictionary: the switch guard reads it on every greenlet switch
#: of the process (tens of thousands a second with 10,000 items), so it must cost one getattr.
_ATTR = "voltha_ownership"


def bind(greenlet: object, ownership: Ownership, *, fenced_runner: bool = False) -> None:
    """Make ``ownership`` what :func:`current_ownership` answers inside ``greenlet``.

    ``fenced_runner``: the greenlet runs its work through :func:`run_fenced`.
    """
    setattr(greenlet, _ATTR, ownership)
    if fenced_runner:
        greenlet.fenced_runner = True  # type: ignore[attr-defined]


def current_ownership() -> Ownership | None:
    """The :class:`Ownership` of the item whose ``on_assigned`` runs in this greenlet (or in
    the greenlet that spawned this one), if any."""
    return _ownership_of(gevent.getcurrent())


def _ownership_of(target: object) -> Ownership | None:
    known = getattr(target, _ATTR, None)
    if known is not None:
        return known or None
    found: Ownership | None = None
    parent = target
    for _ in range(SPAWN_DEPTH):
        ref = getattr(parent, "spawning_greenlet", None)
        parent = ref() if ref is not None else None
        if parent is None:
            break
        inherited = getattr(parent, _ATTR, None)
        if inherited is not None:
            found = inherited or None
            break
    try:
        setattr(target, _ATTR, found if found is not None else False)
    except AttributeError:  # a greenlet type without a __dict__: look it up again next time
        pass
    return found


_tracer_installed = False
_previous_tracer: Callable[[str, tuple[object, object]], object] | None = None


def _install_tracer() -> None:
    """Install the switch guard (again: greenlet removes a tracer that raised)."""
    global _tracer_installed, _previous_tracer
    current = greenlet.gettrace()
    if current is _switch_guard:
        return
    if not _tracer_installed:
        _previous_tracer = current
        _tracer_installed = True
    greenlet.settrace(_switch_guard)


class FencedByLease(gevent.GreenletExit):
    """Raised into a work greenlet that would resume after its lease ran out."""


def run_fenced(fn: Callable[..., object], *args: object) -> object:
    """Run a work function; a :class:`FencedByLease` ends it quietly and re-arms the guard.

    greenlet drops a tracer that raised, so the first thing the fenced greenlet does is put
    the guard back, before it switches anywhere: the next work greenlet the loop resumes
    is guarded too.
    """
    try:
        return fn(*args)
    except FencedByLease:
        _install_tracer()
        return None


def _switch_guard(event: str, args: tuple[object, object]) -> None:
    """Every greenlet switch passes here first; see "Freeze-proof fencing" above."""
    if _previous_tracer is not None:
        _previous_tracer(event, args)
    if event not in ("switch", "throw"):
        return
    ownership = _ownership_of(args[1])
    if ownership is not None and ownership._lease_ran_out():
        ownership._fence()
        if not getattr(args[1], "fenced_runner", False):
            # a greenlet the work spawned: it has no run_fenced() to re-arm the guard
            gevent.get_hub().loop.run_callback(_install_tracer)
        raise FencedByLease(f"lease of {ownership.item} ran out")



__all__ = [
    "STALL_GRACE", "FencedByLease", "Lease", "Ownership", "bind", "current_ownership",
    "now", "run_fenced",
]
