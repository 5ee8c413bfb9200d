"""The node's HTTP endpoint: ``/health``, ``/status`` and ``/metrics``.

Served by gevent's WSGI server on ``rest_bind:rest_port`` (127.0.0.1 by default: binding
elsewhere is an explicit choice). ``/health`` answers 200 only while the session is live and
the membership record is held, 503 otherwise, so a load balancer or Docker stops sending
work to a node that lost its session. Further routes (the request dispatcher's) can be
mounted with :meth:`HttpEndpoint.route`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
from gevent.pywsgi import WSGIServer

from .errors import VolthaError
from .metrics import render

if TYPE_CHECKING:
    from .node import Node

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], tuple[int, str, bytes]]


class HttpEndpoint:
    """A tiny WSGI app over one :class:`Node`, with its own server greenlet."""

    def __init__(self, node: Node, bind: str, port: int) -> None:
        self.node = node
        self.routes: dict[str, Handler] = {
            "/health": self._health,
            "/status": self._status,
            "/metrics": self._metrics,
        }
        self.server = _NoDelayWSGIServer((bind, port), self.app, log=None, error_log=None)

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def start(self) -> None:
        """Bind and serve; :class:`VolthaError` with one line when the address cannot be bound
        (port in use, address not local), so ``run`` exits 1 without a traceback."""
        try:
            self.server.start()
        except OSError as exc:
            host, port = self.server.address[:2]
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise VolthaError(f"cannot serve HTTP on {host}:{port}: {why} "
                              "(set --rest-port/VOLTHA_REST_PORT, 0 picks a free one)") from exc
        log.info("http-listening", address=f"{self.server.server_host}:{self.port}")

    def stop(self) -> None:
        self.server.stop(timeout=2)

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        handler = self.routes.get(environ.get("PATH_INFO", ""))
        if handler is None:
            status, ctype, body = 404, "text/plain", b"not found\n"
        else:
            try:
                status, ctype, body = handler(environ)
            except Exception as exc:  # noqa: BLE001 - one bad request must not kill the server
                log.error("http-handler-failed", path=environ.get("PATH_INFO"), error=repr(exc))
                status, ctype, body = 500, "text/plain", b"internal error\n"
        start_response(f"{status} {_REASONS.get(status, 'OK')}",
                       [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]

    def _health(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        ok = self.node.healthy
        body = {"healthy": ok, "session": self.node.coordinator.session.state.value,
                "last_consul_error": self.node.coordinator.retry.stats.last_error}
        reason = self.node.unhealthy_reason()
        if reason:
            body["reason"] = reason
        return (200 if ok else 503), "application/json", _json(body)

    def _status(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, "application/json", _json(self.node.status())

    def _metrics(self, environ: dict[str, Any]) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", render(self.node.metrics_view)


class _NoDelayWSGIServer(WSGIServer):
    """pywsgi writes the headers and the body in two sends: with Nagle on, a keep-alive
    client's delayed ACK stalls every answer by ~40 ms. TCP_NODELAY on each connection."""

    def handle(self, sock: socket.socket, address: Any) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a UNIX socket): nothing to tune
        super().handle(sock, address)


_REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
    413: "Payload Too Large", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def _json(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, default=str) + "\n").encode()
