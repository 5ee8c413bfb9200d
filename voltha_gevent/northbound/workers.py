"""The bounded request queue and the fixed pool of greenlets that serve it.

Guarantees: a full queue rejects at once (:class:`DispatcherBusy`), never blocks the caller;
at most ``workers`` requests are served at once; a request its caller cancelled while queued
is dropped unserved; every request gets exactly one answer (its result, its error, or
:class:`~voltha_gevent.errors.Stopped`). :meth:`WorkerPool.stop` fails the queued requests
(they never ran), waits up to ``timeout`` for the ones being served, then kills the pool;
a request killed in flight is answered ``Stopped`` with ``maybe_served`` saying whether it
had been delivered. A crashed worker is logged with its traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.queue
import structlog

from ..errors import Stopped
from .errors import DispatcherBusy
from .pending import PendingRequest, RequestState
from .stats import DispatcherStats

log = structlog.get_logger(__name__)

Serve = Callable[[PendingRequest], Any]
"""``serve(request) -> result``: route one request in the worker's greenlet."""


class WorkerPool:
    """``queue_size`` waiting requests, ``workers`` greenlets serving them through ``serve``."""

    def __init__(self, serve: Serve, stats: DispatcherStats, *, queue_size: int, workers: int,
                 instance_id: str) -> None:
        self.serve = serve
        self.stats = stats
        self.queue_size = queue_size
        self.workers = workers
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=queue_size)
        self.log = log.bind(instance_id=instance_id)
        self._pool = gevent.pool.Group()
        self._busy = 0
        self._idle = gevent.event.Event()
        self._idle.set()
        self._running = False

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._running = True
        for number in range(self.workers):
            worker = self._pool.spawn(self._serve_loop)
            worker.name = f"dispatch-worker-{number}"
            worker.link_exception(self._crashed)

    def put(self, request: PendingRequest) -> None:
        """Queue ``request``; :class:`DispatcherBusy` at once when the queue is full."""
        try:
            self.queue.put_nowait(request)
        except gevent.queue.Full:
            self.stats.rejected += 1
            raise DispatcherBusy(f"{self.queue_size} requests queued") from None

    def stop(self, timeout: float) -> None:
        self._running = False
        while not self.queue.empty():
            self.queue.get_nowait().finish(error=Stopped("dispatcher stopped before the request ran"))
        self._idle.wait(timeout)
        self._pool.kill(block=True, timeout=timeout)

    def _serve_loop(self) -> None:
        while self._running:
            request = self.queue.get()
            if request.cancelled:
                self.stats.cancelled += 1
                continue
            self._busy += 1
            self._idle.clear()
            try:
                self._serve(request)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    def _serve(self, request: PendingRequest) -> None:
        try:
            value = self.serve(request)
        except gevent.GreenletExit:
            maybe = request.state is RequestState.DELIVERING
            request.finish(error=Stopped("dispatcher stopped while the request was in flight",
                                         maybe_served=maybe))
            raise
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            if request.cancelled:
                self.stats.cancelled += 1
                return
            self.stats.failed += 1
            self.log.info("request-failed", item=request.item, error=str(exc) or repr(exc),
                          maybe_served=getattr(exc, "maybe_served", True))
            request.finish(error=exc)
        else:
            request.finish(value)
        finally:
            self.stats.latency.observe(time.monotonic() - request.enqueued)

    def _crashed(self, greenlet: gevent.Greenlet) -> None:
        self.log.critical("dispatch-worker-crashed", worker=greenlet.name, exc_info=greenlet.exc_info)
