"""The liveness signals of one session, sent on schedule - from a thread of their own.

Why a thread: a node that is only *busy* - parsing a 10,000-key listing, starting thousands
of handlers, or sharing two cores with nine other nodes - lets its event loop fall seconds
behind. Heartbeats sent as greenlets of that loop then go out late, the lease runs out, and
every item is fenced and restarted: overload turned into a storm (100,000 items x 10 nodes
never converged, with hundreds of session losses). A native thread with a gevent hub of its
own needs only the GIL to send, and a busy loop hands the GIL over every
``sys.getswitchinterval()`` (5 ms). Overload then slows the node down; it does not end its
session.

A thread that proves the session alive while the loop does nothing useful would let a
wedged node (a handler spinning forever) keep its items for ever. So the loop stamps the time
every time it turns, and the thread stops signalling once the loop has not turned for
``max_loop_stall`` seconds: the lease runs out and Consul ends the session, as for a frozen
process. Overload within that bound is tolerated; a wedge is not.

What crosses the thread boundary: the callbacks given here run in the thread (they write the
send times of confirmed signals and the lease deadline: floats, under the GIL); anything that
acts on the node (declaring the session lost) they hand to the main hub themselves. The
in-memory fake Consul is not thread-safe: with it the same beats run as greenlets of the
main hub (``threaded=False``), which is also how the loop-stall tests compare both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import gevent.pool
import structlog

from .lease import now
from .supervision import bind_instance, instance_of

log = structlog.get_logger(__name__)

#: Signals of one kind awaiting their answer at once (a slow agent must not delay the next).
SIGNALS_IN_FLIGHT = 3
#: How long :meth:`Heartbeats.stop` waits for the thread to end.
STOP_TIMEOUT = 5.0

Beat = Callable[[Any, str], None]
"""``beat(api, signal)``: send one signal on ``api`` and act on its outcome."""


class Heartbeats:
    """Sends each of ``signals`` every ``interval`` until stopped, up to 3 of a kind in flight.

    ``make_api`` builds the client the beats use; in thread mode it is called inside the
    thread (its connections belong to the thread's hub) and closed there at the end.
    """

    def __init__(self, beat: Beat, signals: tuple[str, ...], interval: float, make_api: Callable[[], Any],
                 *, threaded: bool, max_loop_stall: float, name: str = "heartbeat") -> None:
        self.beat = beat
        self.signals = signals
        self.interval = interval
        self.make_api = make_api
        self.threaded = threaded
        self.max_loop_stall = max_loop_stall
        self.name = name
        self.loop_seen = now()  # the main loop's last turn, as the thread sees it
        self.stalled = False
        self._stopping = False
        self._wake: Any = None  # the thread's async watcher; send() wakes its loop
        self._done = gevent.event.Event()
        self._stamp: Any = None
        self._greenlets: list[gevent.Greenlet] = []
        self._instance = instance_of(gevent.getcurrent())

    def start(self) -> Heartbeats:
        if not self.threaded:
            api = self.make_api()
            self._greenlets = [self._spawn_beat(s, api, gevent.event.Event()) for s in self.signals]
            return self
        self._stamp_loop()  # only the thread needs to know the loop still turns
        main_loop = gevent.get_hub().loop
        start_thread = gevent.monkey.get_original("_thread", "start_new_thread")
        start_thread(self._thread_main, (main_loop,))
        return self

    def halt(self) -> None:
        """Ask every beat to stop, without waiting (safe from inside a beat)."""
        self._stopping = True
        if self._stamp is not None:
            self._stamp.close()
            self._stamp = None
        if not self.threaded:
            current = gevent.getcurrent()
            gevent.killall([g for g in self._greenlets if g is not current], block=False)
            return
        wake = self._wake
        if wake is not None:
            wake.send()

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop every beat; True when the thread (or the greenlets) ended within ``timeout``."""
        self.halt()
        if not self.threaded:
            current = gevent.getcurrent()
            gevent.joinall([g for g in self._greenlets if g is not current], timeout=timeout)
            return True
        if self._done.wait(timeout):
            return True
        log.warning("heartbeat-thread-lingers", name=self.name, timeout=timeout)
        return False

    def _stamp_loop(self) -> None:
        """Record the main loop's progress every interval (a timer of the main hub)."""
        loop = gevent.get_hub().loop
        self._stamp = loop.timer(0.0, min(self.interval, 1.0), ref=False)
        self._stamp.start(self._loop_turned)

    def _loop_turned(self) -> None:
        self.loop_seen = now()

    def _thread_main(self, main_loop: Any) -> None:
        hub = gevent.get_hub()  # this thread's own hub
        stop = gevent.event.Event()
        wake = hub.loop.async_()
        wake.start(stop.set)
        self._wake = wake
        api = None
        try:
            if self._instance is not None:
                bind_instance(gevent.getcurrent(), self._instance)
            api = self.make_api()
            if not self._stopping:
                beats = [self._spawn_beat(s, api, stop) for s in self.signals]
                stop.wait()
                gevent.killall(beats, block=True, timeout=1.0)
        except BaseException as exc:  # noqa: BLE001 - the thread must always report its end
            log.error("heartbeat-thread-failed", name=self.name, error=repr(exc))
        finally:
            wake.close()
            self._wake = None
            if api is not None:
                api.close()
            main_loop.run_callback_threadsafe(self._done.set)
            hub.destroy(destroy_loop=True)

    def _spawn_beat(self, signal: str, api: Any, stop: gevent.event.Event) -> gevent.Greenlet:
        greenlet = gevent.spawn(self._run_beat, signal, api, stop)
        greenlet.name = f"heartbeat-{signal}"
        return greenlet

    def _run_beat(self, signal: str, api: Any, stop: gevent.event.Event) -> None:
        in_flight = gevent.pool.Pool(SIGNALS_IN_FLIGHT)
        try:
            while not self._stopping:
                if self._loop_alive() and not in_flight.full():
                    in_flight.spawn(self.beat, api, signal)
                if stop.wait(self.interval):
                    return
        finally:
            in_flight.kill(block=False)

    def _loop_alive(self) -> bool:
        """False (and logged once) while the main loop has not turned for ``max_loop_stall``."""
        if not self.threaded:
            return True
        stalled = now() - self.loop_seen > self.max_loop_stall
        if stalled and not self.stalled:
            log.error("event-loop-wedged", stalled_for=round(now() - self.loop_seen, 2),
                      max_loop_stall=self.max_loop_stall, action="liveness signals stop")
        elif self.stalled and not stalled:
            log.info("event-loop-turning-again")
        self.stalled = stalled
        return not stalled


__all__ = ["SIGNALS_IN_FLIGHT", "Heartbeats"]
