"""One root exception for the project; subclasses carry the fields callers need.

Messages are built in one place (:meth:`VolthaError.__str__`) from a template and the
fields, so no call site formats its own.
"""

from __future__ import annotations


class VolthaError(Exception):
    """Root of every error voltha-gevent raises on purpose."""

    template = "{detail}"

    def __init__(self, detail: str = "", **fields: object) -> None:
        self.detail = detail
        self.fields = fields
        for name, value in fields.items():
            setattr(self, name, value)
        super().__init__(detail)

    def __str__(self) -> str:
        return self.template.format(detail=self.detail, **self.fields)


class ConfigError(VolthaError):
    """A setting is missing, malformed or out of range."""

    template = "invalid setting {setting}: {detail}"


class ConsulUnavailable(VolthaError):
    """Consul did not answer, or answered with a transient server error."""

    template = "consul unavailable: {detail}"


class ConsulTLSError(ConsulUnavailable):
    """The TLS handshake with Consul failed (CA, client certificate or scheme); retried like
    any unavailability, but reported as what it is."""

    template = "consul TLS handshake failed (check consul_scheme, consul_ca_file, consul_cert_file): {detail}"


class NotConsulAgent(VolthaError):
    """Something answers HTTP at the configured address, but it is not a Consul agent: writing
    to it would "succeed" and store nothing, so commands stop before writing anything."""

    template = "not a Consul agent at {address}: {detail}"


class ConsulRejected(VolthaError):
    """Consul refused the request for good (bad request, too large...); retrying will not help."""

    template = "consul rejected the request: {detail}"


class PermissionDenied(ConsulRejected):
    """The ACL token lacks a right the request needs (HTTP 403)."""

    template = "consul permission denied: {detail}"


class SessionInvalid(VolthaError):
    """Consul says the session is gone: every lock it held is lost."""

    template = "session {session_id} is invalid: {detail}"


class TransactionFailed(VolthaError):
    """A Consul transaction rolled back; ``errors`` lists ``(op_index, what)`` pairs."""

    template = "transaction rolled back: {detail}"


class NotLeader(VolthaError):
    """A fenced write failed because this instance no longer holds the leader lock."""

    template = "not the leader any more: {detail}"


class Stopped(VolthaError):
    """The operation was abandoned because its owner is stopping."""
