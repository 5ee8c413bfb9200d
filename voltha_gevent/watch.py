"""The one blocking-query watch: a greenlet that long-polls a key or a prefix.

It follows Consul's rules for blocking queries: the first read uses index 0 (no blocking),
every later read blocks on the last ``X-Consul-Index``; an index that goes backwards (a
snapshot restore, deleting the highest key of a prefix) resets it to 0; a wake-up whose data
equals the last delivered data is not a change, so ``on_change`` fires only on real change
and always with the latest state (intermediate states may be skipped, as in Consul). Re-arms
are rate-limited by a small token bucket so a misbehaving Consul cannot cause a request
storm, and errors back off along the project's retry schedule (a 403 at its slowest step).

:class:`WatchFactory` builds every watch of a node on its long-poll client and wait.

If ``on_change`` raises, the error is logged and counted (``watch-callback-failed``) and the
watch goes on: one bad record must not blind a node. Stopping is immediate: ``stop()`` sets
the stop event and kills the greenlet's pending long poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import gevent
import gevent.event
import structlog

from .answer_bytes import answer_size, forget_answer_size
from .consul_api import ConsulAPI
from .errors import ConsulRejected, ConsulUnavailable, PermissionDenied
from .retrying import backoff_step
from .supervision import LOOP_KILL_TIMEOUT, spawn_supervised

log = structlog.get_logger(__name__)

#: Default blocking-query wait, seconds. Shorter than Consul's 5 min default so a wedged
#: connection is noticed within a minute.
WATCH_WAIT = 60.0
#: Token bucket for re-arms: at most BURST back-to-back reads, refilled at RATE per second.
REARM_RATE = 10.0
REARM_BURST = 5.0


class WatchKind(Enum):
    """What is read: one key, a prefix with values, or a prefix's key names only."""

    KEY = "key"
    TREE = "tree"
    KEYS = "keys"


@dataclass
class WatchStats:
    rearms: int = 0
    changes: int = 0
    errors: int = 0
    resets: int = 0
    callback_failures: int = 0
    bytes_read: int = 0  # answer bytes of every read (0 with the in-memory fake)


class TokenBucket:
    """Allows ``burst`` immediate takes, then one every ``1/rate`` seconds."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def delay(self) -> float:
        """Take a token; the seconds to wait before using it."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Watch:
    """Long-poll ``key`` and call ``on_change(data)`` with each new state.

    ``data`` is a :class:`KVEntry` or None (KEY), a list of entries (TREE) or a list of key
    names (KEYS). The first successful read is always delivered. ``on_error`` (optional)
    is told of every failed read, e.g. so a health endpoint can flip.
    """

    def __init__(
        self,
        api: ConsulAPI,
        key: str,
        on_change: Callable[[Any], None],
        *,
        kind: WatchKind = WatchKind.KEY,
        wait: float = WATCH_WAIT,
        name: str | None = None,
        on_error: Callable[[Exception], None] | None = None,
        separator: str | None = None,
    ) -> None:
        self.api = api
        self.key = key
        self.kind = kind
        self.wait = wait
        self.name = name or f"watch:{key}"
        self.on_change = on_change
        self.on_error = on_error
        self.separator = separator
        self.stats = WatchStats()
        self.index = 0
        self.delivered = gevent.event.Event()
        self._stop = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._last: Any = _NOTHING

    def start(self) -> Watch:
        """Start (or start again after :meth:`stop`: the first answer is read afresh and delivered)."""
        if self._greenlet is None:
            self._stop.clear()
            self.index = 0
            self._last = _NOTHING
            self.delivered.clear()
            self._greenlet = spawn_supervised(self._run, self.name, self._restart)
        return self

    def _restart(self) -> None:
        """Supervision: the loop crashed; run it again unless stopped meanwhile."""
        if not self._stop.is_set():
            self._greenlet = None
            self.start()

    def stop(self, timeout: float = LOOP_KILL_TIMEOUT) -> None:
        """Stop the loop; idempotent. Kills a pending long poll rather than waiting it out."""
        self._stop.set()
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=True, timeout=timeout)

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Block until the first state was delivered."""
        return self.delivered.wait(timeout)

    def _run(self) -> None:
        bucket = TokenBucket(REARM_RATE, REARM_BURST)
        failures = 0
        while not self._stop.is_set():
            if self._stop.wait(bucket.delay()):
                return
            forget_answer_size()
            try:
                index, data = self._read()
                self.stats.bytes_read += answer_size()
            except (ConsulUnavailable, ConsulRejected) as exc:
                failures += 1
                self.stats.errors += 1
                self._report_error(exc, failures)
                step = backoff_step(failures, slowest=isinstance(exc, PermissionDenied))
                if self._stop.wait(step):
                    return
                continue
            if failures:
                log.info("watch-recovered", watch=self.name, failures=failures)
                failures = 0
            self.stats.rearms += 1
            self._advance(index)
            self._deliver(data)

    def _read(self) -> tuple[int, Any]:
        wait = self.wait if self.index else None
        if self.kind is WatchKind.KEY:
            return self.api.get(self.key, index=self.index, wait=wait)
        if self.kind is WatchKind.TREE:
            return self.api.list(self.key, index=self.index, wait=wait)
        return self.api.keys(self.key, index=self.index, wait=wait, separator=self.separator)

    def _advance(self, index: int) -> None:
        if index < self.index:
            self.stats.resets += 1
            log.warning("watch-index-reset", watch=self.name, old=self.index, new=index)
            self.index = 0
            return
        self.index = index

    def _deliver(self, data: Any) -> None:
        if data == self._last:
            return
        self._last = data
        self.stats.changes += 1
        try:
            self.on_change(data)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad record must not kill the watch
            self.stats.callback_failures += 1
            log.error("watch-callback-failed", watch=self.name, error=repr(exc))
        finally:
            self.delivered.set()

    def _report_error(self, exc: Exception, failures: int) -> None:
        if failures == 1:
            log.warning("watch-failed", watch=self.name, error=str(exc))
        if self.on_error is not None:
            self.on_error(exc)


class WatchFactory:
    """Builds a node's watches: every one on the node's long-poll client, with its ``wait``.

    ``api`` must be a client whose call timeout covers a long poll of ``wait``
    (:func:`~voltha_gevent.client_settings.long_poll_timeout`). The watches are not started.
    """

    def __init__(self, api: ConsulAPI, wait: float = WATCH_WAIT) -> None:
        self.api = api
        self.wait = wait

    def key(self, key: str, on_change: Callable[[Any], None], *, name: str) -> Watch:
        """Watch one key: ``on_change(entry or None)``."""
        return Watch(self.api, key, on_change, kind=WatchKind.KEY, wait=self.wait, name=name)

    def tree(self, prefix: str, on_change: Callable[[Any], None], *, name: str) -> Watch:
        """Watch a prefix with its values: ``on_change(entries)``."""
        return Watch(self.api, prefix, on_change, kind=WatchKind.TREE, wait=self.wait, name=name)

    def keys(self, prefix: str, on_change: Callable[[Any], None], *, name: str,
             separator: str | None = None) -> Watch:
        """Watch a prefix's key names (up to ``separator``): ``on_change(names)``."""
        return Watch(self.api, prefix, on_change, kind=WatchKind.KEYS, wait=self.wait, name=name,
                     separator=separator)


_NOTHING = object()
