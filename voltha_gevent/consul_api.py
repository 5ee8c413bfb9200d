"""The one module that knows python-consul2.

Everything else talks to Consul through :class:`ConsulAPI`, which wraps a python-consul2
``consul.Consul`` client (or the mocked one from :mod:`voltha_gevent.testing`) and turns the
library's mixed bag of answers into the project's own types and errors:

* network trouble, 5xx answers and garbage bodies become :class:`ConsulUnavailable`
  (transient: retry with :class:`Retrying`); a failed TLS handshake is its subclass
  :class:`ConsulTLSError`, logged as ``consul-tls-failed`` on every retry;
* "invalid session" answers (HTTP 500 on acquire, 404 on renew) become
  :class:`SessionInvalid` - never retried, the session is gone and with it every lock;
* a rolled-back transaction (HTTP 409) becomes :class:`TransactionFailed` with the parsed
  ``(op_index, what)`` list; HTTP 403 becomes :class:`PermissionDenied` (so does a transaction
  whose every failed operation was refused by the ACLs), naming the call and the key, and is
  handed to the ``on_denied`` hook wherever it happens, so a missing ACL right is reported
  even by loops that do not go through :class:`Retrying` (locks, watches).

The ACL token travels in the ``X-Consul-Token`` header only (never in a URL, so never in a
``requests`` error message), and :class:`ClientSettings` leaves it out of its ``repr``.

A switch to another client library (py-consul, say) touches this file only.
"""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import consul
import consul.base
import gevent
import gevent.event
import gevent.local
import requests
import requests.adapters
import structlog

from .errors import (
    ConsulRejected,
    ConsulTLSError,
    ConsulUnavailable,
    NotConsulAgent,
    PermissionDenied,
    SessionInvalid,
    Stopped,
    TransactionFailed,
)

log = structlog.get_logger(__name__)

# python-consul2's exception classes, re-exported so that the mocked Consul raises exactly
# what the real client raises without importing python-consul2 itself.
ConsulException = consul.base.ConsulException
NotFound = consul.base.NotFound
BadRequest = consul.base.BadRequest
ClientError = consul.base.ClientError
ACLPermissionDenied = consul.base.ACLPermissionDenied
NetworkError = requests.exceptions.RequestException

#: The seed's backoff schedule, in seconds; the last step repeats.
BACKOFF_SCHEDULE: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: Each backoff step is stretched by up to this fraction, so that a cluster of nodes does
#: not retry in lock step.
BACKOFF_JITTER = 0.1
#: Consul caps a transaction at this many operations.
TXN_MAX_OPS = 64
#: Consul rejects values larger than this (512 KiB).
MAX_VALUE_BYTES = 512 * 1024
#: Connections one client keeps open. A greenlet that finds them all busy waits for one
#: (``pool_block``) instead of opening an extra connection that urllib3 would discard after
#: the call ("Connection pool is full"): the pool paces bulk calls by Consul's answers.
POOL_SIZE = 20

#: Size of the last answer each greenlet read (a real client's ``requests`` hook sets it).
_ANSWER = gevent.local.local()


