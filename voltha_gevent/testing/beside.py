"""Contract-test timing helpers that work on the mocked and on a real Consul client alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import gevent

from .fake_consul import FakeClient


def later(client: Any, delay: float, fn: Callable[[], Any]) -> Callable[[], None]:
    """Run ``fn`` after ``delay`` s beside a blocking call; returns a join function.

    The fake blocks on gevent, the real client (requests, not monkey-patched in the tests) on
    a socket, so the writer is a greenlet for one and a thread for the other.
    """
    if isinstance(client, FakeClient):
        gevent.get_hub().loop.update_now()  # the loop's cached time may be stale
        greenlet = gevent.spawn_later(delay, fn)
        return lambda: greenlet.get(timeout=10)
    thread = threading.Timer(delay, fn)
    thread.start()
    return lambda: thread.join(10)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds fn took, its result)``."""
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


__all__ = ["later", "timed"]
