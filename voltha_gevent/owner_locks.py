"""Owner locks taken and released in Consul transactions, many items per call.

Every item's work waits on its own ``acquire(item)`` or ``release(item)`` call, exactly as
if it made one HTTP call of its own; underneath, one batcher greenlet gathers the calls
made in the same moment into transactions of up to 64 operations and keeps at most
:data:`TXN_CONCURRENCY` of them in flight. Taking an item's lock costs one operation,
``lock owners/<item>`` (its result carries the ``ModifyIndex``, the fencing token), and the
items' values are then read in a read-only transaction of ``get workload/<item>``, in a pool
of its own so that the next locks go out meanwhile; releasing costs one ``unlock``. Consul
applies writing transactions one after the other through Raft,
at a cost per transaction more than per operation (measured: 9,900 locks from 9 workers took
0.40 s as 32 lock + 32 get per transaction, 0.21 s as 63 locks), while a read-only
transaction is answered without Raft - so the value no longer shares the lock's transaction
and a failover's locks take half the Raft applies. A value read after the lock is at least as
new as the lock.

A transaction is all or nothing, so one item's refusal must not fail the rest: Consul's
409 lists every failed operation; the items they belong to get their own answer - "held
by another session or in lock-delay" (``None``), "the workload key is gone" (taken again
without reading it), "not held by this session" (``False`` for a release) - and the others
are sent again at once. "Invalid session" fails every item of the batch with
:class:`SessionInvalid`; Consul unavailable fails them with :class:`ConsulUnavailable`, for
the caller to retry as it would any call.

An acquire whose caller gave up (killed while waiting) but whose lock was taken is released
by the batcher itself: no lock outlives the task that wanted it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import gevent
import gevent.event
import gevent.pool
import structlog

from .consul_api import ConsulAPI
from .entries import KVEntry
from .errors import ConsulRejected, ConsulUnavailable, SessionInvalid, TransactionFailed
from .keys import Keys, held_owners
from .supervision import LOOP_KILL_TIMEOUT
from .txn import TXN_MAX_OPS, TxnOp

log = structlog.get_logger(__name__)

#: Owner-lock transactions in flight at once per worker, and as many value reads. Consul
#: applies writing transactions one after the other anyway; what more in flight saves is the
#: wait between them on a loaded machine, where each answer also waits for a core. With 2,
#: and each slot reading the values before it sent its next locks, a survivor of a failover
#: at 100,000 x 10 took its 1,100 items in 9 rounds of two round trips; failover took
#: 5.3-5.9 s, and 4.8-5.1 s with the reads in a pool of their own (4.8 s with 4 in flight).
#: Liveness does not queue behind them: it has its own connection and thread, and neither a
#: check pass nor a session renewal is a Raft write.
TXN_CONCURRENCY = 4
#: Operations one item's acquire takes (lock) and its release (unlock).
ACQUIRE_OPS, RELEASE_OPS = 1, 1

Taken = tuple[KVEntry, KVEntry | None]
"""The owner-lock entry as taken (its ModifyIndex is the token) and the workload entry."""


@dataclass
class _Call:
    verb: str  # "acquire" | "release"
    item: str
    session_id: str
    result: gevent.event.AsyncResult = field(default_factory=gevent.event.AsyncResult)
    abandoned: bool = False


@dataclass
class OwnerLockStats:
    transactions: int = 0
    acquired: int = 0
    refused: int = 0
    released: int = 0
    resent: int = 0
    orphans_released: int = 0


class OwnerLocks:
    """Batched ``acquire``/``release`` of ``owners/<item>`` for one worker."""

    def __init__(self, api: ConsulAPI, keys: Keys, instance_id: str, *,
                 concurrency: int = TXN_CONCURRENCY) -> None:
        self.api = api
        self.keys = keys
        self.instance_id = instance_id
        self.stats = OwnerLockStats()
        self._queue: collections.deque[_Call] = collections.deque()
        self._wake = gevent.event.Event()
        self._pool = gevent.pool.Pool(concurrency)  # lock and unlock transactions
        self._reads = gevent.pool.Pool(concurrency)  # the read-only value reads after them
        self._batcher: gevent.Greenlet | None = None

    def acquire(self, item: str, session_id: str) -> Taken | None:
        """Take ``owners/<item>``: the entries, or None while someone else holds it (or lock-delay)."""
        call = self._submit(_Call("acquire", item, session_id))
        try:
            return call.result.get()  # type: ignore[no-any-return]
        finally:
            if not call.result.ready():
                call.abandoned = True  # killed while waiting: a lock it wins is let go

    def release(self, item: str, session_id: str) -> bool:
        """Let go of ``owners/<item>``; False when this session did not hold it."""
        return bool(self._submit(_Call("release", item, session_id)).result.get())

    def stop(self) -> None:
        batcher, self._batcher = self._batcher, None
        if batcher is not None and batcher is not gevent.getcurrent():
            batcher.kill(block=True, timeout=LOOP_KILL_TIMEOUT)
        self._pool.kill(block=True, timeout=LOOP_KILL_TIMEOUT)
        self._reads.kill(block=True, timeout=LOOP_KILL_TIMEOUT)
        for call in self._queue:
            call.result.set_exception(ConsulUnavailable("worker stopped"))
        self._queue.clear()

    def _submit(self, call: _Call) -> _Call:
        self._queue.append(call)
        self._wake.set()
        if self._batcher is None or self._batcher.dead:
            self._batcher = gevent.spawn(self._run)
            self._batcher.name = "owner-locks"
        return call

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            gevent.sleep(0)  # let the other callers of this moment join the batch
            while self._queue:
                batch = self._take_batch()
                self._pool.spawn(self._send, batch)
                gevent.sleep(0)  # the pool blocks when full: back-pressure from Consul's answers

    def _take_batch(self) -> list[_Call]:
        batch: list[_Call] = []
        room = TXN_MAX_OPS
        while self._queue:
            call = self._queue[0]
            need = ACQUIRE_OPS if call.verb == "acquire" else RELEASE_OPS
            if need > room:
                break
            self._queue.popleft()
            batch.append(call)
            room -= need
        return batch

    def _ops(self, batch: list[_Call]) -> tuple[list[TxnOp], list[int]]:
        """The operations of ``batch`` and, per operation, the index of its call."""
        ops: list[TxnOp] = []
        owner: list[int] = []
        for index, call in enumerate(batch):
            key = self.keys.owner(call.item)
            if call.verb == "release":
                new = [TxnOp.unlock(key, self.instance_id, call.session_id)]
            else:
                new = [TxnOp.lock(key, self.instance_id, call.session_id)]
            ops.extend(new)
            owner.extend([index] * len(new))
        return ops, owner

    def _send(self, batch: list[_Call]) -> None:
        while batch:
            ops, owner = self._ops(batch)
            self.stats.transactions += 1
            try:
                entries = self.api.txn(ops)
            except TransactionFailed as exc:
                batch = self._settle_failures(batch, owner, exc)
                self.stats.resent += len(batch)
                continue
            except SessionInvalid as exc:
                self._fail(batch, exc)
                return
            except (ConsulUnavailable, ConsulRejected) as exc:
                self._fail(batch, exc)
                return
            except gevent.GreenletExit:
                self._fail(batch, ConsulUnavailable("owner-lock batch interrupted"))
                raise
            # The values are read in a pool of their own: this slot sends the next locks
            # meanwhile instead of waiting a second round trip.
            self._reads.spawn(self._deliver, batch, entries)
            return

    def _settle_failures(self, batch: list[_Call], owner: list[int], exc: TransactionFailed) -> list[_Call]:
        """Answer the calls whose operations failed; the rest are sent again."""
        failed: dict[int, list[str]] = {}
        for op_index, what in exc.errors:
            if 0 <= op_index < len(owner):
                failed.setdefault(owner[op_index], []).append(what.lower())
            else:  # an error we cannot place: fail them all rather than guess
                self._fail(batch, ConsulUnavailable(f"owner-lock transaction: {exc.detail}"))
                return []
        if any("invalid session" in what for whats in failed.values() for what in whats):
            self._fail(batch, SessionInvalid(f"owner lock: {exc.detail}", session_id=batch[0].session_id))
            return []
        again = []
        for index, call in enumerate(batch):
            whats = failed.get(index)
            if whats is None:
                again.append(call)
            elif call.verb == "release":
                self._answer(call, False)  # not held by this session: nothing to let go
            else:
                self.stats.refused += 1
                self._answer(call, None)  # held by another session, or lock-delay
        return again

    def _deliver(self, batch: list[_Call], entries: list[KVEntry]) -> None:
        by_key = {entry.key: entry for entry in entries}
        wanted = [self.keys.item(call.item) for call in batch if call.verb == "acquire"]
        if wanted:
            try:
                by_key.update(read_existing(self.api, wanted))
            except (ConsulUnavailable, ConsulRejected) as exc:
                self._values_unread(batch, exc)
                return
        for call in batch:
            key = self.keys.owner(call.item)
            if call.verb == "release":
                self.stats.released += 1
                self._answer(call, True)
                continue
            lock = by_key.get(key)
            if lock is None or lock.session != call.session_id:
                call.result.set_exception(ConsulUnavailable(f"garbled answer: lock {key} not read back"))
                continue
            self.stats.acquired += 1
            value = by_key.get(self.keys.item(call.item))
            self._answer(call, (lock, value))

    def _values_unread(self, batch: list[_Call], error: BaseException) -> None:
        """The locks are ours but the values could not be read: let the locks go and fail the
        acquires (their callers try again) - a lock no task knows about would outlive it."""
        for call in batch:
            if call.verb == "acquire":
                self._submit(_Call("release", call.item, call.session_id))
                call.result.set_exception(error)
            else:
                self.stats.released += 1
                self._answer(call, True)

    def _answer(self, call: _Call, value: object) -> None:
        if call.abandoned and call.verb == "acquire" and value is not None:
            self.stats.orphans_released += 1
            self._submit(_Call("release", call.item, call.session_id))
        call.result.set(value)

    def _fail(self, batch: list[_Call], error: BaseException) -> None:
        for call in batch:
            call.result.set_exception(error)


def read_existing(api: ConsulAPI, names: list[str]) -> dict[str, KVEntry]:
    """key -> entry of every key in ``names`` that exists, read in read-only ``get``
    transactions of up to 64 keys (answered without a Raft apply).

    A key that does not exist fails its ``get`` and with it the transaction (Consul's
    "doesn't exist"): it is left out, and the rest of its batch is read again.
    """
    found: dict[str, KVEntry] = {}
    for start in range(0, len(names), TXN_MAX_OPS):
        batch = names[start : start + TXN_MAX_OPS]
        while batch:
            try:
                entries = api.txn([TxnOp.get(name) for name in batch])
            except TransactionFailed as exc:
                missing = {index for index, _ in exc.errors}
                if not missing or not all(0 <= index < len(batch) for index in missing):
                    raise ConsulUnavailable(f"read of {len(batch)} keys: {exc.detail}") from exc
                batch = [name for index, name in enumerate(batch) if index not in missing]
                continue
            found.update((entry.key, entry) for entry in entries)
            break
    return found


def read_holders(api: ConsulAPI, keys: Keys, items: list[str]) -> dict[str, str]:
    """item -> holder (the lock's value: an instance id) of every item in ``items`` whose
    owner lock is held (:func:`read_existing`: a missing key is a free item).

    The cost grows with the items asked about, not with every lock there is (a listing of
    ``owners/``).
    """
    entries = read_existing(api, [keys.owner(item) for item in items])
    return held_owners(keys.owners, entries.values())


__all__ = ["OwnerLockStats", "OwnerLocks", "Taken", "read_existing", "read_holders"]
