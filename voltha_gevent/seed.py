"""The demo workload of ``--seed-workload N``: ``device_group_0001..N``, created at start.

Guarantees: the node that was given the setting creates the missing items itself, once per
:meth:`Node.start`, whoever leads (were it the leader's job, a non-leader's setting would do
nothing until a failover made it leader, minutes later). Each item is created with ``cas=0``:
an existing item is never overwritten, and an item removed later stays removed (nothing
creates it again at a failover). While Consul is unreachable the creation is retried on the
node's own schedule; stopping the node (or losing nothing else: no session is involved)
abandons it.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from .consul_api import ConsulAPI
from .errors import ConsulRejected, ConsulUnavailable, Stopped
from .keys import Keys
from .retrying import Retrying

log = structlog.get_logger(__name__)

#: Demo workload names made by ``--seed-workload``.
SEED_NAME = "device_group_{:04d}"


def seed_names(count: int) -> Iterable[str]:
    return (SEED_NAME.format(i) for i in range(1, count + 1))


def seed_workload(api: ConsulAPI, keys: Keys, count: int, retry: Retrying) -> int:
    """Create ``device_group_0001..count`` where absent (``cas=0``); how many were created."""
    created = 0
    for name in seed_names(count):
        try:
            if retry.call(lambda n=name: api.put(keys.item(n), "", cas=0), what="seed-workload"):
                created += 1
        except Stopped:
            log.info("workload-seed-abandoned", created=created, wanted=count)
            return created
        except (ConsulRejected, ConsulUnavailable) as exc:
            log.warning("seed-workload-failed", item=name, error=str(exc))
    log.info("workload-seeded", created=created, wanted=count)
    return created


__all__ = ["SEED_NAME", "seed_names", "seed_workload"]
