"""The one retry policy: :class:`Backoff` (how long to pause after the n-th failure) and
:class:`Retrying`, the helper that retries a call along it.

:data:`BACKOFF` is the pause schedule of every loop that retries a failed Consul call or
restarts a crashed component; loops that wait for something else (a held lock, lock-delay)
use a :class:`Backoff` of their own. :class:`Retrying` retries
:class:`~voltha_gevent.errors.ConsulUnavailable` (and
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

#: The backoff schedule of failed Consul calls, in seconds; the last step repeats.
BACKOFF_SCHEDULE: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Each of :class:`Retrying`'s pauses is stretched by up to this fraction, so that a cluster
#: of nodes does not retry in lock step.
BACKOFF_JITTER = 0.1


@dataclass(frozen=True)
class Backoff:
    """Pauses between tries: ``step(n)`` after the n-th consecutive failure (1-based).

    The schedule's last step repeats. ``slowest`` is the pause for a failure that trying
    again soon cannot fix (a 403, a rejected request): it is reported, not hammered.
    ``jitter`` stretches every pause by up to that fraction.
    """

    schedule: tuple[float, ...] = BACKOFF_SCHEDULE
    slowest: float = BACKOFF_SCHEDULE[-1]
    jitter: float = 0.0

    def step(self, failures: int, *, slowest: bool = False) -> float:
        """Seconds to pause after the ``failures``-th consecutive failure (``slowest``: see above)."""
        base = self.slowest if slowest else self.schedule[min(max(failures, 1), len(self.schedule)) - 1]
        return base * (1.0 + random.uniform(0.0, self.jitter)) if self.jitter else base


#: The one policy for failed Consul calls and crashed components.
BACKOFF = Backoff()


def backoff_step(failures: int, *, slowest: bool = False) -> float:
    """:data:`BACKOFF`'s pause after the ``failures``-th consecutive failure (1-based)."""
    return BACKOFF.step(failures, slowest=slowest)


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
    """The one retry helper: ``backoff`` (:data:`BACKOFF` with jitter), reset on success.

    Retries :class:`ConsulUnavailable` (and :class:`PermissionDenied` at the slowest step,
    so a missing ACL right is reported, not hammered). Anything else propagates. Waiting
    happens on ``stop``: setting it ends the retries at once with :class:`Stopped`.
    """

    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    backoff: Backoff = Backoff(jitter=BACKOFF_JITTER)
    stats: RetryStats = field(default_factory=RetryStats)
    on_error: Callable[[Exception], None] | None = None
    _failing: bool = False

    def call(self, fn: Callable[[], T], *, what: str, deadline: float | None = None) -> T:
        """Call ``fn`` until it succeeds; ``deadline`` (monotonic) bounds the retrying."""
        failures = 0
        while True:
            if self.stop.is_set():
                raise Stopped(f"{what} abandoned: stopping")
            try:
                result = fn()
            except (ConsulUnavailable, PermissionDenied) as exc:
                failures += 1
                self._note_failure(exc, what, failures)
                delay = self.backoff.step(failures, slowest=isinstance(exc, PermissionDenied))
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                self.stats.retries += 1
                if self.stop.wait(delay):
                    raise Stopped(f"{what} abandoned: stopping") from exc
                continue
            if self._failing:
                self._failing = False
                log.info("reconnected-to-consul", what=what, attempts=failures + 1)
            return result

    def note_denied(self, exc: PermissionDenied, what: str = "consul-call") -> None:
        """Count and log a 403 once, whoever met it (:class:`ConsulAPI`'s ``on_denied`` hook)."""
        if getattr(exc, "_noted", False):
            return
        exc._noted = True  # type: ignore[attr-defined]
        self.stats.permission_denied += 1
        self.stats.last_error = str(exc)
        log.error("consul-permission-denied", what=what, error=str(exc))

    def _note_failure(self, exc: Exception, what: str, failures: int) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)
        if isinstance(exc, PermissionDenied):
            self.note_denied(exc, what)
        elif isinstance(exc, ConsulTLSError):
            log.error("consul-tls-failed", what=what, error=str(exc))
        elif failures == 1:
            event = "consul-not-up" if "Connection" in str(exc) else "cannot-connect-to-consul"
            log.warning(event, what=what, error=str(exc))
        self._failing = True
        if self.on_error is not None:
            self.on_error(exc)


__all__ = ["BACKOFF", "BACKOFF_JITTER", "BACKOFF_SCHEDULE", "Backoff", "RetryStats", "Retrying",
           "backoff_step"]
