"""Operator commands: ``status``, ``workload list|add|remove`` and ``assignments``
(``drain``, ``undrain`` and ``workload pin|unpin`` are in :mod:`voltha_gevent.admin_placement`,
``workload set`` and ``workload list`` in :mod:`voltha_gevent.admin_values`).

Each command reads (or, for ``workload``, edits) the key layout of :mod:`voltha_gevent.keys`
through one short-timeout :class:`ConsulAPI` client and prints to stdout; nothing here runs
a node, holds a session or retries forever. Guarantees:

* ``workload add`` validates every name (:func:`voltha_gevent.keys.valid_name`) and the value
  size (Consul's 512 KiB) before writing anything, then creates each item with ``cas=0``: an
  existing item is never overwritten, and the output says which ones already existed.
* ``workload remove`` deletes only the named direct children of ``workload/``; a named item
  that is absent makes it exit 1 (after removing the present ones).
* ``status`` and ``assignments`` are read-only.

Exit codes: 0 success; 1 Consul unreachable, refused the request, not a Consul agent, or an
unknown item (``workload remove``, ``assignments --item``); 2 invalid input (nothing is
written then). Messages go to stderr and start with ``voltha-gevent:``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .assignment import AssignmentPolicy
from .assignment_docs import read_assignments
from .client_settings import ADMIN_CALL_TIMEOUT
from .config import Config
from .consul_api import ConsulAPI, make_client
from .entries import MAX_VALUE_BYTES
from .errors import ConsulRejected, ConsulUnavailable, NotConsulAgent, PermissionDenied, VolthaError
from .keys import Keys, child_name, drained_members, held_owners, parse_pins, valid_name
from .membership import MemberRecord, parse_members
from .placement import Placement
from .soak import plan, plan_inputs

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: At most this many items are named in the text output of ``status``.
STATUS_LIST_LIMIT = 10


class InputError(VolthaError):
    """The operator's input is invalid; nothing was written."""


# Entry point


def dispatch(config: Config, args: argparse.Namespace) -> int:
    """Run the admin command in ``args.command``; the process exit code."""
    from .admin_placement import cmd_drain  # it imports this module's helpers

    commands: dict[str, Callable[[ConsulAPI, Keys, argparse.Namespace], int]] = {
        "status": cmd_status,
        "workload": cmd_workload,
        "assignments": cmd_assignments,
        "drain": cmd_drain,
        "undrain": cmd_drain,
    }
    command = commands.get(args.command)
    if command is None:
        return _fail(f"unknown command {args.command!r}", EXIT_USAGE)
    try:
        api = ConsulAPI(make_client(config.client_settings(), timeout=ADMIN_CALL_TIMEOUT))  # no retries
        api.check_agent(config.consul)  # before any write: another HTTP server would take them
        return command(api, Keys(config.prefix), args)
    except InputError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except NotConsulAgent as exc:
        return _fail(f"{exc}; check --consul, VOLTHA_CONSUL or CONSUL_HTTP_ADDR", EXIT_FAILURE)
    except ConsulUnavailable as exc:
        return _fail(f"cannot reach Consul at {config.consul} ({_short(exc)}); check --consul, "
                     "VOLTHA_CONSUL or CONSUL_HTTP_ADDR and that the agent is up", EXIT_FAILURE)
    except PermissionDenied as exc:
        return _fail(f"Consul at {config.consul} denied the request ({exc.detail}); check the ACL "
                     "token (VOLTHA_CONSUL_TOKEN or --consul-token-file)", EXIT_FAILURE)
    except ConsulRejected as exc:
        return _fail(str(exc), EXIT_FAILURE)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"voltha-gevent: {message}\n")
    return code


def _short(exc: ConsulUnavailable) -> str:
    """The gist of a requests error (they embed a whole repr of the connection pool)."""
    text = exc.detail
    for marker, gist in (("ConnectionRefused", "connection refused"), ("Timeout", "timed out"),
                         ("UnknownHost", "unknown host"), ("Connection refused", "connection refused"),
                         ("timed out", "timed out"), ("Name or service not known", "unknown host"),
                         ("Temporary failure in name resolution", "unknown host")):
        if marker in text:
            return gist
    return text[:200]


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# Reading the cluster


