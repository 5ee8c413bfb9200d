"""One submitted request: the caller's handle, and the state that decides whether it may still
be cancelled.

A request can be cancelled for as long as it is proven not to have reached a handler or a
peer; from then on, giving up only stops the caller from waiting, it cannot unsend it.
States (:class:`RequestState`) and their transitions::

    WAITING    --begin_delivery (handler starts here / forward starts)--> DELIVERING
    DELIVERING --not_delivered (connect failed, peer said "not owner")--> WAITING
    WAITING    --cancel (caller's timeout)--> CANCELLED        never runs afterwards
    DELIVERING --not_delivered, the caller gave up meanwhile--> CANCELLED
    WAITING/DELIVERING --answer or error--> DONE

Only the worker serving the request moves it to DELIVERING (and back); only the caller
cancels. gevent switches only at blocking calls, so each transition is atomic.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

import gevent.event

from .errors import DispatchTimeout


class RequestState(Enum):
    WAITING = "waiting"
    DELIVERING = "delivering"
    CANCELLED = "cancelled"
    DONE = "done"


class PendingRequest(gevent.event.AsyncResult):
    """A queued request; an :class:`~gevent.event.AsyncResult` of its answer, plus :meth:`cancel`."""

    def __init__(self, item: str | None, payload: Any) -> None:
        super().__init__()
        self.item = item
        self.payload = payload
        self.enqueued = time.monotonic()
        self.state = RequestState.WAITING

    @property
    def cancelled(self) -> bool:
        return self.state is RequestState.CANCELLED

    def cancel(self, timeout: float | None = None) -> bool:
        """Give up on the request; True when it is proven never to run, False when it may.

        Either way the handle then holds a :class:`DispatchTimeout` saying which, unless the
        answer arrived first (then nothing changes and the answer stays).
        """
        if self.ready():
            return self.state is RequestState.CANCELLED
        if self.state is RequestState.WAITING:
            self.state = RequestState.CANCELLED
            self.set_exception(DispatchTimeout("cancelled before delivery: never served",
                                               timeout=timeout, delivered=False))
            return True
        self.set_exception(DispatchTimeout("already delivered: it may still be served, nobody waits "
                                           "for its answer", timeout=timeout, delivered=True))
        return False

    def raise_if_cancelled(self) -> None:
        """Raise the caller's :class:`DispatchTimeout` if the request was cancelled."""
        if self.state is RequestState.CANCELLED:
            raise self.exception or DispatchTimeout("cancelled", timeout=None, delivered=False)

    def begin_delivery(self) -> None:
        """Mark the point of no return; raises the caller's :class:`DispatchTimeout` if cancelled."""
        self.raise_if_cancelled()
        self.state = RequestState.DELIVERING

    def not_delivered(self) -> None:
        """Non-delivery was proven after :meth:`begin_delivery`: cancelling is safe again, and a
        caller who gave up meanwhile has cancelled it (it is not sent again)."""
        if self.state is RequestState.DELIVERING:
            self.state = RequestState.CANCELLED if self.ready() else RequestState.WAITING

    def finish(self, value: Any = None, error: BaseException | None = None) -> bool:
        """Record the answer; False when the caller already gave up (the answer is dropped)."""
        if self.ready():
            return False
        self.state = RequestState.DONE
        if error is not None:
            self.set_exception(error)
        else:
            self.set(value)
        return True
