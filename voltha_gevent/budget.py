"""The fencing budget: why a node stops every item's work before another node can start it.

All times count from ``t0``, the instant the node *sent* its last liveness signal that
succeeded - the agent check pass **and** the server-side session renew (the older of the
two). Sent, not answered: Consul resets its timers when the signal arrives, which is after
it was sent, so ``t0`` is on the safe side.

::

    t0 + lease                               the node stops trusting its session: every
                                             Ownership.valid() is False, fencing starts
    t0 + lease + stop_timeout + FENCE_MARGIN every item's work has stopped (on_revoked
                                             returned, or the work was killed)
    t0 + trust + lock_delay                  the earliest instant Consul can give one of
                                             this node's owner locks to another node

``trust`` is how long Consul keeps the session after the last signal it saw: the agent
marks the TTL check critical no sooner than ``check_ttl`` after the last pass, and the
servers invalidate no sooner than ``session_ttl`` after the last renew (they really wait
twice that); so ``trust = min(check_ttl, session_ttl)``, or ``session_ttl`` without a check.
``lock_delay`` then keeps the locks of an invalidated session from everyone.

The validated inequality, :meth:`FencingBudget.check`::

    lease + stop_timeout + FENCE_MARGIN <= trust + lock_delay,   lease = LEASE_FRACTION x trust

``FENCE_MARGIN`` covers the event loop reaching the deadline late and the bounded kill of
work that ignored ``on_revoked``. Liveness signals go out every ``trust / HEARTBEATS``, so a
single lost signal does not end the lease.

Consul's third invalidation path, ``serfHealth`` (the servers lose the host's agent), is
not bounded by these settings; its floor is memberlist's failure detection. Work that checks
``Ownership.valid()`` before each side effect is safe on that path too: the lease ends at
most ``lease`` after the servers last answered a renew.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The share of ``trust`` the node keeps trusting its session without a fresh liveness signal.
LEASE_FRACTION = 2.0 / 3.0
#: Liveness signals (check pass and renew) sent per ``trust``.
HEARTBEATS = 4
#: Slack for a late event loop at the lease deadline plus the bounded kill of stuck work.
FENCE_MARGIN = 0.5
#: How long a killed work greenlet may take to die before its item is reported stuck.
KILL_TIMEOUT = 0.25


@dataclass(frozen=True)
class FencingBudget:
    """The budget implied by four settings; see the module docstring for the formula."""

    session_ttl: float
    check_ttl: float
    lock_delay: float
    stop_timeout: float

    @property
    def trust(self) -> float:
        """Seconds Consul keeps the session alive after the last liveness signal it saw."""
        if self.check_ttl:
            return min(self.check_ttl, self.session_ttl)
        return self.session_ttl

    @property
    def lease(self) -> float:
        """Seconds after ``t0`` at which the node stops trusting its session and fences."""
        return LEASE_FRACTION * self.trust

    @property
    def heartbeat(self) -> float:
        """Seconds between two liveness signals (check pass, renew)."""
        return self.trust / HEARTBEATS

    @property
    def fenced_by(self) -> float:
        """Seconds after ``t0`` by which every item's work has stopped."""
        return self.lease + self.stop_timeout + FENCE_MARGIN

    @property
    def takeover(self) -> float:
        """Seconds after ``t0`` before which no other node can take this node's locks."""
        return self.trust + self.lock_delay

    @property
    def slack(self) -> float:
        """``takeover - fenced_by``: how much later the fence could end and still be safe."""
        return self.takeover - self.fenced_by

    def formula(self) -> str:
        """The inequality with these numbers, for error messages and ``/status``."""
        trust_name = "min(check_ttl, session_ttl)" if self.check_ttl else "session_ttl"
        return (
            f"lease ({LEASE_FRACTION:.3g} x trust = {self.lease:.3g}) + stop_timeout ({self.stop_timeout:g}) "
            f"+ margin ({FENCE_MARGIN:g}) = {self.fenced_by:.3g} must be <= "
            f"trust ({trust_name} = {self.trust:g}) + lock_delay ({self.lock_delay:g}) = {self.takeover:.3g}"
        )

    def holds(self) -> bool:
        return self.fenced_by <= self.takeover + 1e-9


__all__ = ["FENCE_MARGIN", "HEARTBEATS", "KILL_TIMEOUT", "LEASE_FRACTION", "FencingBudget"]
