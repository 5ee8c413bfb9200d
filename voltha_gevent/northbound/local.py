"""Serving requests here: only for items this node runs, and never past their revocation.

Guarantees:

* **Served only by the owner.** A request for an item runs here only while this node's
  worker runs the item (:meth:`Node.owned`), its ownership is valid (``Node.ownership(item)``
  is not None: the lease has not run out, the item is not being revoked) and the item is
  not quiesced.
* **Each run is a greenlet of its own**, in a group this object owns and tracked per item,
  so a revocation can wait for the item's runs and kill them without killing a dispatcher
  worker or an HTTP greenlet. A run killed before its handler began did not run: its caller
  gets :class:`NotOwner` (re-routed, or answered 409 to a peer), not an interruption.
* **Revocation waits.** :meth:`LocalServing.quiesce` stops new runs of the item at once,
  waits up to ``timeout`` for the runs in flight, then kills them and waits at most
  :data:`QUIESCE_KILL_WAIT` more; it answers whether none runs any more. The caller of a
  killed run gets :class:`RequestInterrupted` (it may have partly run).
* **Un-quiesce.** A quiesce fences the ownership current when it was called (a revoked or
  expired one needs no fence: it is not served anyway). It ends as soon as that ownership
  is seen to be over: the item outside :meth:`Node.owned` when quiesce returns or at any
  later check, or a different ``Node.ownership(item).token``. Owned again after that is a
  new ownership, served normally. Quiescing an item that is not being revoked holds until
  then, or until :meth:`resume`.

If the session is lost, the worker fences its items, :meth:`Node.owned` empties and no new
run starts here; runs in flight are waited for (and killed) by the revocation path through
:meth:`quiesce`. :meth:`stop` lets runs finish up to its timeout, then kills them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.pool
import structlog

from .errors import NotOwner, RequestInterrupted
from .stats import DispatcherStats
from .wire import ALL

if TYPE_CHECKING:
    from .node_view import DispatchNode

log = structlog.get_logger(__name__)

#: After a quiesce's wait, killed runs get at most this long (seconds) to die.
QUIESCE_KILL_WAIT = 0.25
#: While this node holds an item's lock but its work is still starting, re-check this often.
LOCAL_RECHECK = 0.02

Handler = Callable[[str | None, Any], Any]
"""``handler(item, payload) -> JSON-able result``; ``item`` is None (local) or :data:`ALL`."""


class LocalServing:
    """Which items may be served here now; runs the handler for them and tracks each run."""

    def __init__(self, node: DispatchNode, handler: Handler, stats: DispatcherStats) -> None:
        self.node = node
        self.handler = handler
        self.stats = stats
        self.log = log.bind(instance_id=node.instance_id)
        self._runs: dict[str, set[gevent.Greenlet]] = {}
        self._quiesced: dict[str, object | None] = {}  # item -> ownership token when quiesced
        self._group = gevent.pool.Group()

    def serves(self, item: str) -> bool:
        """True when a request for ``item`` may start here now."""
        if item not in self.node.owned():
            self._quiesced.pop(item, None)  # the quiesced ownership is over
            return False
        valid, token = self._ownership(item)
        if not valid:
            return False
        if item not in self._quiesced:
            return True
        fenced = self._quiesced[item]
        if fenced is not None and fenced != token:
            del self._quiesced[item]
            self.log.info("item-unquiesced", item=item, token=token)
            return True
        return False

    def await_serving(self, item: str, wait: float) -> bool:
        """True once ``item`` is served here; waits up to ``wait`` only while it is pending here."""
        deadline = time.monotonic() + wait
        while not self.serves(item):
            if item not in self.node.pending() or time.monotonic() >= deadline:
                return False
            gevent.sleep(LOCAL_RECHECK)
        return True

    def in_flight(self, item: str) -> int:
        """How many runs of ``item``'s requests are in progress here."""
        return len(self._runs.get(item, ()))

    def run(self, item: str | None, payload: Any) -> Any:
        """Run the handler in a greenlet of its own and return its answer (or raise its error).

        Killed before the handler began (a quiesce or stop came first): :class:`NotOwner`,
        it did not run. Killed while running: :class:`RequestInterrupted`, it may have.
        """
        began: list[bool] = []
        run = self._group.spawn(_call, self.handler, item, payload, began)
        run.name = f"request:{item}"
        tracked = item is not None and item != ALL
        if tracked:
            self._runs.setdefault(item, set()).add(run)
        try:
            outcome = run.get()
        finally:
            if not run.dead:  # the waiter itself was killed (stop): nobody can take the answer
                run.kill(block=False)
            if tracked:
                self._forget(item, run)
        self.stats.local += bool(began)
        if isinstance(outcome, gevent.GreenletExit):
            if not began:
                raise NotOwner("stopped serving it before it began: not run", item=item,
                               instance_id=self.node.instance_id)
            self.stats.interrupted += 1
            raise RequestInterrupted("it may have partly run", item=item)
        ok, value = outcome
        if not ok:
            raise value
        return value

    def quiesce(self, item: str, timeout: float) -> bool:
        """Stop serving ``item`` here and wait for its runs; True when none runs any more.

        From the call on, no new request for ``item`` starts here (they are answered "not
        owner" or routed to the next owner). Runs in flight get ``timeout`` seconds, then are
        killed and get :data:`QUIESCE_KILL_WAIT` more: returns within ``timeout`` +
        :data:`QUIESCE_KILL_WAIT`, False only when a run survived its kill.
        """
        valid, token = self._ownership(item)
        if valid and item in self.node.owned():  # otherwise nothing starts here anyway
            self._quiesced[item] = token
        try:
            return self._wait_runs(item, timeout)
        finally:
            if item not in self.node.owned():
                self._quiesced.pop(item, None)  # that ownership is over: the next one is served

    def resume(self, item: str) -> None:
        """End a quiesce by hand (serving resumes by itself once the ownership is over)."""
        self._quiesced.pop(item, None)

    def _wait_runs(self, item: str, timeout: float) -> bool:
        runs = list(self._runs.get(item, ()))
        if not runs:
            return True
        self.log.info("item-quiescing", item=item, in_flight=len(runs), timeout=timeout)
        gevent.joinall(runs, timeout=max(0.0, timeout))
        alive = [run for run in runs if not run.dead]
        if not alive:
            return True
        for run in alive:
            run.kill(block=False)
        gevent.joinall(alive, timeout=QUIESCE_KILL_WAIT)
        survivors = sum(1 for run in alive if not run.dead)
        self.log.warning("requests-killed", item=item, killed=len(alive) - survivors,
                         still_running=survivors, waited=timeout)
        return survivors == 0

    def stop(self, timeout: float) -> None:
        """Let the runs in progress finish (up to ``timeout``), then kill what is left."""
        self._group.join(timeout=timeout)
        self._group.kill(block=True, timeout=QUIESCE_KILL_WAIT)

    def _forget(self, item: str, run: gevent.Greenlet) -> None:
        runs = self._runs.get(item)
        if runs is not None:
            runs.discard(run)
            if not runs:
                del self._runs[item]

    def _ownership(self, item: str) -> tuple[bool, object | None]:
        """``(valid, token)`` of this node's ownership of ``item``, from local state only:
        ``Node.ownership`` is None once the lease ran out or the item is being revoked, even
        before the worker noticed, and nothing is served then."""
        lease = self.node.ownership(item)
        return (lease is not None), (lease.token if lease is not None else None)


def _call(handler: Handler, item: str | None, payload: Any, began: list[bool]) -> tuple[bool, Any]:
    """The handler's outcome as a value: an exception in a greenlet would be printed by gevent's
    hub; it belongs to the request's caller instead. ``began`` tells a kill before the start."""
    began.append(True)
    try:
        return True, handler(item, payload)
    except Exception as exc:  # noqa: BLE001 - every handler failure goes back to the caller
        return False, exc
