"""Several voltha-gevent nodes on one mocked Consul, in one process: for fast tests.

``FakeCluster`` builds :class:`~voltha_gevent.Node` objects whose Consul clients all talk to
one :class:`~voltha_gevent.testing.fake_consul.FakeConsul`, each with a
:class:`~voltha_gevent.testing.auditor.RecordingHandler` feeding a shared
:class:`~voltha_gevent.testing.auditor.OwnershipLedger`, so a test can assert that no item
ever had two running owners. ``stop_all()`` always runs (use it in ``finally`` or as a
context manager) so no greenlet outlives its test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent

from ..config import Config
from ..node import Node
from .auditor import OwnershipLedger, RecordingHandler
from .fake_consul import FakeConsul

#: Settings that make a fake cluster converge in well under a second.
FAST_SETTINGS = {
    "soak": 0.2,
    "max_soak_delay": 2.0,
    "worker_soak": 0.05,
    "check_ttl": 0,
    "lock_delay": 0,
    "watch_wait": 5,
    "stop_timeout": 2.0,
    "handover_timeout": 5.0,
}



def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` from a greenlet (the fake's greenlets run meanwhile) until true or
    ``timeout``; tests only: the library never polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(step)
    return predicate()

class FakeCluster:
    """Nodes sharing one mocked Consul and one ownership ledger."""

    def __init__(self, fake: FakeConsul | None = None, **settings: Any) -> None:
        self.fake = fake or FakeConsul()
        self.settings = {**FAST_SETTINGS, **settings}
        self.ledger = OwnershipLedger()
        self.nodes: dict[str, Node] = {}
        self.handlers: dict[str, RecordingHandler] = {}

    def add_node(self, instance_id: str, *, start: bool = True, **settings: Any) -> Node:
        handler_args = {k: settings.pop(k) for k in ("fail_times", "revoke_delay") if k in settings}
        config = self.settings_config(instance_id, **settings)
        handler = RecordingHandler(self.ledger, instance_id, **handler_args)
        node = Node(config, handler=handler, client_factory=self.client_factory(instance_id))
        self.nodes[instance_id] = node
        self.handlers[instance_id] = handler
        if start:
            node.start()
        return node

    def settings_config(self, instance_id: str, **settings: Any) -> Config:
        """A validated :class:`Config` with the cluster's settings, for a node of your own."""
        config = Config().merged({**self.settings, **settings, "instance_id": instance_id}, source="test")
        config.validate()
        return config

    def client_factory(self, instance_id: str) -> Callable[[float], Any]:
        """Clients of the cluster's mocked Consul, on the agent ``agent-<instance_id>``."""
        agent = f"agent-{instance_id}"
        return lambda timeout: self.fake.client(node=agent, timeout=timeout)

    def leader(self) -> Node | None:
        leaders = [n for n in self.nodes.values() if n.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    def leaders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_leader]

    def stop(self, instance_id: str) -> None:
        """A graceful stop (SIGTERM)."""
        self.nodes.pop(instance_id).stop()

    def crash(self, instance_id: str, *, expire: bool = True) -> None:
        """A SIGKILL: the node vanishes; with ``expire`` its session is invalidated at once."""
        node = self.nodes.pop(instance_id)
        session_id = node.coordinator.session.session_id
        node.coordinator.abandon()
        self.ledger.crash(instance_id)
        if expire and session_id:
            self.fake.expire_session(session_id)

    def converged(self, items: set[str] | None = None) -> bool:
        """Every workload item runs exactly once, on the node it is assigned to."""
        if items is None:
            items = {k.rsplit("/", 1)[1] for k in self.fake.dump(self._prefix() + "/workload/")}
        owned: dict[str, str] = {}
        for name, node in self.nodes.items():
            if not node.healthy:
                return False
            for item in node.owned():
                if item in owned:
                    return False
                owned[item] = name
        return set(owned) == items and self.ledger.owners() == owned

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
        return wait_until(predicate, timeout, step)

    def add_items(self, *names: str, value: str = "") -> None:
        client = self.fake.client()
        for name in names:
            client.kv.put(f"{self._prefix()}/workload/{name}", value)

    def remove_items(self, *names: str) -> None:
        client = self.fake.client()
        for name in names:
            client.kv.delete(f"{self._prefix()}/workload/{name}")

    def _prefix(self) -> str:
        return str(self.settings.get("prefix", "service/voltha"))

    def stop_all(self) -> None:
        for instance_id in list(self.nodes):
            try:
                self.stop(instance_id)
            except Exception:  # noqa: BLE001 - keep stopping the others
                self.nodes.pop(instance_id, None)
        self.fake.close()

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
