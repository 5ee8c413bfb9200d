"""Transaction operations: :class:`TxnOp` and :func:`chunked`, Consul's 64-operation cap.

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


def chunked(ops: list[TxnOp], guards: list[TxnOp], limit: int = TXN_MAX_OPS) -> Iterator[list[TxnOp]]:
    """Split ``ops`` into transactions of at most ``limit`` operations, each led by ``guards``."""
    room = limit - len(guards)
    if room <= 0:
        raise ValueError("guards leave no room for operations")
    for start in range(0, len(ops), room):
        yield [*guards, *ops[start : start + room]]


__all__ = ["TXN_MAX_OPS", "TxnOp", "chunked"]
