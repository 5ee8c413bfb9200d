"""Command line: ``voltha-gevent run|status|workload|assignments|drain|undrain``.

The entry point monkey-patches first (before anything imports ``requests``), configures
logging once, and wires SIGTERM/SIGINT to one ``shutdown()``. Exit codes: 0 success, 1
runtime failure (e.g. Consul unreachable), 2 invalid input or configuration.

``CONSUL_HTTP_ADDR`` is read as the default Consul address (``--consul``/``VOLTHA_CONSUL``
win); ``VOLTHA_CONSUL_TOKEN`` or ``--consul-token-file`` give the ACL token, never a flag.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must follow the monkey-patching
import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import structlog

from .cli_parser import build_parser, load_config
from .config import Config, from_environ
from .errors import ConfigError, VolthaError
from .logs import configure_logging

log = structlog.get_logger("voltha_gevent.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# Main


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args)
    except ConfigError as exc:
        sys.stderr.write(f"voltha-gevent: {exc}\n")
        return EXIT_USAGE
    configure_logging(config.log_format, config.log_level)
    try:
        if args.command == "run":
            return run(config, args)
        from . import admin

        return admin.dispatch(config, args)
    except ConfigError as exc:
        sys.stderr.write(f"voltha-gevent: {exc}\n")
        return EXIT_USAGE
    except VolthaError as exc:
        sys.stderr.write(f"voltha-gevent: {exc}\n")
        return EXIT_FAILURE


def run(config: Config, args: argparse.Namespace) -> int:
    """Run one node until SIGTERM/SIGINT."""
    if args.print_config:
        sys.stdout.write(json.dumps(config.public_dict(), indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    from .node import Node

    handler: Any = _work_handler(config, args)  # a bad --exec stops here, before any agent starts
    agent = _maybe_embedded_consul(config, args.embedded_consul)
    node = Node(config, handler=handler, http=(config.rest_bind, config.rest_port))
    own_work = bool(args.ledger_file or args.exec_command)  # neither serves dispatched requests
    if args.exec_command:
        handler.attach(node.lease)
        node.add_revoke_barrier(handler.barrier)  # an owner lock outlives its child's process group
    elif args.ledger_file:
        handler.attach(node)  # takes node.ownership
    dispatcher = _demo_dispatcher(node, handler) if args.dispatch and not own_work else None
    done, hurry = gevent.event.Event(), gevent.event.Event()

    def shutdown(signum: int = signal.SIGTERM) -> None:
        if done.is_set():
            hurry.set()  # a second signal: skip the rest of the drain
        else:
            log.info("shutting-down", signal=signal.Signals(signum).name)
            done.set()

    gevent.signal_handler(signal.SIGTERM, shutdown, signal.SIGTERM)
    gevent.signal_handler(signal.SIGINT, shutdown, signal.SIGINT)
    try:
        endpoint = node.serve_http()  # bound before joining: the member record advertises its port
        _check_consul(config)
        node.start()
        if dispatcher is not None:
            dispatcher.start()
        log.info("node-running", instance_id=config.instance_id, consul=config.consul, prefix=config.prefix)
        gevent.wait([done, node.failed], count=1)
        if config.drain_timeout and not node.failed.is_set():
            node.drain(config.drain_timeout, cancel=hurry)  # one handover per item, not soak + handover
        if dispatcher is not None:
            dispatcher.stop()
        node.stop(keep_http=True)
        if dispatcher is not None:
            dispatcher.linger()  # peers still forwarding here are told "not owner", not reset
        endpoint.stop()
    finally:
        if args.exec_command:
            handler.close()  # after node.stop(): every item was revoked, its process group reaped
        if agent is not None:
            agent.stop()
    if node.failed.is_set():
        sys.stderr.write(f"voltha-gevent: {node.unhealthy_reason()}\n")
        return EXIT_FAILURE
    return EXIT_OK


def _work_handler(config: Config, args: argparse.Namespace) -> Any:
    """``--exec`` (exec mode), ``--ledger-file`` (test work), else the demo handler."""
    if args.exec_reload_signal and not args.exec_command:
        raise ConfigError("only exec mode has children to signal: give --exec too", setting="exec")
    if args.exec_command:
        from .exec_work import ExecWork, parse_command, parse_reload_signal

        try:
            command = parse_command(args.exec_command)
            reload_signal = parse_reload_signal(args.exec_reload_signal) if args.exec_reload_signal else None
        except ValueError as exc:
            raise ConfigError(str(exc), setting="exec") from exc
        return ExecWork(command, config.instance_id, stop_timeout=config.stop_timeout,
                        reload_signal=reload_signal)
    if args.ledger_file:
        return _ledger_work(config, args)
    return DemoHandler(config.instance_id, args.report_file)


def _ledger_work(config: Config, args: argparse.Namespace) -> Any:
    """Test work that ticks into a ledger file; SIGUSR1 blocks the event loop (a stuck handler).

    Why the run path imports from ``testing/`` here, and only here: ``--ledger-file`` exists so
    the test beds (the partition bed, the chaos bed, ``bench/``) can audit real node processes,
    and the audit must read evidence written by the work, not by the library
    (:mod:`voltha_gevent.testing.ledger`); the ledger and its auditor are one shipped testing
    module, kept together. The import is lazy: a node run without the flag loads nothing from
    ``testing/``.
    """
    from .testing.ledger import LedgerWork, control_path_for, install_block_trigger

    install_block_trigger(args.ledger_block)
    return LedgerWork(config.instance_id, args.ledger_file, tick=args.ledger_tick,
                      revoke_delay=args.ledger_revoke_delay, control_path=control_path_for(args.ledger_file))


def _demo_dispatcher(node: Any, handler: "DemoHandler") -> Any:
    """Demo request dispatcher, mounted on the node's endpoint: its echo handler answers
    ``{"item", "served_by", "payload"}``."""
    dispatcher = node.add_dispatcher(handler.serve, queue_size=1000, workers=32, forward_timeout=5.0,
                                     owner_wait=10.0, token=os.environ.get("VOLTHA_DISPATCH_TOKEN"))
    dispatcher.mount(node.http)
    return dispatcher


def _maybe_embedded_consul(config: Config, mode: str) -> Any:
    """Start a local dev agent on localhost:8500 when asked, or when nothing is configured."""
    configured = "consul" in from_environ(os.environ) or os.environ.get("CONSUL_HTTP_ADDR")
    host, port = config.consul_host_port()
    if mode == "never" or (mode == "auto" and (configured or _answers(host, port))):
        return None
    from .devagent import AgentStartupError, ConsulBinaryNotFound, DevAgent

    log.info("starting-embedded-consul", port=port)
    try:
        agent = DevAgent(host="127.0.0.1", port=port, die_with_parent=True).start()
    except (ConsulBinaryNotFound, AgentStartupError) as exc:
        raise VolthaError(
            f"no Consul answers on {host}:{port} and a local one could not be started ({exc}); "
            "start Consul, or point --consul/VOLTHA_CONSUL at one"
        ) from exc
    log.info("embedded-consul-ready", address=agent.http_addr, pid=agent.pid)
    return agent


def _check_consul(config: Config) -> None:
    """Stop with :class:`NotConsulAgent` (exit 1) when the configured address answers HTTP but
    is not Consul; an unreachable Consul is left to the node, which retries until it is up."""
    from .client_settings import ADMIN_CALL_TIMEOUT
    from .consul_api import ConsulAPI, make_client
    from .errors import ConsulUnavailable

    api = ConsulAPI(make_client(config.client_settings(), timeout=ADMIN_CALL_TIMEOUT))
    try:
        api.check_agent(config.consul)
    except ConsulUnavailable:
        return


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class DemoHandler:
    """The handler ``run`` uses: logs each start and stop, and can report them to a file."""

    def __init__(self, instance_id: str, report_file: str | None) -> None:
        self.instance_id = instance_id
        self.report_file = report_file

    def on_assigned(self, item: str, value: bytes | None) -> None:
        log.debug("work-started", item=item)
        self._report("start", item)

    def on_revoked(self, item: str) -> None:
        log.debug("work-stopped", item=item)
        self._report("stop", item)

    def serve(self, item: str | None, payload: Any) -> dict[str, Any]:
        """Dispatcher handler: echo, and report ``served`` with the payload's ``id``."""
        request_id = payload.get("id") if isinstance(payload, dict) else None
        self._report("served", item or "", request=request_id)
        return {"item": item, "served_by": self.instance_id, "payload": payload}

    def _report(self, event: str, item: str, **extra: Any) -> None:
        if not self.report_file:
            return
        line = json.dumps({"t": time.time(), "instance": self.instance_id, "pid": os.getpid(),
                           "event": event, "item": item, **extra})
        with open(self.report_file, "a") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
