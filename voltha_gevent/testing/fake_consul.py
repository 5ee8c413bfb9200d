"""An in-memory Consul 1.8.7 for tests, driven by gevent, behind python-consul2's client API.

:class:`FakeConsul` is one "cluster"; ``fake.client(node)`` hands out objects that accept the
same calls as python-consul2 0.1.5's ``consul.Consul`` for the subset this project uses (KV,
sessions, transactions, agent services and TTL checks, status) and answer with the same
shapes and the same exception classes (imported from :mod:`voltha_gevent.consul_api`). The
behaviour was checked against a real ``consul agent -dev`` 1.8.7 by ``tests/contract``.

Guarantees:

* One global Raft-like index that only grows (until :meth:`FakeConsul.reset_index`); every
  write call bumps it, failed ones included, as a real leader does.
* Blocking queries wait on real gevent time (``wait`` plus up to wait/16 of jitter, default
  5 min, at most 10 min) and return as soon as the watched index passes the one given;
  deletes under a prefix wake prefix queries with a higher index (tombstones); a query on a
  missing key wakes on any KV change (Consul's radix-tree watch at its coarsest); an index
  above the store's blocks the whole wait and returns the lower index.
* Time-based state (session TTL after 2 x TTL, TTL checks, lock-delay, critical-service
  deregistration) runs on the fake's clock. With a :class:`ManualClock` nothing expires
  until ``advance()``; with the default real clock a reaper greenlet owned by the fake
  expires things without any API call until :meth:`FakeConsul.close`.
* When a session is invalidated (destroy, TTL expiry, an attached check going critical or
  being deregistered, a node failing), ``behavior=release`` clears ``Session`` on its keys
  and bumps their ``ModifyIndex``, ``behavior=delete`` deletes them, lock-delay starts on
  each of them, and blocked queries wake.
* Fault injection (:meth:`~FakeConsul.outage`, :meth:`~FakeConsul.set_down`,
  :meth:`~FakeConsul.fail_next`, :meth:`~FakeConsul.set_latency`) affects client calls only;
  the cluster's own clock keeps running, so sessions expire during an outage as they would.

Everything is cooperative: no threads, blocking through :class:`gevent.event.Event`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import gevent
import gevent.event
import requests
import structlog

from voltha_gevent.consul_api import BadRequest, ClientError, ConsulException, NotFound

log = structlog.get_logger(__name__)

#: Consul's default and maximum blocking-query wait.
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
#: Values above this many bytes answer 413 (Consul's kv_max_value_size / txn_max_req_len).
MAX_VALUE_BYTES = 512 * 1024
MAX_TXN_OPS = 64
#: Session TTL bounds, and the factor Consul applies before it expires a session.
MIN_SESSION_TTL = 10.0
MAX_SESSION_TTL = 86400.0
SESSION_TTL_MULTIPLIER = 2.0
DEFAULT_LOCK_DELAY = 15.0
#: The check every node has, and that sessions get unless told otherwise.
SERF_HEALTH = "serfHealth"
#: What a client agent cut off from its servers answers calls that need them.
SERVERS_CUT_ERROR = "500 rpc error making call: No known Consul servers"
#: How long the reaper sleeps at most between looks at the clock (real clock only).
REAPER_MAX_SLEEP = 0.5
#: The address status.leader() reports.
FAKE_LEADER = "127.0.0.1:8300"

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})


# Clocks


class Clock(Protocol):
    def now(self) -> float: ...


class MonotonicClock:
    """Real time: ``time.monotonic()``."""

    def now(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told; ``advance()`` makes the fake process expiries at once."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += seconds
        for listener in list(self._listeners):
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)


# Helpers


def parse_duration(text: Any) -> float:
    """Seconds in a Go duration string ("5s", "1m30s", "500ms"); ValueError when malformed."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text:
        raise ValueError(f"bad duration {text!r}")
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"bad duration {text!r}")
    return total


def _as_bytes(value: Any) -> bytes | None:
    """A PUT body as Consul stores it: empty bodies become null."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif not isinstance(value, (bytes, bytearray)):
        value = str(value).encode("utf-8")
    return bytes(value) or None


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


def _q(text: str) -> str:
    """Go's %q for the plain strings Consul quotes in its messages."""
    return json.dumps(text)


def _refresh_loop_time() -> None:
    """gevent timers count from the loop's cached time, stale after a long blocking stretch."""
    gevent.get_hub().loop.update_now()


def _connection_error(why: str) -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(f"fake consul: {why}")


class RequestCount(int):
    """Total client calls as an int; ``count["kv.get"]`` gives one endpoint's calls."""

    by_endpoint: dict[str, int]

    def __new__(cls, total: int, by_endpoint: dict[str, int]) -> RequestCount:
        obj = super().__new__(cls, total)
        obj.by_endpoint = dict(by_endpoint)
        return obj

    def __getitem__(self, endpoint: str) -> int:
        return self.by_endpoint.get(endpoint, 0)


# State


@dataclasses.dataclass
class _Entry:
    key: str
    value: bytes | None
    create_index: int
    modify_index: int
    lock_index: int = 0
    flags: int = 0
    session: str | None = None

    def same_as(self, other: _Entry) -> bool:
        """Consul's DirEntry.Equal: an identical write does not touch ModifyIndex."""
        return (self.value, self.flags, self.session, self.lock_index) == (
            other.value,
            other.flags,
            other.session,
            other.lock_index,
        )

    def to_api(self, *, b64: bool = False, with_value: bool = True) -> dict[str, Any]:
        value: Any = self.value if with_value else None
        if b64:
            value = _b64(value)
        out: dict[str, Any] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": value,
        }
        if self.session:
            out["Session"] = self.session
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.modify_index
        return out


