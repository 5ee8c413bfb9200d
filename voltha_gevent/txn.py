"""Transaction operations: :class:`TxnOp` and :func:`chunked`, Consul's 64-operation and body caps.

Pure data: building operations does no I/O; :meth:`ConsulAPI.txn
<voltha_gevent.consul_api.ConsulAPI.txn>` sends them. A transaction guarded by
``check-session`` on a lock fails as a whole once that session is gone, so a writer that lost
its session writes nothing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Consul caps a transaction at this many operations.
TXN_MAX_OPS = 64
#: Bytes of values (base64) per transaction: half of Consul's 512 KiB request body cap,
#: which also counts keys and JSON.
TXN_MAX_VALUE_BYTES = 256 * 1024


def _b64(value: bytes | str | None) -> str:
    if value is None:
        value = b""
    if isinstance(value, str):
        value = value.encode("utf-8")
    return base64.b64encode(value).decode("ascii")


@dataclass(frozen=True)
class TxnOp:
    """One KV operation of a transaction; build them with the class methods."""

    verb: str
    key: str
    value: bytes | str | None = None
    index: int | None = None
    session: str | None = None

    def value_bytes(self) -> int:
        """Size of the value as sent (base64)."""
        if self.value is None:
            return 0
        size = len(self.value.encode("utf-8") if isinstance(self.value, str) else self.value)
        return 4 * ((size + 2) // 3)

    def to_consul(self) -> dict[str, Any]:
        kv: dict[str, Any] = {"Verb": self.verb, "Key": self.key}
        if self.value is not None:
            kv["Value"] = _b64(self.value)
        if self.index is not None:
            kv["Index"] = self.index
        if self.session is not None:
            kv["Session"] = self.session
        return {"KV": kv}

    @classmethod
    def set(cls, key: str, value: bytes | str) -> TxnOp:
        return cls("set", key, value=value if value != b"" else "")

    @classmethod
    def cas(cls, key: str, value: bytes | str, index: int) -> TxnOp:
        return cls("cas", key, value=value, index=index)

    @classmethod
    def delete(cls, key: str) -> TxnOp:
        return cls("delete", key)

    @classmethod
    def delete_cas(cls, key: str, index: int) -> TxnOp:
        return cls("delete-cas", key, index=index)

    @classmethod
    def lock(cls, key: str, value: bytes | str, session: str) -> TxnOp:
        return cls("lock", key, value=value, session=session)

    @classmethod
    def unlock(cls, key: str, value: bytes | str, session: str) -> TxnOp:
        return cls("unlock", key, value=value, session=session)

    @classmethod
    def get(cls, key: str) -> TxnOp:
        return cls("get", key)

    @classmethod
    def check_session(cls, key: str, session: str) -> TxnOp:
        return cls("check-session", key, session=session)

    @classmethod
    def check_not_exists(cls, key: str) -> TxnOp:
        return cls("check-not-exists", key)

    @classmethod
    def check_index(cls, key: str, index: int) -> TxnOp:
        return cls("check-index", key, index=index)


def chunked(ops: list[TxnOp], guards: list[TxnOp], limit: int = TXN_MAX_OPS,
            max_value_bytes: int = TXN_MAX_VALUE_BYTES) -> Iterator[list[TxnOp]]:
    """Split ``ops`` into transactions of at most ``limit`` operations and about
    ``max_value_bytes`` of base64 values (an op bigger than that goes alone), each led by
    ``guards``."""
    room = limit - len(guards)
    if room <= 0:
        raise ValueError("guards leave no room for operations")
    batch: list[TxnOp] = []
    size = 0
    for op in ops:
        op_size = op.value_bytes()
        if batch and (len(batch) == room or size + op_size > max_value_bytes):
            yield [*guards, *batch]
            batch, size = [], 0
        batch.append(op)
        size += op_size
    if batch:
        yield [*guards, *batch]


__all__ = ["TXN_MAX_OPS", "TXN_MAX_VALUE_BYTES", "TxnOp", "chunked"]
