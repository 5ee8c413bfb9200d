"""Embed voltha-gevent in a gevent application: run device groups assigned to this node.

Run: ``.venv/bin/python examples/embed.py`` with a Consul at ``VOLTHA_CONSUL`` (default
localhost:8500). Stops by itself after ``EMBED_SECONDS`` (default 20) or on Ctrl-C.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - imports follow the monkey-patching
import os
import signal

import gevent
import gevent.event
import structlog

import voltha_gevent
from voltha_gevent.logs import configure_logging

log = structlog.get_logger("example")


def serve_device_group(item: str, value: bytes | None) -> None:
    """The work for one item, run right here in the item's own greenlet.

    ``ownership.wait()`` sleeps and then answers whether the item is still ours; the side
    effect (here a log line; in real life a write that carries ``ownership.token``) comes
    right after it, with no switch in between.
    """
    ownership = voltha_gevent.current_ownership()
    log.info("device-group-started", item=item, value=value, token=ownership.token if ownership else None)
    while ownership is not None and ownership.wait(1.0):
        log.debug("serving", item=item, token=ownership.token)
    log.info("device-group-stopped", item=item)


def release_device_group(item: str) -> None:
    """Nothing to stop: the loop above ends by itself once the ownership is revoked."""


def main() -> None:
    config = voltha_gevent.Config.load()
    configure_logging(config.log_format, config.log_level)
    node = voltha_gevent.Node(config, on_assigned=serve_device_group, on_revoked=release_device_group)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGINT, stop.set)
    gevent.signal_handler(signal.SIGTERM, stop.set)
    node.start()
    log.info("leader", leader=node.wait_for_leader(30))
    log.info("settled", settled=node.wait_settled(30), owned=sorted(node.owned()))
    stop.wait(float(os.environ.get("EMBED_SECONDS", "20")))
    node.stop()


if __name__ == "__main__":
    main()
