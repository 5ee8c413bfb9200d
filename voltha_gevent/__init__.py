"""voltha-gevent: share a workload among identical service instances through Consul.

The public surface is re-exported here; modules starting with an underscore, and names not
in ``__all__``, are private.
"""

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .coordinator import Coordinator  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    ConsulRejected,
    ConsulUnavailable,
    NotLeader,
    PermissionDenied,
    SessionInvalid,
    TransactionFailed,
    VolthaError,
)
from .leader import Leader  # noqa: E402
from .membership import MemberRecord  # noqa: E402
from .node import Node, NotMonkeyPatched  # noqa: E402
from .worker import AssignmentHandler, CallbackHandler, Worker  # noqa: E402

__all__ = [
    "AssignmentHandler",
    "CallbackHandler",
    "Config",
    "ConfigError",
    "ConsulRejected",
    "ConsulUnavailable",
    "Coordinator",
    "Leader",
    "MemberRecord",
    "Node",
    "NotLeader",
    "NotMonkeyPatched",
    "PermissionDenied",
    "SessionInvalid",
    "TransactionFailed",
    "VolthaError",
    "Worker",
    "__version__",
]
