"""What the request dispatcher may see of its node: :class:`DispatchNode`.

A :class:`~voltha_gevent.node.Node` is one; tests pass a stand-in. The dispatcher reads the
node's id, the live members and the items it runs (local state only, no Consul call), and
takes one action on it: at its first ``start()`` it adds its quiesce as a revoke barrier, so a
revocation waits for the item's requests before the owner lock is released. It never sets
anything on the node: the node serves the dispatcher's counters on ``/metrics`` once the
application attaches it (``node.attach_dispatcher(d)``, or ``node.add_dispatcher(...)``,
which builds and attaches one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..lease import Ownership
    from ..membership import MemberRecord
    from ..revocation import RevokeBarrier


class DispatchNode(Protocol):
    """The node as the dispatcher uses it (all reads are local state)."""

    @property
    def instance_id(self) -> str: ...

    def members(self) -> dict[str, MemberRecord]:
        """Live members as last seen (instance id -> record)."""

    def owned(self) -> set[str]:
        """Items this node runs."""

    def pending(self) -> set[str]:
        """Items assigned here whose owner lock is not held yet."""

    def ownership(self, item: str) -> Ownership | None:
        """The item's ownership while it is valid here, else None."""

    def add_revoke_barrier(self, barrier: RevokeBarrier) -> None:
        """Run ``barrier(item, timeout)`` on revocation, before the owner lock is released."""