@dataclass
class ClusterView:
    """One read of everything under the prefix, and what follows from it."""

    leader: str | None
    epoch: int
    members: dict[str, MemberRecord]
    items: list[str]
    assigned: dict[str, list[str]]  # item -> members whose assignments/ documents list it
    owners: dict[str, str]  # item -> instance id holding owners/<item>
    desired: dict[str, str] = field(default_factory=dict)
    drains: set[str] = field(default_factory=set)  # members with an operator's drain/<member>
    pins: dict[str, str] = field(default_factory=dict)  # item -> member, from pins/<item>

    def draining(self, member: str) -> bool:
        """Drained by an operator, or draining itself (its record says so)."""
        record = self.members.get(member)
        return member in self.drains or bool(record and record.draining)

    def assignee(self, item: str) -> str | None:
        """The live member the item is published to (the leader's own tie-break: first by name)."""
        live = [m for m in self.assigned.get(item, []) if m in self.members]
        return live[0] if live else None

    def unassigned(self) -> list[str]:
        return [item for item in self.items if self.assignee(item) is None]

    def in_handover(self) -> list[dict[str, str | None]]:
        """Items assigned to a live member but owned by another member or by nobody."""
        out = []
        for item in self.items:
            member = self.assignee(item)
            if member is not None and self.owners.get(item) != member:
                out.append({"item": item, "assigned": member, "owner": self.owners.get(item)})
        return out

    def counts(self, member: str) -> tuple[int, int]:
        assigned = sum(1 for ms in self.assigned.values() if member in ms)
        owned = sum(1 for owner in self.owners.values() if owner == member)
        return assigned, owned


def read_cluster(api: ConsulAPI, keys: Keys) -> ClusterView:
    """Read leader, members, workload, assignments and owners (five plain reads)."""
    _, leader_entry = api.get(keys.leader)
    _, member_entries = api.list(keys.members)
    _, item_keys = api.keys(keys.workload)
    published = read_assignments(api, keys)
    _, owner_entries = api.list(keys.owners)
    _, drain_keys = api.keys(keys.drains)
    _, pin_entries = api.list(keys.pins)
    owners = held_owners(keys.owners, owner_entries)
    items = sorted(name for key in item_keys if (name := child_name(keys.workload, key)))
    view = ClusterView(
        leader=(leader_entry.text() or "?") if leader_entry and leader_entry.session else None,
        epoch=leader_entry.lock_index if leader_entry else 0,
        members=parse_members(keys, member_entries),
        items=items,
        assigned={item: sorted(ms) for item, ms in published.assigned.items()},
        owners=owners,
        drains=drained_members(keys.drains, drain_keys),
        pins=parse_pins(keys.pins, pin_entries),
    )
    placement = Placement(frozenset(m for m in view.members if view.draining(m)) | view.drains, view.pins)
    # the leader's own plan function, tie-break for an item on two members included
    view.desired = plan(plan_inputs(view.members, set(items), view.assigned, placement), AssignmentPolicy())
    return view


# Status


def cmd_status(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    view = read_cluster(api, keys)
    report = status_report(view, keys.prefix)
    if args.json:
        _out(json.dumps(report, indent=2, sort_keys=True))
    else:
        _out(render_status(report))
    return EXIT_OK


def status_report(view: ClusterView, prefix: str) -> dict[str, Any]:
    members = []
    for name, record in sorted(view.members.items()):
        assigned, owned = view.counts(name)
        members.append({
            "instance_id": name, "internal_host": record.internal_host,
            "external_host": record.external_host, "rest_port": record.rest_port,
            "capacity": record.capacity, "version": record.version,
            "assigned": assigned, "owned": owned, "leader": name == view.leader,
            "draining": view.draining(name),
        })
    return {
        "prefix": prefix,
        "leader": view.leader,
        "epoch": view.epoch,
        "members": members,
        "workload_items": len(view.items),
        "unassigned": view.unassigned(),
        "in_handover": view.in_handover(),
        "pins": view.pins,
    }


def render_status(report: dict[str, Any]) -> str:
    unassigned, handover = report["unassigned"], report["in_handover"]
    lines = [
        f"prefix      {report['prefix']}",
        f"leader      {report['leader'] or '(none)'}  epoch {report['epoch']}",
        f"members     {len(report['members'])}",
        f"workload    {report['workload_items']} items, {len(unassigned)} unassigned, "
        f"{len(handover)} in handover",
        "",
    ]
    rows = [[m["instance_id"] + (" *" if m["leader"] else ""), m["internal_host"], m["external_host"],
             str(m["rest_port"]), f"{m['capacity']:g}", str(m["assigned"]), str(m["owned"]),
             "draining" if m["draining"] else "active"] for m in report["members"]]
    header = ["MEMBER", "INTERNAL", "EXTERNAL", "REST", "CAPACITY", "ASSIGNED", "OWNED", "STATE"]
    lines += _table(header, rows)
    if not rows:
        lines.append("(no live members)")
    if unassigned:
        lines += ["", "unassigned: " + _some(unassigned)]
    if handover:
        lines += ["", "in handover: " + _some(
            f"{h['item']} ({h['owner'] or 'nobody'} -> {h['assigned']})" for h in handover)]
    if report["pins"]:
        lines += ["", "pinned: " + _some(f"{item} -> {m}" for item, m in sorted(report["pins"].items()))]
    return "\n".join(lines)


def _some(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:STATUS_LIST_LIMIT])
    extra = len(names) - STATUS_LIST_LIMIT
    return shown + (f", ... ({extra} more)" if extra > 0 else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]


# Workload


