"""The ``voltha-gevent`` argument parser and the settings it carries (no side effects).

Apart from :mod:`voltha_gevent.cli` because importing that module monkey-patches the process
(the entry point must patch before ``requests`` is imported): tests and tools that only need
to parse a command line import this one and stay unpatched.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config import Config

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
    "freeze_heap": "freeze long-lived objects out of the garbage collector's way when the work "
                   "settles (default true; see voltha_gevent.heap)",
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


__all__ = ["build_parser", "load_config"]
