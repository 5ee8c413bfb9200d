"""This node's membership record, and reading everybody's.

``<prefix>/members/<instance_id>`` is acquired with the session, so it is locked exactly
while the node's session lives (on invalidation Consul releases it; readers count only
locked records and the leader prunes unlocked ones). A watch re-creates it if it
disappears or loses its lock (``remaking-membership-record``). A second process started with
the same instance id finds the key held by another session: it does not steal it, logs
``duplicate-instance-id`` and waits for the key to be free.

If the session is invalidated the record is gone with it; the coordinator re-joins with a
new session and a new :class:`MembershipKeeper`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import structlog

from . import __version__
from .entries import KVEntry
from .keys import Keys, child_name
from .lock import LockSession, SessionLock

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MemberRecord:
    """What peers need to know about a member."""

    instance_id: str
    internal_host: str
    external_host: str
    rest_port: int
    capacity: float = 1.0
    version: str = __version__
    started_at: float = 0.0
    #: The node itself asked to hand its items over (``Node.drain()``, SIGTERM): it dies
    #: with the session, unlike an operator's ``drain/<member>`` key.
    draining: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | None) -> MemberRecord:
        """Parse a record; raises ValueError when it is not a usable one."""
        data = json.loads(raw or b"")
        if not isinstance(data, dict):
            raise ValueError("record is not a JSON object")
        try:
            capacity = float(data.get("capacity", 1.0))
            record = cls(
                instance_id=str(data["instance_id"]),
                internal_host=str(data.get("internal_host", "")),
                external_host=str(data.get("external_host") or data.get("internal_host", "")),
                rest_port=int(data.get("rest_port", 0)),
                capacity=capacity,
                version=str(data.get("version", "")),
                started_at=float(data.get("started_at", 0.0)),
                draining=data.get("draining") is True,
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"record lacks a usable field: {exc}") from exc
        if not capacity > 0 or capacity != capacity or capacity == float("inf"):
            raise ValueError(f"capacity {capacity!r} is not a positive number")
        return record


@dataclass
class MemberParseStats:
    skipped: int = 0


def parse_members(
    keys: Keys, entries: Iterable[KVEntry], stats: MemberParseStats | None = None
) -> dict[str, MemberRecord]:
    """Live members from a ``members/`` listing: direct children held by a session.

    Unlocked, nested, misnamed or unparsable entries are logged, counted and skipped. When
    the record's ``instance_id`` disagrees with its key, the key wins (it is what was locked).
    """
    members: dict[str, MemberRecord] = {}
    for entry in entries:
        name = child_name(keys.members, entry.key)
        if name is None or entry.session is None:
            if name is None and entry.key != keys.members:
                _skip(stats, entry.key, "not a direct child with a valid name")
            continue
        try:
            record = MemberRecord.from_json(entry.value)
        except ValueError as exc:
            _skip(stats, entry.key, str(exc))
            continue
        if record.instance_id != name:
            record = MemberRecord(**{**asdict(record), "instance_id": name})
        members[name] = record
    return members


def _skip(stats: MemberParseStats | None, key: str, why: str) -> None:
    if stats is not None:
        stats.skipped += 1
    log.warning("member-record-skipped", key=key, reason=why)


class MembershipKeeper:
    """Holds this node's record for one session."""

    def __init__(self, session: LockSession, keys: Keys, record: MemberRecord) -> None:
        self.record = record
        self.joined_at: float | None = None
        #: The other session holding our record (a duplicate instance id), while we wait.
        self.held_by: str | None = None
        self._ever_held = False
        self.lock = SessionLock(session, keys.member(record.instance_id), record.to_json(),
                                name="membership", on_acquired=self._on_acquired, on_lost=self._on_lost,
                                on_holder=self._on_holder)

    @property
    def held(self) -> bool:
        return self.lock.held

    def start(self) -> None:
        self.lock.start()

    def stop(self, *, release: bool = False) -> None:
        self.lock.stop(release=release)

    def update(self, record: MemberRecord) -> None:
        """Publish a changed record (e.g. ``draining``) by re-acquiring with our session."""
        self.record = record
        self.lock.update_value(record.to_json())

    def _on_acquired(self, entry: KVEntry) -> None:
        self.joined_at = time.time()
        self.held_by = None
        event = "remaking-membership-record" if self._ever_held else "joined-cluster"
        self._ever_held = True
        log.info(event, instance_id=self.record.instance_id)

    def _on_lost(self) -> None:
        log.warning("membership-record-lost", instance_id=self.record.instance_id)

    def _on_holder(self, entry: KVEntry | None) -> None:
        self.held_by = entry.session if entry is not None else None
        if entry is not None:
            log.error(
                "duplicate-instance-id",
                instance_id=self.record.instance_id,
                holder_session=entry.session,
                hint="another process holds this instance id; waiting for it to go",
            )