def cmd_workload(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    if args.action in ("pin", "unpin"):
        from .admin_placement import cmd_pin

        return cmd_pin(api, keys, args)
    if args.action in ("list", "set"):
        from .admin_values import cmd_list, cmd_set  # values and indexes (workload set, list --values)

        return cmd_list(api, keys, args) if args.action == "list" else cmd_set(api, keys, args)
    items = checked_items(args.items)
    if args.action == "add":
        return _add(api, keys, items, read_value(args))
    return _remove(api, keys, items)


def checked_items(names: Sequence[str]) -> list[str]:
    """The names, de-duplicated in order; :class:`InputError` naming every bad one."""
    bad = [name for name in names if not valid_name(name)]
    if bad:
        raise InputError(f"invalid item name(s): {', '.join(repr(b) for b in bad)}; a name is 1-256 of "
                         "[A-Za-z0-9_-.,] and not '.' or '..'")
    return list(dict.fromkeys(names))


def read_value(args: argparse.Namespace) -> bytes:
    """The value for new items: ``--value`` text or ``--value-file`` bytes, at most 512 KiB."""
    path = getattr(args, "value_file", None)
    if path and args.value:
        raise InputError("give --value or --value-file, not both")
    if path:
        value = _read_limited(path)
    else:
        value = (args.value or "").encode("utf-8")
    if len(value) > MAX_VALUE_BYTES:
        raise InputError(f"value is larger than Consul's limit of {MAX_VALUE_BYTES} bytes (512 KiB)")
    return value


def _read_limited(path: str) -> bytes:
    """At most one byte more than Consul takes, from ``path`` ('-' is stdin)."""
    if path == "-":
        return sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
    try:
        with open(path, "rb") as handle:
            return handle.read(MAX_VALUE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read --value-file: {exc}") from exc


def _add(api: ConsulAPI, keys: Keys, items: list[str], value: bytes) -> int:
    created, existed = [], []
    for item in items:
        (created if api.put(keys.item(item), value, cas=0) else existed).append(item)
    for item in created:
        _out(f"added   {item}")
    for item in existed:
        _out(f"exists  {item} (left unchanged)")
    return EXIT_OK


def _remove(api: ConsulAPI, keys: Keys, items: list[str]) -> int:
    """Delete the present items; exit 1 when any named item was absent (the others are still
    removed), so a script that removes the wrong name notices."""
    _, item_keys = api.keys(keys.workload)
    present = {n for key in item_keys if (n := child_name(keys.workload, key))}
    absent = [item for item in items if item not in present]
    for item in items:
        if item in present:
            api.delete(keys.item(item))
            _out(f"removed {item}")
        else:
            _out(f"absent  {item} (nothing to remove)")
    if absent:
        return _fail(f"not in the workload: {', '.join(absent)}", EXIT_FAILURE)
    return EXIT_OK


# Assignments


def cmd_assignments(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    if args.item is not None and not valid_name(args.item):
        raise InputError(f"invalid item name {args.item!r}")
    view = read_cluster(api, keys)
    rows = assignment_rows(view, args.item)
    if args.json:
        _out(json.dumps(rows, indent=2, sort_keys=True))
    else:
        header = ["ITEM", "ASSIGNED", "DESIRED", "OWNER", "STATE"]
        _out("\n".join(_table(header, [[r["item"], r["assigned"] or "-", r["desired"] or "-",
                                         r["owner"] or "-", r["state"]] for r in rows])))
    if args.item is not None and rows[0]["state"] == "unknown":
        return _fail(f"item {args.item!r} is not in the workload, assigned or owned", EXIT_FAILURE)
    return EXIT_OK


@dataclass(frozen=True)
class AssignmentRow:
    item: str
    assigned: str | None  # the live member the leader published it to
    desired: str | None  # what desired_assignment says for the live members now
    owner: str | None  # who holds owners/<item>
    state: str  # ok | handover | unassigned | rebalance | stale | unknown


def assignment_rows(view: ClusterView, only: str | None = None) -> list[dict[str, Any]]:
    """One row per item, ordered by assigned member then item (per member), or one item."""
    names = [only] if only is not None else sorted(set(view.items) | set(view.assigned) | set(view.owners))
    rows = [_row(view, item) for item in names]
    rows.sort(key=lambda r: (r.assigned is None, r.assigned or "", r.item))
    return [asdict(r) for r in rows]


def _row(view: ClusterView, item: str) -> AssignmentRow:
    assigned, desired, owner = view.assignee(item), view.desired.get(item), view.owners.get(item)
    if item not in view.items:
        state = "stale" if assigned or owner else "unknown"
    elif assigned is None:
        state = "unassigned"
    elif owner != assigned:
        state = "handover"
    elif desired != assigned:
        state = "rebalance"
    else:
        state = "ok"
    return AssignmentRow(item, assigned, desired, owner, state)


__all__ = ["ClusterView", "InputError", "dispatch", "read_cluster"]
