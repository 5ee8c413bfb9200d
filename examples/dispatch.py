"""A device-group service: a Node with its own HTTP endpoint, a request dispatcher, live values.

Each node runs the device groups assigned to it; ``POST /request`` on any node is served by
the owner of the request's item (forwarded to the port the owner advertises in its member
record); a value changed with ``voltha-gevent workload set`` reaches the owner through
``on_updated``, in place. Run two, each in a terminal, with a Consul at ``VOLTHA_CONSUL``
(default localhost:8500: ``make run`` or ``consul agent -dev``)::

    VOLTHA_INSTANCE_ID=a VOLTHA_REST_PORT=8881 VOLTHA_SEED_WORKLOAD=4 .venv/bin/python examples/dispatch.py
    VOLTHA_INSTANCE_ID=b VOLTHA_REST_PORT=8882 .venv/bin/python examples/dispatch.py

Stops on Ctrl-C/SIGTERM, or after ``EXAMPLE_SECONDS`` when that is set.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - imports follow the monkey-patching
import os
import signal
from typing import Any

import gevent
import gevent.event
import structlog

import voltha_gevent

log = structlog.get_logger("example")


class DeviceGroups:
    """The work (``on_assigned``/``on_updated``/``on_revoked``) and the request handler."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.values: dict[str, bytes | None] = {}

    def on_assigned(self, item: str, value: bytes | None) -> None:
        """Runs for as long as the item is ours; each side effect right after ``wait()``."""
        self.values[item] = value
        ownership = voltha_gevent.current_ownership()
        log.info("device-group-started", item=item, value=_text(value))
        while ownership is not None and ownership.wait(1.0):
            log.debug("serving", item=item, token=ownership.token)

    def on_updated(self, item: str, value: bytes | None) -> None:
        """The item's value changed while we own it: apply it in place (no restart)."""
        self.values[item] = value
        log.info("device-group-updated", item=item, value=_text(value))

    def on_revoked(self, item: str) -> None:
        self.values.pop(item, None)
        log.info("device-group-stopped", item=item)

    def handle(self, item: str | None, payload: Any) -> dict[str, Any]:
        """A request, run on the item's owner (``item`` None: here; "*": everywhere)."""
        value = self.values.get(item) if item else None
        return {"item": item, "served_by": self.instance_id, "value": _text(value), "payload": payload}


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", "replace") if value is not None else None


def main() -> None:
    config = voltha_gevent.Config.load()
    voltha_gevent.configure_logging(config.log_format, config.log_level)
    groups = DeviceGroups(config.instance_id)
    node = voltha_gevent.Node(config, handler=groups, http=(config.rest_bind, config.rest_port))
    dispatcher = node.add_dispatcher(groups.handle, token=os.environ.get("VOLTHA_DISPATCH_TOKEN"))
    assert node.http is not None
    dispatcher.mount(node.http)  # POST /request (clients), POST /dispatch (peers)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGINT, stop.set)
    gevent.signal_handler(signal.SIGTERM, stop.set)
    node.start()  # binds the endpoint first: the member record advertises the bound port
    dispatcher.start()
    log.info("example-serving", port=node.http.port, instance_id=config.instance_id)
    seconds = os.environ.get("EXAMPLE_SECONDS")
    stop.wait(float(seconds) if seconds else None)
    dispatcher.stop()  # queued requests fail; in-flight ones finish
    node.stop(keep_http=True)  # revocations wait for each item's requests
    dispatcher.linger()  # peers still forwarding here are told "not owner"
    node.http.stop()


if __name__ == "__main__":
    main()
