"""The one retry helper, :class:`Retrying`, and the seed's backoff schedule.

Retries :class:`~voltha_gevent.errors.ConsulUnavailable` (and
:class:`~voltha_gevent.errors.PermissionDenied` at the slowest step); a
:class:`~voltha_gevent.errors.SessionInvalid` propagates at once: the session is gone, and
with it every lock, so retrying the call cannot help. Waits happen on the ``stop`` event, so
stopping ends a retry loop at once. No client library here: it retries any callable.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import gevent.event
import structlog

from .errors import ConsulTLSError, ConsulUnavailable, PermissionDenied, Stopped

log = structlog.get_logger(__name__)

#: The seed's backoff schedule, in seconds; the last step repeats.
BACKOFF_SCHEDULE: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Each backoff step is stretched by up to this fraction, so that a cluster of nodes does
#: not retry in lock step.
BACKOFF_JITTER = 0.1


def backoff_step(failures: int, *, slowest: bool = False) -> float:
    """Pause after the ``failures``-th consecutive failure (1-based) on the seed's schedule."""
    if slowest:
        return BACKOFF_SCHEDULE[-1]
    return BACKOFF_SCHEDULE[min(max(failures, 1), len(BACKOFF_SCHEDULE)) - 1]


T = TypeVar("T")


@dataclass
class RetryStats:
    """Counters the metrics endpoint exposes."""

    errors: int = 0
    retries: int = 0
    permission_denied: int = 0
    last_error: str | None = None


@dataclass
class Retrying:
    """The one retry helper: the seed's backoff schedule, reset on success.

    Retries :class:`ConsulUnavailable` (and :class:`PermissionDenied` at the slowest step,
    so a missing ACL right is reported, not hammered). Anything else propagates. Waiting
    happens on ``stop``: setting it ends the retries at once with :class:`Stopped`.
    """

    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    schedule: tuple[float, ...] = BACKOFF_SCHEDULE
    stats: RetryStats = field(default_factory=RetryStats)
    on_error: Callable[[Exception], None] | None = None
    _failing: bool = False

    def call(self, fn: Callable[[], T], *, what: str, deadline: float | None = None) -> T:
        """Call ``fn`` until it succeeds; ``deadline`` (monotonic) bounds the retrying."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Stopped(f"{what} abandoned: stopping")
            try:
                result = fn()
            except (ConsulUnavailable, PermissionDenied) as exc:
                self._note_failure(exc, what, attempt)
                delay = self.delay(attempt, slowest=isinstance(exc, PermissionDenied))
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                attempt += 1
                self.stats.retries += 1
                if self.stop.wait(delay):
                    raise Stopped(f"{what} abandoned: stopping") from exc
                continue
            if self._failing:
                self._failing = False
                log.info("reconnected-to-consul", what=what, attempts=attempt + 1)
            return result

    def delay(self, attempt: int, *, slowest: bool = False) -> float:
        base = self.schedule[-1] if slowest else self.schedule[min(attempt, len(self.schedule) - 1)]
        return base * (1.0 + random.uniform(0.0, BACKOFF_JITTER))

    def note_denied(self, exc: PermissionDenied, what: str = "consul-call") -> None:
        """Count and log a 403 once, whoever met it (:class:`ConsulAPI`'s ``on_denied`` hook)."""
        if getattr(exc, "_noted", False):
            return
        exc._noted = True  # type: ignore[attr-defined]
        self.stats.permission_denied += 1
        self.stats.last_error = str(exc)
        log.error("consul-permission-denied", what=what, error=str(exc))

    def _note_failure(self, exc: Exception, what: str, attempt: int) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        if isinstance(exc, PermissionDenied):
            self.note_denied(exc, what)
        elif isinstance(exc, ConsulTLSError):
            log.error("consul-tls-failed", what=what, error=str(exc))
        elif attempt == 0:
            event = "consul-not-up" if "Connection" in str(exc) else "cannot-connect-to-consul"
            log.warning(event, what=what, error=str(exc))
        self._failing = True
        if self.on_error is not None:
            self.on_error(exc)


__all__ = ["BACKOFF_JITTER", "BACKOFF_SCHEDULE", "RetryStats", "Retrying", "backoff_step"]
