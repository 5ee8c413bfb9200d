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
running: dict[str, gevent.Greenlet] = {}


def serve_device_group(item: str) -> None:
    """The application's work for one item: here, a heartbeat until killed."""
    while True:
        log.debug("serving", item=item)
        gevent.sleep(1.0)


def start_device_group(item: str, value: bytes | None) -> None:
    running[item] = gevent.spawn(serve_device_group, item)
    log.info("device-group-started", item=item, value=value)


def stop_device_group(item: str) -> None:
    greenlet = running.pop(item, None)
    if greenlet is not None:
        greenlet.kill()
    log.info("device-group-stopped", item=item)


def main() -> None:
    config = voltha_gevent.Config.load()
    configure_logging(config.log_format, config.log_level)
    node = voltha_gevent.Node(config, on_assigned=start_device_group, on_revoked=stop_device_group)
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
