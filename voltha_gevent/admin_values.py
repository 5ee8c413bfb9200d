"""Operator commands on live values: ``workload set ITEM`` and ``workload list --values``.

Apart from :mod:`voltha_gevent.admin` only to keep each module small; dispatch, errors and
exit codes are that module's. What a changed value does on the item's owner is
:mod:`voltha_gevent.value_updates`' business (``on_updated``, or revoke + assign).

* ``workload set ITEM --value V`` overwrites the value of an item **that exists**: it reads
  the item's ``ModifyIndex`` and writes with ``cas`` on it, so a ``set`` racing a ``remove``
  never brings the item back (it reads again and retries, :data:`SET_ATTEMPTS` times). An
  absent item exits 1 (``workload add`` creates items).
* ``--cas INDEX`` writes only if the item's ``ModifyIndex`` is still INDEX (as shown by
  ``workload list --values``); otherwise exit 1 and nothing is written. ``--cas 0`` is
  Consul's "create only if absent".
* ``workload list --values`` shows each item's ``ModifyIndex`` and value; ``--json`` gives
  ``[{"item", "modify_index", "value"}]``, ``value`` as text, or null with ``value_base64``
  when it is not UTF-8.
"""

from __future__ import annotations

import argparse
import base64
import json
from typing import Any

from .admin import EXIT_FAILURE, EXIT_OK, _fail, _out, checked_items, read_value
from .consul_api import ConsulAPI
from .entries import KVEntry
from .keys import Keys, child_name

#: How often ``workload set`` (without ``--cas``) reads and writes again when the item
#: changed between its read and its write.
SET_ATTEMPTS = 5
#: Values longer than this are cut in the text output of ``list --values``.
TEXT_VALUE_WIDTH = 60


def cmd_set(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    """``workload set ITEM (--value V | --value-file F) [--cas INDEX]``."""
    item = checked_items([args.item])[0]
    value = read_value(args)
    key = keys.item(item)
    cas = getattr(args, "cas", None)
    if cas is not None:
        if not api.put(key, value, cas=cas):
            _, now = api.get(key, consistent=True)
            where = f"it is at index {now.modify_index}" if now else "it is not in the workload"
            return _fail(f"{item} changed since index {cas} ({where}); nothing written", EXIT_FAILURE)
        return _written(api, key, item)
    for _ in range(SET_ATTEMPTS):
        _, entry = api.get(key, consistent=True)
        if entry is None:
            return _fail(f"not in the workload: {item} (workload add creates items)", EXIT_FAILURE)
        if api.put(key, value, cas=entry.modify_index):
            return _written(api, key, item)
    return _fail(f"{item} kept changing; nothing written after {SET_ATTEMPTS} attempts", EXIT_FAILURE)


def _written(api: ConsulAPI, key: str, item: str) -> int:
    _, entry = api.get(key, consistent=True)
    _out(f"set     {item} (index {entry.modify_index if entry else '?'})")
    return EXIT_OK


def cmd_list(api: ConsulAPI, keys: Keys, args: argparse.Namespace) -> int:
    """``workload list [--values] [--json]``."""
    as_json = getattr(args, "json", False)
    if not getattr(args, "values", False):
        _, names = api.keys(keys.workload)
        items = sorted(n for key in names if (n := child_name(keys.workload, key)))
        if as_json:
            _out(json.dumps(items))
        for name in [] if as_json else items:
            _out(name)
        return EXIT_OK
    _, entries = api.list(keys.workload)
    rows = sorted((row for entry in entries if (row := value_row(keys, entry))), key=lambda r: r["item"])
    if as_json:
        _out(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    for row in rows:
        shown = row["value"] if row["value"] is not None else f"(base64) {row['value_base64']}"
        if len(shown) > TEXT_VALUE_WIDTH:
            shown = shown[: TEXT_VALUE_WIDTH - 3] + "..."
        _out(f"{row['item']}  {row['modify_index']}  {shown}")
    return EXIT_OK


def value_row(keys: Keys, entry: KVEntry) -> dict[str, Any] | None:
    """One item of the workload with its value and ModifyIndex; None for keys not ours."""
    name = child_name(keys.workload, entry.key)
    if name is None:
        return None
    row: dict[str, Any] = {"item": name, "modify_index": entry.modify_index, "value": entry.text()}
    if row["value"] is None and entry.value:
        row["value_base64"] = base64.b64encode(entry.value).decode("ascii")
    elif row["value"] is None:
        row["value"] = ""  # Consul answers an empty value as null
    return row


__all__ = ["SET_ATTEMPTS", "cmd_list", "cmd_set", "value_row"]
