"""voltha-gevent: share a workload among identical service instances through Consul.

The public surface is re-exported here and loaded lazily, so that ``import voltha_gevent``
imports neither gevent's patched modules nor ``requests``: an entry point can still call
``gevent.monkey.patch_all()`` first. Modules starting with an underscore, and names not in
``__all__``, are private.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AssignmentHandler": "worker",
    "CallbackHandler": "worker",
    "Config": "config",
    "ConfigError": "errors",
    "ConsulRejected": "errors",
    "ConsulTLSError": "errors",
    "ConsulUnavailable": "errors",
    "Coordinator": "coordinator",
    "HttpEndpoint": "http",
    "Leader": "leader",
    "MemberRecord": "membership",
    "Node": "node",
    "NotConsulAgent": "errors",
    "NotLeader": "errors",
    "Ownership": "lease",
    "current_ownership": "lease",
    "configure_logging": "logs",
    "NotMonkeyPatched": "node",
    "PermissionDenied": "errors",
    "SessionInvalid": "errors",
    "TransactionFailed": "errors",
    "UpdatableHandler": "value_updates",
    "VolthaError": "errors",
    "Worker": "worker",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voltha_gevent' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return __all__