def _note_answer_size(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    _ANSWER.size = len(response.content)


def answer_size() -> int:
    """Bytes of the last answer this greenlet read from Consul, 0 when unknown (the fake).

    Read it right after a call: the watches count what their listings cost.
    """
    return getattr(_ANSWER, "size", 0)


def forget_answer_size() -> None:
    _ANSWER.size = 0
#: Default timeout of ordinary (non-blocking) calls.
CALL_TIMEOUT = 10.0
#: Margin added to a long poll's timeout on top of wait + wait/16 of server jitter.
LONG_POLL_MARGIN = 5.0


def backoff_step(failures: int, *, slowest: bool = False) -> float:
    """Pause after the ``failures``-th consecutive failure (1-based) on the seed's schedule."""
    if slowest:
        return BACKOFF_SCHEDULE[-1]
    return BACKOFF_SCHEDULE[min(max(failures, 1), len(BACKOFF_SCHEDULE)) - 1]


def duration(seconds: float) -> str:
    """``seconds`` as a Go duration string for Consul, exactly (``2.5`` -> ``"2.5s"``, never rounded)."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return f"{text or '0'}s"


def long_poll_timeout(wait: float) -> float:
    """The HTTP timeout that lets a blocking query of ``wait`` seconds finish, and no more."""
    return wait + wait / 16.0 + LONG_POLL_MARGIN


@dataclass(frozen=True)
class ClientSettings:
    """How to reach Consul; built by :mod:`voltha_gevent.config`."""

    host: str = "127.0.0.1"
    port: int = 8500
    scheme: str = "http"
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    dc: str | None = None


def make_client(settings: ClientSettings, timeout: float = CALL_TIMEOUT) -> Any:
    """A python-consul2 client for ``settings`` whose every call times out after ``timeout``.

    python-consul2 lets ``CONSUL_HTTP_ADDR``/``CONSUL_HTTP_TOKEN`` override the address and
    token it is given; here the settings win (the config layer already reads those variables
    as defaults), so what ``--print-config`` shows is what is used.
    """
    client = consul.Consul(
        host=settings.host,
        port=settings.port,
        scheme=settings.scheme,
        verify=settings.verify,
        cert=settings.cert,
        dc=settings.dc,
        timeout=timeout,
    )
    client.http = client.http_connect(
        settings.host, settings.port, settings.scheme, settings.verify, settings.cert, timeout=timeout
    )
    # One client serves many greenlets at once (a leader's batches, the owner-lock batcher,
    # watches): requests' default pool keeps 10 connections and discards any extra one.
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, pool_block=True)
    client.http.session.mount("http://", adapter)
    client.http.session.mount("https://", adapter)
    client.http.session.hooks["response"].append(_note_answer_size)
    client.scheme = settings.scheme
    client.token = settings.token
    return client


ClientFactory = Callable[[float], Any]
"""Makes a client whose calls time out after the given number of seconds."""


def client_factory(settings: ClientSettings) -> ClientFactory:
    """A :data:`ClientFactory` for real Consul."""
    return lambda timeout: make_client(settings, timeout)


# --------------------------------------------------------------------------- entries


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


# --------------------------------------------------------------------------- txn ops


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


# --------------------------------------------------------------------------- errors


def _status_of(exc: Exception) -> int | None:
    head = str(exc).split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def translate(exc: Exception, *, session_id: str | None = None) -> Exception:
    """Map a python-consul2 or requests exception onto the project's errors."""
    text = str(exc)
    if isinstance(exc, ACLPermissionDenied):
        return PermissionDenied(text or "403")
    if isinstance(exc, NotFound):
        return ConsulRejected(f"not found: {text}")
    if isinstance(exc, BadRequest):
        return ConsulRejected(text)
    if isinstance(exc, ClientError):
        if _status_of(exc) == 409:
            return _txn_failure(text)
        return ConsulRejected(text)
    if isinstance(exc, ConsulException):
        lowered = text.lower()
        if "invalid session" in lowered or ("session" in lowered and "not exist" in lowered):
            return SessionInvalid(text, session_id=session_id)
        return ConsulUnavailable(text or type(exc).__name__)
    if isinstance(exc, requests.exceptions.SSLError):
        return ConsulTLSError(text)
    if isinstance(exc, NetworkError):
        return ConsulUnavailable(network_gist(exc))
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return ConsulUnavailable(f"garbled answer: {type(exc).__name__}: {text}")
    return exc


#: Markers of a requests/urllib3 error text and the short name logged for them.
_NETWORK_GISTS = (
    ("Connection refused", "ConnectionRefused"),
    ("Name or service not known", "UnknownHost"),
    ("Temporary failure in name resolution", "UnknownHost"),
    ("Failed to resolve", "UnknownHost"),
    ("Network is unreachable", "NetworkUnreachable"),
    ("No route to host", "NoRouteToHost"),
    ("Connection reset", "ConnectionReset"),
    ("RemoteDisconnected", "ConnectionClosed"),
    ("Connection aborted", "ConnectionClosed"),
    ("timed out", "Timeout"),
)
_POOL_ADDRESS = re.compile(r"host='([^']+)', port=(\d+)")


def network_gist(exc: Exception) -> str:
    """A network error in a few words, e.g. ``ConnectionRefused 127.0.0.1:8500``.

    requests wraps urllib3's errors, whose text repeats the pool's and the connection's repr
    (300 characters per log line, the same on every retry); the chained exception keeps the
    full text for a traceback.
    """
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        kind = type(exc).__name__
    else:
        kind = next((gist for marker, gist in _NETWORK_GISTS if marker in text), "")
    found = _POOL_ADDRESS.search(text)
    where = f"{found.group(1)}:{found.group(2)}" if found else ""
    if not kind:
        return f"{type(exc).__name__}: {text[:160]}" if not where else f"{type(exc).__name__} {where}"
    return f"{kind} {where}".strip()


def _txn_failure(text: str) -> TransactionFailed | PermissionDenied:
    body = text.split(" ", 1)[1] if " " in text else ""
    errors: list[tuple[int, str]] = []
    try:
        for err in json.loads(body).get("Errors") or []:
            errors.append((int(err.get("OpIndex", -1)), str(err.get("What", ""))))
    except (ValueError, AttributeError, TypeError):
        errors.append((-1, body))
    detail = "; ".join(f"op {i}: {what}" for i, what in errors) or body
    if errors and all("permission denied" in what.lower() for _, what in errors):
        return PermissionDenied(f"transaction: {detail}")
    return TransactionFailed(detail, errors=errors)


_TRANSLATED = (ConsulException, NetworkError, ValueError, KeyError, TypeError)


# --------------------------------------------------------------------------- the API


class ConsulAPI:
    """The project's view of Consul: typed entries, project errors, no retries.

    Wrap calls in :meth:`Retrying.call` where a transient failure should be retried.
    """

    def __init__(
        self,
        client: Any,
        *,
        consistency: str | None = None,
        on_denied: Callable[[PermissionDenied], None] | None = None,
    ) -> None:
        self.client = client
        self.consistency = consistency
        self.on_denied = on_denied

    def close(self) -> None:
        """Close the client's pooled connections (a client used by one thread, at its end)."""
        http = getattr(self.client, "http", None)
        session = getattr(http, "session", None)
        if session is not None:
            session.close()

    def _call(self, fn: Callable[..., Any], *args: Any, session_id: str | None = None, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except _TRANSLATED as exc:
            error = translate(exc, session_id=session_id)
            if isinstance(error, PermissionDenied):
                error = self._denied(error, fn, args)
            raise error from exc

    def _denied(
        self, error: PermissionDenied, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> PermissionDenied:
        """Name the call and its key in the error, and hand it to ``on_denied``."""
        call = getattr(fn, "__qualname__", "call").rsplit(".", 2)[-2:]
        target = f" {args[0]}" if args and isinstance(args[0], str) else ""
        error = PermissionDenied(f"{error.detail} ({'.'.join(call)}{target})")
        if self.on_denied is not None:
            self.on_denied(error)
        return error

    def check_agent(self, address: str) -> None:
        """Raise :class:`NotConsulAgent` unless a Consul agent answers at ``address``.

        ``/v1/status/leader`` answers a JSON string on every Consul agent (empty without a
        Raft leader) and needs no ACL right; any other HTTP server answers 404, HTML or other
        JSON there. Without this check such a server takes ``PUT``s with 2xx answers and
        ``workload add`` would say ``added`` while nothing was stored. An unreachable address
        still raises :class:`ConsulUnavailable` (a transient state, not a wrong one).
        """
        try:
            leader = self.client.status.leader()
        except (ValueError, TypeError) as exc:
            raise NotConsulAgent(f"/v1/status/leader is not JSON ({type(exc).__name__})",
                                 address=address) from exc
        except (ConsulException, NetworkError, KeyError) as exc:
            error = translate(exc)
            if isinstance(error, ConsulRejected):  # a 4xx other than 404 on a no-ACL endpoint
                raise NotConsulAgent(str(exc)[:80], address=address) from exc
            raise error from exc
        if not isinstance(leader, str):
            raise NotConsulAgent("/v1/status/leader does not answer a JSON string", address=address)

    # -- reads -------------------------------------------------------------------------

    def get(
        self, key: str, *, index: int = 0, wait: float | None = None, consistent: bool = False
    ) -> tuple[int, KVEntry | None]:
        """One key (blocking when ``index`` is non-zero); ``(index, None)`` when absent."""
        raw_index, raw = self._call(
            self.client.kv.get, key, **self._read_args(index, wait, consistent)
        )
        return _index(raw_index), (KVEntry.from_consul(raw) if raw else None)

    def list(
        self, prefix: str, *, index: int = 0, wait: float | None = None, consistent: bool = False
    ) -> tuple[int, list[KVEntry]]:
        """Every key under ``prefix`` with its value."""
        raw_index, raw = self._call(
            self.client.kv.get, prefix, recurse=True, **self._read_args(index, wait, consistent)
        )
        return _index(raw_index), [KVEntry.from_consul(r) for r in raw or []]

    def keys(
        self,
        prefix: str,
        *,
        index: int = 0,
        wait: float | None = None,
        separator: str | None = None,
        consistent: bool = False,
    ) -> tuple[int, list[str]]:
        """Key names under ``prefix`` without their values (cheap for big prefixes)."""
        kw = self._read_args(index, wait, consistent)
        if separator:
            kw["separator"] = separator
        raw_index, raw = self._call(self.client.kv.get, prefix, keys=True, **kw)
        return _index(raw_index), [str(k) for k in raw or []]

    def _read_args(self, index: int, wait: float | None, consistent: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if index:
            kw["index"] = index
            if wait:
                kw["wait"] = f"{max(1, int(wait))}s"
        consistency = "consistent" if consistent else self.consistency
        if consistency:
            kw["consistency"] = consistency
        return kw

    # -- writes ------------------------------------------------------------------------

    def put(self, key: str, value: bytes | str, *, cas: int | None = None) -> bool:
        """Write ``key``; with ``cas`` only if its ModifyIndex matches (0: only if absent)."""
        _check_size(value)
        kw = {} if cas is None else {"cas": cas}
        return bool(self._call(self.client.kv.put, key, value, **kw))

    def acquire(self, key: str, value: bytes | str, session_id: str) -> bool:
        """Take the lock ``key`` for ``session_id``; False while another session holds it.

        Raises :class:`SessionInvalid` when Consul no longer knows the session.
        """
        _check_size(value)
        return bool(
            self._call(self.client.kv.put, key, value, acquire=session_id, session_id=session_id)
        )

    def release(self, key: str, session_id: str) -> bool:
        """Let go of ``key``; False unless ``session_id`` held it."""
        return bool(
            self._call(self.client.kv.put, key, None, release=session_id, session_id=session_id)
        )

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:
        kw: dict[str, Any] = {}
        if recurse:
            kw["recurse"] = True
        if cas is not None:
            kw["cas"] = cas
        return bool(self._call(self.client.kv.delete, key, **kw))

    def txn(self, ops: Iterable[TxnOp], *, results: bool = True) -> list[KVEntry]:
        """Run ``ops`` all or nothing; raises :class:`TransactionFailed` on a rollback.

        ``results=False`` skips building entries for writers that do not read them back.
        """
        payload = [op.to_consul() for op in ops]
        if len(payload) > TXN_MAX_OPS:
            raise ConsulRejected(f"transaction has {len(payload)} operations (> {TXN_MAX_OPS})")
        answer = self._call(self.client.txn.put, payload) or {}
        if answer.get("Errors"):
            error = _txn_failure("409 " + json.dumps({"Errors": answer["Errors"]}))
            if isinstance(error, PermissionDenied):
                error = self._denied(error, self.client.txn.put, ())
            raise error
        if not results:
            return []
        return [KVEntry.from_consul(r["KV"]) for r in answer.get("Results") or [] if r.get("KV")]

    # -- sessions ----------------------------------------------------------------------

    def create_session(
        self,
        *,
        name: str,
        ttl: int,
        behavior: str,
        lock_delay: float,
        checks: list[str] | None = None,
    ) -> str:
        """A new session; ``checks=[]`` ties it to its TTL only (no serfHealth)."""
        return str(
            self._call(
                self.client.session.create,
                name=name,
                ttl=ttl,
                behavior=behavior,
                # python-consul2 formats it as "%ss": a text number reaches Consul exactly
                lock_delay=duration(lock_delay)[:-1],
                checks=checks,
            )
        )

    def renew_session(self, session_id: str) -> None:
        """Renew; raises :class:`SessionInvalid` when Consul says the session is gone."""
        try:
            self._call(self.client.session.renew, session_id, session_id=session_id)
        except ConsulRejected as exc:
            if "not found" in str(exc):
                raise SessionInvalid("renew answered 404", session_id=session_id) from exc
            raise

    def destroy_session(self, session_id: str) -> None:
        self._call(self.client.session.destroy, session_id)

    def session_alive(self, session_id: str) -> bool:
        _, info = self._call(self.client.session.info, session_id)
        return info is not None

    # -- agent health checks -----------------------------------------------------------

    def register_ttl_check(self, service_id: str, name: str, ttl: float) -> str:
        """Register a service with a TTL check that the process keeps passing; its check id."""
        check = {"TTL": duration(ttl), "DeregisterCriticalServiceAfter": "1m"}
        self._call(self.client.agent.service.register, name, service_id=service_id, check=check)
        return f"service:{service_id}"

    def pass_check(self, check_id: str) -> None:
        self._call(self.client.agent.check.ttl_pass, check_id)

    def deregister_service(self, service_id: str) -> None:
        self._call(self.client.agent.service.deregister, service_id)


def _index(raw: Any) -> int:
    """Consul sends the index as a string; a missing or garbled one counts as 0."""
    try:
        return max(0, int(raw))
    except (TypeError, ValueError):
        return 0


def _check_size(value: bytes | str | None) -> None:
    size = len(value.encode("utf-8") if isinstance(value, str) else value or b"")
    if size > MAX_VALUE_BYTES:
        raise ConsulRejected(f"value of {size} bytes exceeds Consul's {MAX_VALUE_BYTES}")


# --------------------------------------------------------------------------- retries


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


def sleep_until(stop: gevent.event.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when stopping."""
    return bool(stop.wait(max(0.0, seconds)))


__all__ = [
    "BACKOFF_SCHEDULE",
    "MAX_VALUE_BYTES",
    "TXN_MAX_OPS",
    "ClientFactory",
    "ClientSettings",
    "ConsulAPI",
    "KVEntry",
    "Retrying",
    "TxnOp",
    "chunked",
    "client_factory",
    "duration",
    "long_poll_timeout",
    "make_client",
    "translate",
]
