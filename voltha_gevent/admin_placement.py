"""Operator commands on placement: ``drain|undrain MEMBER`` and ``workload pin|unpin``.

They only write the operator's keys (:mod:`voltha_gevent.keys`): ``drain/<member>`` and
``pins/<item>``; the leader watches both and moves items by graceful handover (rules in
:mod:`voltha_gevent.placement`). Apart from :mod:`voltha_gevent.admin` only to keep each
module small; dispatch, errors and exit codes are that module's.

* ``drain MEMBER`` marks the member (live or not yet: it then takes nothing when it joins);
  with ``--wait S`` it also waits until the member holds no assignment and no owner lock,
  exit 1 if that takes longer. ``undrain MEMBER`` removes the mark; exit 1 when there was
  none (a node draining itself, for SIGTERM or ``Node.drain()``, is not the operator's).
* ``workload pin ITEM MEMBER`` needs ITEM in the workload (else exit 1, nothing written) and
  replaces any earlier pin of it; ``workload unpin ITEM...`` exits 1 when one was not pinned.
"""

from __future__ import annotations

import argparse
import json
import time

from .admin import EXIT_FAILURE, EXIT_OK, InputError, _fail, _out
from .assignment_docs import parse_documents
from .consul_api import ConsulAPI
from .keys import Keys, child_name, held_owners, valid_name
from .membership import MemberRecord, parse_members

#: How often ``drain --wait`` looks whether the member still holds items (seconds).
DRAIN_POLL = 0.5


def cmd_drain(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    """``drain MEMBER [--wait S]`` and ``undrain MEMBER``."""
    member = _checked("member", args.member)
    members = _members(api, keys)
    if args.command == "undrain":
        return _undrain(api, keys, member, members.get(member))
    api.put(keys.drain(member), json.dumps({"since": round(time.time(), 3)}))
    note = "" if member in members else " (not a live member: it takes no items when it joins)"
    _out(f"draining {member}{note}")
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while (held := holdings(api, keys, member)) and time.monotonic() < deadline:
        time.sleep(DRAIN_POLL)
    if held:
        return _fail(f"{member} still holds {held} item(s) after {args.wait:g} s", EXIT_FAILURE)
    _out(f"drained  {member}")
    return EXIT_OK


def _undrain(api: ConsulAPI, keys: Keys, member: str, record: MemberRecord | None) -> int:
    _, entry = api.get(keys.drain(member))
    if entry is None:
        why = " (it drains itself: a stopping node or Node.drain())" if record and record.draining else ""
        return _fail(f"{member} is not drained by an operator{why}", EXIT_FAILURE)
    api.delete(keys.drain(member))
    _out(f"undrained {member}")
    return EXIT_OK


def holdings(api: ConsulAPI, keys: Keys, member: str) -> int:
    """Items the member is assigned or holds the owner lock of (two plain reads)."""
    _, entries = api.list(keys.assignments_of(member))
    assigned = set(parse_documents(keys.assignments, entries or []).assigned)
    _, owners = api.list(keys.owners)
    owned = {item for item, holder in held_owners(keys.owners, owners).items() if holder == member}
    return len(assigned | owned)


def cmd_pin(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    """``workload pin ITEM MEMBER`` and ``workload unpin ITEM...``."""
    if args.action == "unpin":
        return _unpin(api, keys, [_checked("item", item) for item in dict.fromkeys(args.items)])
    item, member = _checked("item", args.item), _checked("member", args.member)
    _, item_keys = api.keys(keys.workload)
    if item not in {child_name(keys.workload, key) for key in item_keys}:
        return _fail(f"not in the workload: {item} (nothing pinned)", EXIT_FAILURE)
    api.put(keys.pin(item), member)
    record = _members(api, keys).get(member)
    _, drain = api.get(keys.drain(member))
    dormant = record is None or record.draining or drain is not None
    note = f" (dormant while {member} is not a live, undrained member: the ring places it)" if dormant else ""
    _out(f"pinned  {item} -> {member}{note}")
    return EXIT_OK


def _unpin(api: ConsulAPI, keys: Keys, items: list[str]) -> int:
    absent = []
    for item in items:
        _, entry = api.get(keys.pin(item))
        if entry is None:
            absent.append(item)
            _out(f"absent  {item} (not pinned)")
        else:
            api.delete(keys.pin(item))
            _out(f"unpinned {item}")
    if absent:
        return _fail(f"not pinned: {', '.join(absent)}", EXIT_FAILURE)
    return EXIT_OK


def _members(api: ConsulAPI, keys: Keys) -> dict[str, MemberRecord]:
    return parse_members(keys, api.list(keys.members)[1])


def _checked(what: str, name: str) -> str:
    if not valid_name(name):
        raise InputError(f"invalid {what} name {name!r}; a name is 1-256 of [A-Za-z0-9_-.,] and not "
                         "'.' or '..'")
    return name