@dataclasses.dataclass
class _Session:
    id: str
    name: str
    node: str
    checks: list[str] | None  # what the request carried; None = default
    lock_delay: float
    behavior: str
    ttl: float | None
    ttl_text: str
    create_index: int
    deadline: float | None = None

    @property
    def watched_checks(self) -> set[str]:
        if self.checks is None:
            return {SERF_HEALTH}
        return set(self.checks) | ({SERF_HEALTH} if self.checks else set())

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": int(round(self.lock_delay * 1e9)),
            "Behavior": self.behavior,
            "TTL": self.ttl_text,
            "NodeChecks": [SERF_HEALTH] if self.checks is None or self.checks else [],
            "ServiceChecks": None,
        }
        if self.checks:
            out["Checks"] = list(self.checks)
        out["CreateIndex"] = self.create_index
        out["ModifyIndex"] = self.create_index
        return out


@dataclasses.dataclass
class _Check:
    node: str
    check_id: str
    name: str
    service_id: str
    service_name: str
    status: str
    ttl: float | None
    deadline: float | None = None
    notes: str = ""
    output: str = ""
    deregister_after: float | None = None
    critical_since: float | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": [],
            "Type": "ttl" if self.ttl is not None else "",
            "Definition": {},
            "CreateIndex": 0,
            "ModifyIndex": 0,
        }


class _TxnAbort(Exception):
    """One failed transaction operation; the message is Consul's."""


# The cluster


