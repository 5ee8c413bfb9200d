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

from .config import Config, from_environ
from .errors import ConfigError, VolthaError
from .logs import configure_logging

log = structlog.get_logger("voltha_gevent.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: Flags that map one-to-one onto Config fields, with their help text.
_SETTING_FLAGS = {
    "instance_id": "this instance's id (default: host name)",
    "consul": "Consul HTTP address host:port (default localhost:8500 or CONSUL_HTTP_ADDR)",
    "consul_scheme": "http or https",
    "consul_token_file": "file holding the Consul ACL token",
    "consul_ca_file": "CA bundle to verify Consul's certificate",
    "consul_cert_file": "client certificate for Consul (with --consul-key-file)",
    "consul_key_file": "client key for Consul",
    "prefix": "Consul key prefix (default service/voltha)",
    "rest_port": "HTTP port for health/status/metrics (0 picks a free one)",
    "rest_bind": "address the HTTP endpoint binds (default 127.0.0.1)",
    "internal_host": "address peers use to reach this node",
    "external_host": "address advertised to clients (default: internal host)",
    "capacity": "capacity weight of this node (default 1)",
    "soak": "seconds of quiet before the leader reassigns (default 5)",
    "max_soak_delay": "cap on the soak after the first change (default 30, 0 = none)",
    "worker_soak": "seconds a worker coalesces assignment changes (default 0.5)",
    "session_ttl": "Consul session TTL seconds, 10-86400 (default 10)",
    "check_ttl": "agent TTL health check seconds, 0 = none (default 3)",
    "lock_delay": "Consul lock-delay seconds, 0-60 (default 4)",
    "stop_timeout": "seconds on_revoked may take before the work is killed (default 4)",
    "handover_timeout": "seconds the leader waits for an old owner (default 30)",
    "drain_timeout": "on SIGTERM, seconds to wait for this node's items to be handed over before "
                     "stopping (default 30, 0 = stop at once; a second signal stops at once)",
    "max_loop_stall": "a node whose event loop is stuck this long gives its session up (default 20)",
    "watch_wait": "blocking-query wait seconds (default 60)",
    "seed_workload": "demo: create device_group_0001..N if absent, once at start",
    "log_format": "auto, console or json",
    "log_level": "debug, info, warning or error",
}


# Parsing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voltha-gevent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="TOML file of settings (or VOLTHA_CONFIG)")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run a node in the foreground")
    _config_flag(run)
    _setting_flags(run)
    run.add_argument("--print-config", action="store_true", help="print the settings and exit")
    run.add_argument("--embedded-consul", choices=("auto", "never", "always"), default="auto",
                     help="start a local 'consul agent -dev' on localhost:8500 when none answers and no "
                          "address is configured (auto, default)")
    run.add_argument("--report-file", help="demo handler: append a JSON line per start/stop of work")
    run.add_argument("--exec", dest="exec_command", metavar="'CMD ARGS...'",
                     help="run this program once per owned item ({item} in ARGS is the item; environment "
                          "VOLTHA_ITEM, VOLTHA_FENCE_TOKEN, VOLTHA_INSTANCE_ID, VOLTHA_ITEM_VALUE_FILE; the "
                          "value on stdin); stopped by a guard within the fencing budget; no dispatcher")
    run.add_argument("--exec-reload-signal", metavar="SIGNAL",
                     help="exec mode: on a changed item value send SIGNAL (e.g. HUP) to the child's "
                          "process group, which re-reads VOLTHA_ITEM_VALUE_FILE (default: restart it)")
    run.add_argument("--ledger-file", help="test work: items tick into this append-only ledger for an "
                                          "external audit (voltha_gevent.testing.ledger); no dispatcher")
    run.add_argument("--ledger-tick", type=float, default=0.05, help="seconds between ledger ticks")
    run.add_argument("--ledger-revoke-delay", type=float, default=0.0,
                     help="on_revoked sleeps this long first (the file LEDGER.revoke-delay overrides it)")
    run.add_argument("--ledger-block", type=float, default=6.0,
                     help="SIGUSR1 blocks the event loop this many seconds (ledger mode)")
    run.add_argument("--no-dispatch", dest="dispatch", action="store_false",
                     help="demo: do not mount the request dispatcher (POST /request, POST /dispatch; "
                          "shared token for /dispatch from VOLTHA_DISPATCH_TOKEN)")
    status = sub.add_parser("status", help="show the cluster",
                            description="Leader and epoch, members with addresses and item counts, "
                                        "workload size, items unassigned and in handover.")
    _client_flags(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    workload = sub.add_parser("workload", help="list, add or remove workload items",
                              description="Administrator edits of <prefix>/workload/.")
    _client_flags(workload)
    wsub = workload.add_subparsers(dest="action", required=True)
    listing = wsub.add_parser("list", help="list items, one per line")
    listing.add_argument("--values", action="store_true", help="with each item's ModifyIndex and value")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    setter = wsub.add_parser("set", help="change an item's value; its owner is told",
                             description="Overwrite the value of an existing item (--cas INDEX: only if "
                                         "its ModifyIndex is still INDEX, as 'list --values' shows).")
    setter.add_argument("item", metavar="ITEM", help="an item of the workload")
    new_value = setter.add_mutually_exclusive_group(required=True)
    new_value.add_argument("--value", help="the new value as text")
    new_value.add_argument("--value-file", help="file whose bytes are the new value ('-': stdin), <= 512 KiB")
    setter.add_argument("--cas", type=int, metavar="INDEX", help="write only if the item is still at INDEX")
    _client_flags(setter, nested=True)
    add = wsub.add_parser("add", help="add items (never overwrites)",
                          description="Create items with cas=0: existing items are left unchanged.")
    add.add_argument("items", nargs="+", metavar="ITEM", help="item names: 1-256 of [A-Za-z0-9_-.,]")
    value = add.add_mutually_exclusive_group()
    value.add_argument("--value", default="", help="text stored with each new item (default empty)")
    value.add_argument("--value-file", help="file whose bytes are stored with each new item ('-': stdin); "
                                            "at most 512 KiB")
    remove = wsub.add_parser("remove", help="remove items")
    remove.add_argument("items", nargs="+", metavar="ITEM", help="item names")
    pin = wsub.add_parser("pin", help="run an item on one member",
                          description="The item runs on MEMBER while it is live and not draining; "
                                      "otherwise the ring places it. Replaces an earlier pin.")
    pin.add_argument("item", metavar="ITEM", help="an item of the workload")
    pin.add_argument("member", metavar="MEMBER", help="instance id")
    unpin = wsub.add_parser("unpin", help="let the ring place items again")
    unpin.add_argument("items", nargs="+", metavar="ITEM", help="item names")
    for action in (listing, add, remove, pin, unpin):
        _client_flags(action, nested=True)
    drain = sub.add_parser("drain", help="move a member's items away; it stays a member",
                           description="The leader hands the member's items over one handover each "
                                       "and assigns it none until 'undrain'.")
    undrain = sub.add_parser("undrain", help="let a drained member take items again")
    for action in (drain, undrain):
        _client_flags(action)
        action.add_argument("member", metavar="MEMBER", help="instance id")
    drain.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait until the member holds no item (exit 1 after SECONDS)")
    assignments = sub.add_parser("assignments", help="who should own and who owns items",
                                 description="Per item, ordered by member: the published assignment, "
                                             "what the assignment function wants for the live members "
                                             "now, and the holder of the owner lock.")
    _client_flags(assignments)
    assignments.add_argument("--item", action=_Once, help="only this item (give it once)")
    assignments.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


class _Once(argparse.Action):
    """A flag that may be given once: argparse would silently keep the last of two ``--item``,
    so an operator asking about two items would see one. Refused (exit 2) instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} may be given only once")
        setattr(namespace, self.dest, values)


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, help_text in _SETTING_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=help_text)


def _config_flag(parser: argparse.ArgumentParser) -> None:
    """``--config`` on a subcommand too, so ``voltha-gevent run --config FILE`` works like
    ``voltha-gevent --config FILE run``; SUPPRESS keeps an absent one from hiding the global one."""
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="TOML file of settings (or VOLTHA_CONFIG)")


def _client_flags(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """The settings an admin command needs. ``nested`` parsers (``workload add``) accept them too,
    without defaults, so a flag given before or after the action both count."""
    extra = {"default": argparse.SUPPRESS} if nested else {}
    _config_flag(parser)
    for name in ("consul", "consul_scheme", "consul_token_file", "consul_ca_file", "prefix", "log_format"):
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=_SETTING_FLAGS[name], **extra)


def load_config(args: argparse.Namespace) -> Config:
    flags = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
    return Config.load(flags=flags, config_file=args.config)


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
