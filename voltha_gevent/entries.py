"""A key as Consul returns it (:class:`KVEntry`, what every read yields) and the value size limit.

Pure data: no I/O, no Consul client. An entry read before the session died is a snapshot;
its ``session`` field says who held the key then, not now.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConsulRejected


@dataclass(frozen=True)
class KVEntry:
    """One key as Consul returns it; ``session`` is None when the key is not locked."""

    key: str
    value: bytes | None
    create_index: int
    modify_index: int
    lock_index: int = 0
    flags: int = 0
    session: str | None = None

    @classmethod
    def from_consul(cls, raw: Mapping[str, Any]) -> KVEntry:
        value = raw.get("Value")
        if isinstance(value, str):  # txn results carry base64 text
            value = base64.b64decode(value)
        return cls(
            key=raw["Key"],
            value=value,
            create_index=int(raw.get("CreateIndex", 0)),
            modify_index=int(raw.get("ModifyIndex", 0)),
            lock_index=int(raw.get("LockIndex", 0)),
            flags=int(raw.get("Flags", 0)),
            session=raw.get("Session") or None,
        )

    def text(self) -> str | None:
        """The value as UTF-8 text, or None when it is missing or not UTF-8."""
        if self.value is None:
            return None
        try:
            return self.value.decode("utf-8")
        except UnicodeDecodeError:
            return None


#: Consul rejects values larger than this (512 KiB).
MAX_VALUE_BYTES = 512 * 1024


def check_value_size(value: bytes | str | None) -> None:
    """Raise :class:`ConsulRejected` for a value Consul would refuse as too large."""
    size = len(value.encode("utf-8") if isinstance(value, str) else value or b"")
    if size > MAX_VALUE_BYTES:
        raise ConsulRejected(f"value of {size} bytes exceeds Consul's {MAX_VALUE_BYTES}")


__all__ = ["MAX_VALUE_BYTES", "KVEntry", "check_value_size"]