class FakeConsul:
    """The shared state of a mocked Consul cluster; see the module docstring."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._index = 1
        self._kv_index = 0
        self._session_index = 0
        self._kv: dict[str, _Entry] = {}
        self._tombstones: dict[str, int] = {}
        self._lock_delays: dict[str, float] = {}
        self._sessions: dict[str, _Session] = {}
        self._checks: dict[tuple[str, str], _Check] = {}
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._nodes: dict[str, bool] = {}
        self._changed = gevent.event.Event()
        self._down = False
        self._servers_cut = False
        self._latency = 0.0
        self._failures: list[Callable[[], Exception]] = []
        self._counts: Counter[str] = Counter()
        self._closed = False
        self._reaper: gevent.Greenlet | None = None
        self._reaper_wake = gevent.event.Event()
        if isinstance(self.clock, ManualClock):
            self.clock.subscribe(self._on_clock)
        else:
            self._reaper = gevent.spawn(self._reap_loop)
            self._reaper.link_exception(self._reaper_died)

    # Lifecycle

    def client(self, node: str = "node1", *, timeout: float | None = None) -> FakeClient:
        """A python-consul2 look-alike talking to this cluster through the agent on ``node``.

        ``timeout`` mimics the real client's HTTP timeout: a call that would block longer
        raises ``requests.exceptions.ReadTimeout`` after ``timeout`` seconds.
        """
        self._nodes.setdefault(node, True)
        return FakeClient(self, node, timeout)

    def close(self) -> None:
        """Stop the reaper greenlet (idempotent); the state stays readable."""
        self._closed = True
        if isinstance(self.clock, ManualClock):
            self.clock.unsubscribe(self._on_clock)
        if self._reaper is not None:
            self._reaper_wake.set()
            self._reaper.join(timeout=1.0)
            self._reaper.kill(block=True, timeout=1.0)
            self._reaper = None

    def __enter__(self) -> FakeConsul:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Fault injection

    def set_down(self, down: bool) -> None:
        """While down, every client call (blocked ones included) raises ConnectionError."""
        self._down = bool(down)
        self._notify()

    def set_servers_cut(self, cut: bool) -> None:
        """While cut, the agent answers its own endpoints (``agent.*``: check passes, service
        registration) but every call that needs the servers - KV, sessions, transactions,
        blocking queries in flight included - fails with HTTP 500, as a client agent
        partitioned from its servers does."""
        self._servers_cut = bool(cut)
        self._notify()

    @contextlib.contextmanager
    def outage(self) -> Iterator[FakeConsul]:
        """``with fake.outage():`` Consul is unreachable inside the block, and back after it."""
        self.set_down(True)
        try:
            yield self
        finally:
            self.set_down(False)

    def fail_next(self, n: int = 1, exc_factory: Callable[[], Exception] | None = None) -> None:
        """Make the next ``n`` client calls raise ``exc_factory()`` (default: 500 No cluster leader)."""
        factory = exc_factory or (lambda: ConsulException("500 No cluster leader"))
        self._failures.extend([factory] * n)

    def set_latency(self, seconds: float) -> None:
        """Every client call sleeps ``seconds`` (gevent time) before it is served."""
        self._latency = max(0.0, float(seconds))

    def expire_session(self, session_id: str) -> bool:
        """Invalidate ``session_id`` as a TTL expiry would (lock-delay applies); False if unknown."""
        if session_id not in self._sessions:
            return False
        self._invalidate(session_id, self.clock.now(), why="expired-by-test")
        return True

    def drop_key(self, key: str) -> bool:
        """Delete ``key`` behind the clients' backs (no request counted); False if absent."""
        if key not in self._kv:
            return False
        idx = self._bump()
        self._delete_entry(key, idx)
        self._notify()
        return True

    def reset_index(self, new_index: int) -> None:
        """Move the index back to ``new_index``, as a snapshot restore does; wakes every query."""
        new_index = max(1, int(new_index))
        self._index = new_index
        self._kv_index = min(self._kv_index, new_index)
        self._session_index = min(self._session_index, new_index)
        for entry in self._kv.values():
            entry.create_index = min(entry.create_index, new_index)
            entry.modify_index = min(entry.modify_index, new_index)
        for key, idx in self._tombstones.items():
            self._tombstones[key] = min(idx, new_index)
        for session in self._sessions.values():
            session.create_index = min(session.create_index, new_index)
        log.info("fake-consul-index-reset", index=new_index)
        self._notify()

    def reap_tombstones(self) -> None:
        """Forget deleted keys, as Consul's tombstone GC does: prefix indexes may go backwards."""
        self._tombstones.clear()
        self._notify()

    def set_node_health(self, node: str, passing: bool) -> None:
        """Flip ``node``'s serfHealth; failing invalidates every session that watches it."""
        self._nodes[node] = bool(passing)
        if not passing:
            self._invalidate_by_check(node, SERF_HEALTH, self.clock.now())
        self._notify()

    # Introspection

    @property
    def index(self) -> int:
        """The current global (Raft) index."""
        return self._index

    @property
    def request_count(self) -> RequestCount:
        """Client calls so far: an int, indexable by endpoint ("kv.get", "session.renew", ...)."""
        return RequestCount(sum(self._counts.values()), self._counts)

    @property
    def request_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def reset_request_count(self) -> None:
        self._counts.clear()

    def dump(self, prefix: str = "") -> dict[str, tuple[bytes | None, str | None]]:
        """``{key: (value, session)}`` for every key under ``prefix``."""
        return {k: (e.value, e.session) for k, e in sorted(self._kv.items()) if k.startswith(prefix)}

    def sessions(self) -> dict[str, dict[str, Any]]:
        """Live sessions by id, in the shape ``session.info`` returns."""
        return {sid: s.to_api() for sid, s in self._sessions.items()}

    def checks(self, node: str | None = None) -> dict[str, dict[str, Any]]:
        """Registered checks by id (of ``node`` only when given)."""
        return {c.check_id: c.to_api() for (n, _), c in self._checks.items() if node in (None, n)}

    def check_ttl(self, check_id: str) -> float | None:
        """The TTL (seconds) a TTL check was registered with, as Consul parsed it."""
        for (_, cid), check in self._checks.items():
            if cid == check_id:
                return check.ttl
        return None

    # Plumbing used by the clients

    def _enter(self, endpoint: str) -> None:
        self._counts[endpoint] += 1
        if self._latency:
            _refresh_loop_time()
            gevent.sleep(self._latency)
        if self._down:
            raise _connection_error("consul is down")
        if self._servers_cut and not endpoint.startswith("agent."):
            raise ConsulException(SERVERS_CUT_ERROR)
        if self._failures:
            raise self._failures.pop(0)()
        self._expire_due()

    def _bump(self) -> int:
        self._index += 1
        return self._index

    def _notify(self) -> None:
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()
        self._reaper_wake.set()

    def _blocking(
        self,
        index: Any,
        wait: Any,
        timeout: float | None,
        query: Callable[[], tuple[int, Any]],
    ) -> tuple[str, Any]:
        """Run ``query`` as a Consul blocking query would; returns (index as str, data)."""
        min_index = _parse_index(index)
        max_wait = _parse_wait(wait) if min_index else 0.0
        idx, data = query()
        if not min_index or idx > min_index:
            return str(idx), data
        budget = max_wait + random.uniform(0.0, max_wait / 16.0)
        start = time.monotonic()
        deadline = start + budget
        while True:
            remaining = deadline - time.monotonic()
            if timeout is not None:
                remaining = min(remaining, start + timeout - time.monotonic())
            if remaining <= 0:
                break
            _refresh_loop_time()
            self._changed.wait(remaining)
            if self._down:
                raise _connection_error("consul went down during a blocking query")
            if self._servers_cut:
                raise ConsulException(SERVERS_CUT_ERROR)
            idx, data = query()
            if idx > min_index:
                return str(idx), data
        if timeout is not None and budget > timeout:
            raise requests.exceptions.ReadTimeout(f"fake consul: read timed out ({timeout}s)")
        return str(idx), data

    # KV reads

    def _kv_table_index(self) -> int:
        return max(1, self._kv_index)

    def _prefix_index(self, prefix: str, entries: list[_Entry]) -> int:
        if not prefix:
            return self._kv_table_index()
        idx = max((e.modify_index for e in entries), default=0)
        idx = max([idx, *(i for k, i in self._tombstones.items() if k.startswith(prefix))])
        return idx or self._kv_table_index()

    def _under(self, prefix: str) -> list[_Entry]:
        return [e for k, e in sorted(self._kv.items()) if k.startswith(prefix)]

    def _query_key(self, key: str) -> tuple[int, Any]:
        entry = self._kv.get(key)
        if entry is None:
            return self._kv_table_index(), None
        return entry.modify_index, entry.to_api()

    def _query_list(self, prefix: str) -> tuple[int, Any]:
        entries = self._under(prefix)
        return self._prefix_index(prefix, entries), [e.to_api() for e in entries] or None

    def _query_keys(self, prefix: str, separator: str | None) -> tuple[int, Any]:
        entries = self._under(prefix)
        keys: list[str] = []
        for entry in entries:
            name = entry.key
            if separator:
                cut = name.find(separator, len(prefix))
                if cut >= 0:
                    name = name[: cut + len(separator)]
            if not keys or keys[-1] != name:
                keys.append(name)
        return self._prefix_index(prefix, entries), keys or None

    # KV writes

    def _store(self, new: _Entry, idx: int) -> _Entry:
        """Consul's kvsSetTxn: keep CreateIndex, skip identical writes, bump the KV index."""
        old = self._kv.get(new.key)
        new.create_index = old.create_index if old is not None else idx
        if old is not None and old.same_as(new):
            return old
        new.modify_index = idx
        self._kv[new.key] = new
        self._tombstones.pop(new.key, None)
        self._kv_index = max(self._kv_index, idx)
        return new

    def _delete_entry(self, key: str, idx: int) -> bool:
        if self._kv.pop(key, None) is None:
            return False
        self._tombstones[key] = idx
        self._kv_index = max(self._kv_index, idx)
        return True

    def _set(self, key: str, value: bytes | None, flags: int, idx: int) -> _Entry:
        old = self._kv.get(key)
        session = old.session if old is not None else None
        return self._store(_Entry(key, value, idx, idx, 0, flags, session), idx)

    def _cas(self, key: str, value: bytes | None, flags: int, cas: int, idx: int) -> _Entry | None:
        old = self._kv.get(key)
        if (old is None and cas != 0) or (old is not None and old.modify_index != cas):
            return None
        return self._set(key, value, flags, idx)

    def _lock(self, key: str, value: bytes | None, flags: int, session: str, idx: int) -> _Entry | None:
        if not session:
            raise _TxnAbort("missing session")
        if session not in self._sessions:
            raise _TxnAbort(f"invalid session {_q(session)}")
        old = self._kv.get(key)
        lock_index = 1
        if old is not None:
            if old.session == session:
                lock_index = old.lock_index
            elif old.session:
                return None
            else:
                lock_index = old.lock_index + 1
        return self._store(_Entry(key, value, idx, idx, lock_index, flags, session), idx)

    def _unlock(self, key: str, value: bytes | None, flags: int, session: str, idx: int) -> _Entry | None:
        if not session:
            raise _TxnAbort("missing session")
        old = self._kv.get(key)
        if old is None or old.session != session:
            return None
        return self._store(_Entry(key, value, idx, idx, old.lock_index, flags, None), idx)

    def _delete_tree(self, prefix: str, idx: int) -> None:
        for key in [k for k in self._kv if k.startswith(prefix)]:
            self._delete_entry(key, idx)

    def _in_lock_delay(self, key: str) -> bool:
        until = self._lock_delays.get(key)
        if until is None:
            return False
        if self.clock.now() >= until:
            del self._lock_delays[key]
            return False
        return True

    # Transactions

    def _txn(self, payload: list[dict[str, Any]]) -> dict[str, Any]:
        ops = _decode_txn(payload)
        read_only = all(op["Verb"] in _READ_VERBS for op in ops)
        delays = [
            (i, op["Key"])
            for i, op in enumerate(ops)
            if op["Verb"] == "lock" and self._in_lock_delay(op["Key"])
        ]
        if delays:
            errors = [
                {"OpIndex": i, "What": f"failed to lock key {_q(k)} due to lock delay"} for i, k in delays
            ]
            raise _txn_conflict(errors, read_only)
        idx = self._index if read_only else self._bump()
        saved = self._save_kv()
        results: list[dict[str, Any]] = []
        errors = []
        for i, op in enumerate(ops):
            try:
                results.extend(self._txn_op(op, idx))
            except _TxnAbort as exc:
                errors.append({"OpIndex": i, "What": str(exc)})
        if errors:
            self._restore_kv(saved)
            raise _txn_conflict(errors, read_only)
        if not read_only:
            self._notify()
        answer: dict[str, Any] = {"Results": results, "Errors": None}
        if read_only:
            answer.update({"Index": 0, "LastContact": 0, "KnownLeader": True, "ConsistencyLevel": ""})
        return answer

    def _save_kv(self) -> tuple[Any, ...]:
        kv = {k: dataclasses.replace(e) for k, e in self._kv.items()}
        return kv, dict(self._tombstones), self._kv_index

    def _restore_kv(self, saved: tuple[Any, ...]) -> None:
        self._kv, self._tombstones, self._kv_index = saved

    def _txn_op(self, op: dict[str, Any], idx: int) -> list[dict[str, Any]]:
        verb, key = op["Verb"], op["Key"]
        value, flags, cas, session = op["Value"], op["Flags"], op["Index"], op["Session"]
        entry: _Entry | None = None
        if verb == "set":
            entry = self._set(key, value, flags, idx)
        elif verb == "cas":
            entry = self._cas(key, value, flags, cas, idx)
            if entry is None:
                raise _TxnAbort(f"failed to set key {_q(key)}, index is stale")
        elif verb == "lock":
            entry = self._lock(key, value, flags, session, idx)
            if entry is None:
                raise _TxnAbort(f"failed to lock key {_q(key)}, lock is already held")
        elif verb == "unlock":
            entry = self._unlock(key, value, flags, session, idx)
            if entry is None:
                raise _TxnAbort(
                    f"failed to unlock key {_q(key)}, lock isn't held, or is held by another session"
                )
        elif verb == "get":
            entry = self._kv.get(key)
            if entry is None:
                raise _TxnAbort(f"key {_q(key)} doesn't exist")
            return [{"KV": entry.to_api(b64=True)}]
        elif verb == "get-tree":
            return [{"KV": e.to_api(b64=True)} for e in self._under(key)]
        elif verb == "check-index":
            entry = self._check_index(key, cas)
        elif verb == "check-session":
            entry = self._check_session(key, session)
        elif verb == "check-not-exists":
            if key in self._kv:
                raise _TxnAbort(f"key {_q(key)} exists")
        elif verb == "delete":
            self._delete_entry(key, idx)
        elif verb == "delete-tree":
            self._delete_tree(key, idx)
        elif verb == "delete-cas":
            old = self._kv.get(key)
            if old is not None and old.modify_index != cas:
                raise _TxnAbort(f"failed to delete key {_q(key)}, index is stale")
            self._delete_entry(key, idx)
        else:
            raise _TxnAbort(f"unknown KV verb {_q(verb)}")
        return [] if entry is None else [{"KV": entry.to_api(b64=True, with_value=False)}]

    def _check_index(self, key: str, index: int) -> _Entry:
        entry = self._kv.get(key)
        if entry is None:
            raise _TxnAbort(f"failed to check index, key {_q(key)} doesn't exist")
        if entry.modify_index != index:
            raise _TxnAbort(
                f"failed index check for key {_q(key)}, current modify index {entry.modify_index} != {index}"
            )
        return entry

    def _check_session(self, key: str, session: str) -> _Entry:
        entry = self._kv.get(key)
        if entry is None:
            raise _TxnAbort(f"failed to check session, key {_q(key)} doesn't exist")
        if (entry.session or "") != session:
            raise _TxnAbort(
                f"failed session check for key {_q(key)}, current session"
                f" {_q(entry.session or '')} != {_q(session)}"
            )
        return entry

    # Sessions

    def _create_session(
        self,
        node: str,
        name: str | None,
        checks: list[str] | None,
        lock_delay: Any,
        behavior: str,
        ttl: Any,
    ) -> str:
        ttl_seconds = _session_ttl(ttl)
        if node not in self._nodes:
            self._bump()
            raise ConsulException("500 Missing node registration")
        for check_id in [SERF_HEALTH] if checks is None else list(checks):
            self._require_healthy(node, check_id)
        session = _Session(
            id=str(uuid.uuid4()),
            name=name or "",
            node=node,
            checks=None if checks is None else list(checks),
            lock_delay=parse_duration(f"{lock_delay}s"),
            behavior=behavior,
            ttl=ttl_seconds,
            ttl_text=f"{ttl}s" if ttl else "",
            create_index=self._bump(),
        )
        if ttl_seconds:
            session.deadline = self.clock.now() + SESSION_TTL_MULTIPLIER * ttl_seconds
        self._sessions[session.id] = session
        self._session_index = session.create_index
        self._notify()
        return session.id

    def _require_healthy(self, node: str, check_id: str) -> None:
        if check_id == SERF_HEALTH:
            if not self._nodes.get(node, False):
                self._bump()
                raise ConsulException(f"500 Check '{SERF_HEALTH}' is in critical state")
            return
        check = self._checks.get((node, check_id))
        if check is None:
            self._bump()
            raise ConsulException(f"500 Missing check '{check_id}' registration")
        if check.status == "critical":
            self._bump()
            raise ConsulException(f"500 Check '{check_id}' is in critical state")

    def _renew(self, session_id: str) -> list[dict[str, Any]]:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"Session id '{session_id}' not found")
        if session.ttl:
            session.deadline = self.clock.now() + SESSION_TTL_MULTIPLIER * session.ttl
            self._reaper_wake.set()
        return [session.to_api()]

    def _destroy(self, session_id: str) -> bool:
        if session_id in self._sessions:
            self._invalidate(session_id, self.clock.now(), why="destroyed")
        else:
            self._bump()
        return True

    def _invalidate(self, session_id: str, at: float, *, why: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        idx = self._bump()
        self._session_index = idx
        for key, entry in list(self._kv.items()):
            if entry.session != session_id:
                continue
            if session.behavior == "delete":
                self._delete_entry(key, idx)
            else:
                self._store(dataclasses.replace(entry, session=None), idx)
            if session.lock_delay > 0:
                self._lock_delays[key] = at + session.lock_delay
        log.debug("fake-consul-session-invalidated", session=session_id, why=why, index=idx)
        self._notify()

    def _invalidate_by_check(self, node: str, check_id: str, at: float) -> None:
        for sid, session in list(self._sessions.items()):
            if session.node == node and check_id in session.watched_checks:
                self._invalidate(sid, at, why=f"check {check_id} critical")

    # Agent: services and checks

    def _register_service(
        self, node: str, name: str, service_id: str | None, check: dict[str, Any] | None, info: dict[str, Any]
    ) -> bool:
        sid = service_id or name
        self._services[(node, sid)] = {"ID": sid, "Service": name, **info}
        check_id = f"service:{sid}"
        old = self._checks.pop((node, check_id), None)
        if check:
            spec = {str(k).lower(): v for k, v in check.items()}
            self._checks[(node, check_id)] = self._new_check(node, check_id, name, sid, spec, old)
        elif old is not None:
            self._invalidate_by_check(node, check_id, self.clock.now())
        self._notify()
        return True

    def _new_check(
        self, node: str, check_id: str, name: str, sid: str, spec: dict[str, Any], old: _Check | None
    ) -> _Check:
        ttl = parse_duration(spec["ttl"]) if spec.get("ttl") else None
        status = str(spec.get("status") or ("critical" if ttl is not None else "passing"))
        check = _Check(
            node=node,
            check_id=check_id,
            name=str(spec.get("name") or f"Service '{name}' check"),
            service_id=sid,
            service_name=name,
            status=status,
            ttl=ttl,
            notes=str(spec.get("notes") or ""),
        )
        if spec.get("deregistercriticalserviceafter"):
            check.deregister_after = parse_duration(spec["deregistercriticalserviceafter"])
        if old is not None:  # the agent keeps a re-registered check's state
            check.status, check.output, check.deadline = old.status, old.output, old.deadline
            check.critical_since = old.critical_since
        if check.status == "critical" and check.critical_since is None:
            check.critical_since = self.clock.now()
        return check

    def _deregister_service(self, node: str, service_id: str) -> bool:
        self._services.pop((node, service_id), None)
        check_id = f"service:{service_id}"
        if self._checks.pop((node, check_id), None) is not None:
            self._invalidate_by_check(node, check_id, self.clock.now())
        self._notify()
        return True

    def _update_check(self, node: str, check_id: str, status: str, notes: str | None) -> bool:
        check = self._checks.get((node, check_id))
        if check is None or check.ttl is None:
            raise ConsulException(f"500 CheckID {_q(check_id)} does not have associated TTL")
        now = self.clock.now()
        check.output = notes or ""
        check.deadline = now + check.ttl
        self._set_check_status(check, status, now)
        self._reaper_wake.set()
        return True

    def _set_check_status(self, check: _Check, status: str, at: float) -> None:
        was = check.status
        check.status = status
        if status != "critical":
            check.critical_since = None
        elif was != "critical":
            check.critical_since = at
            self._invalidate_by_check(check.node, check.check_id, at)

    # Time

    def _on_clock(self) -> None:
        self._expire_due()

    def _due_events(self) -> list[tuple[float, str, Any]]:
        events: list[tuple[float, str, Any]] = []
        for sid, session in self._sessions.items():
            if session.deadline is not None:
                events.append((session.deadline, "session", sid))
        for key, check in self._checks.items():
            if check.status != "critical" and check.deadline is not None and check.ttl is not None:
                events.append((check.deadline, "check", key))
            if check.status == "critical" and check.deregister_after and check.critical_since is not None:
                events.append((check.critical_since + check.deregister_after, "deregister", key))
        return sorted(events, key=lambda ev: ev[0])

    def _expire_due(self) -> None:
        """Process every expiry that is due on the clock, earliest first."""
        now = self.clock.now()
        for _ in range(10_000):  # bounded: each round removes or changes one event
            due = [ev for ev in self._due_events() if ev[0] <= now]
            if not due:
                return
            at, kind, what = due[0]
            if kind == "session":
                self._invalidate(what, at, why="ttl")
            elif kind == "check":
                check = self._checks[what]
                check.deadline = None
                check.output = "TTL expired"
                self._set_check_status(check, "critical", at)
                self._notify()
            else:
                self._deregister_service(what[0], self._checks[what].service_id)

    def _next_deadline(self) -> float | None:
        events = self._due_events()
        return events[0][0] if events else None

    def _reap_loop(self) -> None:
        while not self._closed:
            self._reaper_wake.clear()
            self._expire_due()
            nxt = self._next_deadline()
            sleep = REAPER_MAX_SLEEP if nxt is None else nxt - self.clock.now()
            self._reaper_wake.wait(min(REAPER_MAX_SLEEP, max(0.001, sleep)))

    def _reaper_died(self, greenlet: gevent.Greenlet) -> None:
        log.error("fake-consul-reaper-died", error=repr(greenlet.exception))


# Parsing


def _parse_index(index: Any) -> int:
    if not index:
        return 0
    try:
        value = int(index)
    except (TypeError, ValueError):
        raise BadRequest("400 Invalid index") from None
    if value < 0:
        raise BadRequest("400 Invalid index")
    return value


def _parse_wait(wait: Any) -> float:
    if not wait:
        return DEFAULT_WAIT
    try:
        seconds = parse_duration(wait)
    except ValueError:
        raise BadRequest("400 Invalid wait time") from None
    return min(seconds, MAX_WAIT) if seconds > 0 else DEFAULT_WAIT


def _session_ttl(ttl: Any) -> float | None:
    """python-consul2 asserts 10 <= ttl <= 86400 itself; the server says 500 otherwise."""
    if not ttl:
        return None
    assert 10 <= ttl <= 86400  # noqa: S101 - python-consul2 0.1.5 does exactly this
    seconds = parse_duration(f"{ttl}s")
    if not MIN_SESSION_TTL <= seconds <= MAX_SESSION_TTL:
        raise ConsulException(
            f"500 Invalid Session TTL '{int(seconds * 1e9)}', must be between [10s=24h0m0s]"
        )
    return seconds


def _decode_txn(payload: Any) -> list[dict[str, Any]]:
    body = json.dumps(payload)
    ops = json.loads(body)
    if not isinstance(ops, list):
        raise BadRequest(
            "400 Failed to parse body: json: cannot unmarshal object into Go value of type api.TxnOps"
        )
    if len(ops) > MAX_TXN_OPS:
        raise ClientError(f"413 Transaction contains too many operations ({len(ops)} > {MAX_TXN_OPS})")
    if len(body) > MAX_VALUE_BYTES:
        raise ClientError(
            f"413 Request body({len(body)} bytes) too large, max size: {MAX_VALUE_BYTES} bytes."
            " See https://www.consul.io/docs/agent/options.html#txn_max_req_len."
        )
    decoded = []
    for op in ops:
        kv = {str(k).lower(): v for k, v in (op.get("KV") or {}).items()}
        try:
            value = base64.b64decode(kv["value"], validate=True) if kv.get("value") else None
        except (binascii.Error, ValueError):
            raise BadRequest("400 Failed to parse body: illegal base64 data at input byte 0") from None
        decoded.append(
            {
                "Verb": str(kv.get("verb") or ""),
                "Key": str(kv.get("key") or ""),
                "Value": value or None,
                "Flags": int(kv.get("flags") or 0),
                "Index": int(kv.get("index") or 0),
                "Session": str(kv.get("session") or ""),
            }
        )
    return decoded


def _txn_conflict(errors: list[dict[str, Any]], read_only: bool) -> ClientError:
    body: dict[str, Any] = {"Results": None, "Errors": errors}
    if read_only:
        body.update({"Index": 0, "LastContact": 0, "KnownLeader": True, "ConsistencyLevel": ""})
    return ClientError("409 " + json.dumps(body, indent=4) + "\n")


# The client


class FakeClient:
    """What ``consul.Consul(...)`` would be, talking to a :class:`FakeConsul` through ``node``."""

    def __init__(self, fake: FakeConsul, node: str, timeout: float | None = None) -> None:
        self.fake = fake
        self.node = node
        self.timeout = timeout
        self.token: str | None = None
        self.consistency = "default"
        self.dc: str | None = None
        self.kv = _KV(self)
        self.session = _SessionAPI(self)
        self.txn = _Txn(self)
        self.agent = _Agent(self)
        self.status = _Status(self)


class _Endpoint:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.fake = client.fake


class _KV(_Endpoint):
    def get(
        self,
        key: str,
        index: Any = None,
        recurse: bool = False,
        wait: Any = None,
        token: str | None = None,
        consistency: str | None = None,
        keys: bool = False,
        separator: str | None = None,
        dc: str | None = None,
    ) -> tuple[str, Any]:
        assert not key.startswith("/"), "keys should not start with a forward slash"  # noqa: S101
        self.fake._enter("kv.get")
        if keys:
            query: Callable[[], tuple[int, Any]] = lambda: self.fake._query_keys(key, separator)  # noqa: E731
        elif recurse:
            query = lambda: self.fake._query_list(key)  # noqa: E731
        else:
            query = lambda: self.fake._query_key(key)  # noqa: E731
        return self.fake._blocking(index, wait, self.client.timeout, query)

    def put(
        self,
        key: str,
        value: Any,
        cas: int | None = None,
        flags: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
        token: str | None = None,
        dc: str | None = None,
    ) -> bool:
        assert not key.startswith("/"), "keys should not start with a forward slash"  # noqa: S101
        fake = self.fake
        fake._enter("kv.put")
        if cas is not None and (acquire or release):
            params = {
                "cas": cas,
                **({"acquire": acquire} if acquire else {}),
                **({"release": release} if release else {}),
            }
            query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
            raise BadRequest(f"400 Conflicting flags: {query}")
        data = _as_bytes(value)
        if data is not None and len(data) > MAX_VALUE_BYTES:
            raise ClientError(
                f"413 Request body({len(data)} bytes) too large, max size: {MAX_VALUE_BYTES} bytes."
                " See https://www.consul.io/docs/agent/options.html#kv_max_value_size."
            )
        if acquire and fake._in_lock_delay(key):
            return False
        idx = fake._bump()
        try:
            entry = self._apply(key, data, int(flags or 0), cas, acquire, release, idx)
        except _TxnAbort as exc:
            raise ConsulException(f"500 {exc}") from None
        fake._notify()
        return entry is not None

    def _apply(
        self, key: str, data: bytes | None, flags: int, cas: int | None, acquire: Any, release: Any, idx: int
    ) -> _Entry | None:
        fake = self.fake
        if acquire:
            return fake._lock(key, data, flags, str(acquire), idx)
        if release:
            return fake._unlock(key, data, flags, str(release), idx)
        if cas is not None:
            return fake._cas(key, data, flags, int(cas), idx)
        return fake._set(key, data, flags, idx)

    def delete(
        self,
        key: str,
        recurse: bool | None = None,
        cas: int | None = None,
        token: str | None = None,
        dc: str | None = None,
    ) -> bool:
        assert not key.startswith("/"), "keys should not start with a forward slash"  # noqa: S101
        fake = self.fake
        fake._enter("kv.delete")
        idx = fake._bump()
        if recurse:
            fake._delete_tree(key, idx)
        elif cas is not None:
            old = fake._kv.get(key)
            if old is not None and old.modify_index != int(cas):
                return False
            fake._delete_entry(key, idx)
        else:
            fake._delete_entry(key, idx)
        fake._notify()
        return True


class _SessionAPI(_Endpoint):
    def create(
        self,
        name: str | None = None,
        node: str | None = None,
        checks: list[str] | None = None,
        lock_delay: int = 15,
        behavior: str = "release",
        ttl: int | None = None,
        dc: str | None = None,
        token: str | None = None,
    ) -> str:
        assert behavior in ("release", "delete"), "behavior must be release or delete"  # noqa: S101
        self.fake._enter("session.create")
        return self.fake._create_session(node or self.client.node, name, checks, lock_delay, behavior, ttl)

    def renew(self, session_id: str, dc: str | None = None, token: str | None = None) -> dict[str, Any]:
        self.fake._enter("session.renew")
        return self.fake._renew(session_id)[0]

    def destroy(self, session_id: str, dc: str | None = None, token: str | None = None) -> bool:
        self.fake._enter("session.destroy")
        return self.fake._destroy(session_id)

    def info(
        self,
        session_id: str,
        index: Any = None,
        wait: Any = None,
        consistency: str | None = None,
        dc: str | None = None,
        token: str | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        fake = self.fake
        fake._enter("session.info")

        def query() -> tuple[int, Any]:
            session = fake._sessions.get(session_id)
            return max(1, fake._session_index), (session.to_api() if session else None)

        return fake._blocking(index, wait, self.client.timeout, query)

    def list(
        self,
        index: Any = None,
        wait: Any = None,
        consistency: str | None = None,
        dc: str | None = None,
        token: str | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        fake = self.fake
        fake._enter("session.list")

        def query() -> tuple[int, Any]:
            return max(1, fake._session_index), [s.to_api() for s in fake._sessions.values()]

        return fake._blocking(index, wait, self.client.timeout, query)

    def node(
        self,
        node: str,
        index: Any = None,
        wait: Any = None,
        consistency: str | None = None,
        dc: str | None = None,
        token: str | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        fake = self.fake
        fake._enter("session.node")

        def query() -> tuple[int, Any]:
            return max(1, fake._session_index), [
                s.to_api() for s in fake._sessions.values() if s.node == node
            ]

        return fake._blocking(index, wait, self.client.timeout, query)


class _Txn(_Endpoint):
    def put(self, payload: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
        self.fake._enter("txn.put")
        return self.fake._txn(payload)


class _Status(_Endpoint):
    def leader(self) -> str:
        self.fake._enter("status.leader")
        return FAKE_LEADER

    def peers(self) -> list[str]:
        self.fake._enter("status.peers")
        return [FAKE_LEADER]


class _Agent(_Endpoint):
    def __init__(self, client: FakeClient) -> None:
        super().__init__(client)
        self.service = _AgentService(client)
        self.check = _AgentCheck(client)

    def self(self, token: str | None = None) -> dict[str, Any]:
        self.fake._enter("agent.self")
        return {"Config": {"NodeName": self.client.node, "Datacenter": "dc1", "Server": True}}

    def checks(self, token: str | None = None) -> dict[str, dict[str, Any]]:
        self.fake._enter("agent.checks")
        return self.fake.checks(self.client.node)

    def services(self, token: str | None = None) -> dict[str, dict[str, Any]]:
        self.fake._enter("agent.services")
        return {
            sid: dict(info) for (node, sid), info in self.fake._services.items() if node == self.client.node
        }


class _AgentService(_Endpoint):
    def register(
        self,
        name: str,
        service_id: str | None = None,
        address: str | None = None,
        port: int | None = None,
        tags: list[str] | None = None,
        check: dict[str, Any] | None = None,
        token: str | None = None,
        meta: dict[str, str] | None = None,
        script: str | None = None,
        interval: str | None = None,
        ttl: str | None = None,
        http: str | None = None,
        timeout: str | None = None,
        enable_tag_override: bool = False,
    ) -> bool:
        self.fake._enter("agent.service.register")
        if not check and ttl:
            check = {"ttl": ttl}
        info = {
            "Address": address or "",
            "Port": port or 0,
            "Tags": list(tags or []),
            "Meta": dict(meta or {}),
        }
        return self.fake._register_service(self.client.node, name, service_id, check, info)

    def deregister(self, service_id: str, token: str | None = None) -> bool:
        self.fake._enter("agent.service.deregister")
        return self.fake._deregister_service(self.client.node, service_id)


class _AgentCheck(_Endpoint):
    def _update(self, endpoint: str, check_id: str, status: str, notes: str | None) -> bool:
        self.fake._enter(endpoint)
        return self.fake._update_check(self.client.node, check_id, status, notes)

    def ttl_pass(self, check_id: str, notes: str | None = None, token: str | None = None) -> bool:
        return self._update("agent.check.ttl_pass", check_id, "passing", notes)

    def ttl_warn(self, check_id: str, notes: str | None = None, token: str | None = None) -> bool:
        return self._update("agent.check.ttl_warn", check_id, "warning", notes)

    def ttl_fail(self, check_id: str, notes: str | None = None, token: str | None = None) -> bool:
        return self._update("agent.check.ttl_fail", check_id, "critical", notes)


__all__ = [
    "DEFAULT_WAIT",
    "MAX_WAIT",
    "FakeClient",
    "FakeConsul",
    "ManualClock",
    "MonotonicClock",
    "RequestCount",
    "parse_duration",
]
