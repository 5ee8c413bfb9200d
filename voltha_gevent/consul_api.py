"""The one module that knows python-consul2.

Everything else talks to Consul through :class:`ConsulAPI`, which wraps a python-consul2
``consul.Consul`` client (or the mocked one from :mod:`voltha_gevent.testing`) and turns the
library's mixed bag of answers into the project's own types and errors:

* network trouble, 5xx answers and garbage bodies become :class:`ConsulUnavailable`
  (transient: retry with ``Retrying``); a failed TLS handshake is its subclass
  :class:`ConsulTLSError`, logged as ``consul-tls-failed`` on every retry;
* "invalid session" answers (HTTP 500 on acquire, 404 on renew) become
  :class:`SessionInvalid` - never retried, the session is gone and with it every lock;
* a rolled-back transaction (HTTP 409) becomes :class:`TransactionFailed` with the parsed
  ``(op_index, what)`` list; HTTP 403 becomes :class:`PermissionDenied` (so does a transaction
  whose every failed operation was refused by the ACLs), naming the call and the key, and is
  handed to the ``on_denied`` hook wherever it happens, so a missing ACL right is reported
  even by loops that do not go through ``Retrying`` (locks, watches).

What is not python-consul2's lives beside it: :mod:`~voltha_gevent.entries` (``KVEntry``),
:mod:`~voltha_gevent.txn` (``TxnOp``), :mod:`~voltha_gevent.consul_errors` (reading failure
texts), :mod:`~voltha_gevent.client_settings`, :mod:`~voltha_gevent.retrying` (``Retrying``)
and :mod:`~voltha_gevent.answer_bytes` (what each answer weighed).

The ACL token travels in the ``X-Consul-Token`` header only (never in a URL, so never in a
``requests`` error message), and :class:`~voltha_gevent.client_settings.ClientSettings`
leaves it out of its ``repr``.

A switch to another client library (py-consul, say) touches this file only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import consul
import consul.base
import requests
import requests.adapters
import structlog

from .answer_bytes import note_answer_size
from .client_settings import CALL_TIMEOUT, ClientSettings, duration
from .consul_errors import network_gist, status_of, txn_failure
from .entries import KVEntry, check_value_size
from .errors import (
    ConsulRejected,
    ConsulTLSError,
    ConsulUnavailable,
    NotConsulAgent,
    PermissionDenied,
    SessionInvalid,
)
from .txn import TXN_MAX_OPS, TxnOp

log = structlog.get_logger(__name__)

# python-consul2's exception classes, re-exported so that the mocked Consul raises exactly
# what the real client raises without importing python-consul2 itself.
ConsulException = consul.base.ConsulException
NotFound = consul.base.NotFound
BadRequest = consul.base.BadRequest
ClientError = consul.base.ClientError
ACLPermissionDenied = consul.base.ACLPermissionDenied
NetworkError = requests.exceptions.RequestException

#: Connections one client keeps open. A greenlet that finds them all busy waits for one
#: (``pool_block``) instead of opening an extra connection that urllib3 would discard after
#: the call ("Connection pool is full"): the pool paces bulk calls by Consul's answers.
POOL_SIZE = 20

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
    client.http.session.hooks["response"].append(note_answer_size)
    client.scheme = settings.scheme
    client.token = settings.token
    return client


ClientFactory = Callable[[float], Any]
"""Makes a client whose calls time out after the given number of seconds."""


def client_factory(settings: ClientSettings) -> ClientFactory:
    """A :data:`ClientFactory` for real Consul."""
    return lambda timeout: make_client(settings, timeout)


# Errors



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
        if status_of(exc) == 409:
            return txn_failure(text)
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


_TRANSLATED = (ConsulException, NetworkError, ValueError, KeyError, TypeError)


# The API


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

    # Reads

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

    # Writes

    def put(self, key: str, value: bytes | str, *, cas: int | None = None) -> bool:
        """Write ``key``; with ``cas`` only if its ModifyIndex matches (0: only if absent)."""
        check_value_size(value)
        kw = {} if cas is None else {"cas": cas}
        return bool(self._call(self.client.kv.put, key, value, **kw))

    def acquire(self, key: str, value: bytes | str, session_id: str) -> bool:
        """Take the lock ``key`` for ``session_id``; False while another session holds it.

        Raises :class:`SessionInvalid` when Consul no longer knows the session.
        """
        check_value_size(value)
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
            error = txn_failure("409 " + json.dumps({"Errors": answer["Errors"]}))
            if isinstance(error, PermissionDenied):
                error = self._denied(error, self.client.txn.put, ())
            raise error
        if not results:
            return []
        return [KVEntry.from_consul(r["KV"]) for r in answer.get("Results") or [] if r.get("KV")]

    # Sessions

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

    # Agent health checks

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


__all__ = [
    "ClientFactory",
    "ConsulAPI",
    "client_factory",
    "make_client",
    "translate",
]
