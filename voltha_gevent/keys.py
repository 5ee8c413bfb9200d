"""The Consul key layout under one prefix, in one place.

::

    <prefix>/leader                        lock held by the leader's session; value: instance id
    <prefix>/members/<instance_id>         lock held by each member's session; value: JSON record
    <prefix>/workload/<item>               administrator's items; value opaque to voltha-gevent
    <prefix>/assignments/<member>/<bucket> written by the leader: JSON {"epoch": N, "items": [...]}
                                           (see :mod:`voltha_gevent.assignment_docs`)
    <prefix>/owners/<item>                 lock held by the owning worker's session; value: instance id
    <prefix>/drain/<member>                operator's drain of a member (any value; its presence counts)
    <prefix>/pins/<item>                   operator's pin of an item; value: the member's instance id

Items and members are direct children of their folder; anything nested deeper, or with a
name outside :data:`NAME_RE`, is not ours to interpret and is skipped by the readers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Names that are safe as one Consul key segment in every Consul version.
NAME_RE = re.compile(r"^[A-Za-z0-9_\-.,]{1,256}$")


def valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name)) and name not in (".", "..")  # "$" would accept "a\n"


@dataclass(frozen=True)
class Keys:
    """Key names for one deployment prefix (``service/voltha`` by default)."""

    prefix: str

    @property
    def leader(self) -> str:
        return f"{self.prefix}/leader"

    @property
    def members(self) -> str:
        return f"{self.prefix}/members/"

    def member(self, instance_id: str) -> str:
        return f"{self.members}{instance_id}"

    @property
    def workload(self) -> str:
        return f"{self.prefix}/workload/"

    def item(self, item: str) -> str:
        return f"{self.workload}{item}"

    @property
    def assignments(self) -> str:
        return f"{self.prefix}/assignments/"

    def assignments_of(self, member: str) -> str:
        return f"{self.assignments}{member}/"

    @property
    def owners(self) -> str:
        return f"{self.prefix}/owners/"

    def owner(self, item: str) -> str:
        return f"{self.owners}{item}"

    @property
    def drains(self) -> str:
        return f"{self.prefix}/drain/"

    def drain(self, member: str) -> str:
        return f"{self.drains}{member}"

    @property
    def pins(self) -> str:
        return f"{self.prefix}/pins/"

    def pin(self, item: str) -> str:
        return f"{self.pins}{item}"


def child_name(folder: str, key: str) -> str | None:
    """The direct child's name of ``key`` under ``folder``, or None (nested, bad, the folder)."""
    if not key.startswith(folder):
        return None
    name = key[len(folder) :]
    return name if valid_name(name) else None


def held_owners(folder: str, entries: Iterable[Any]) -> dict[str, str]:
    """item -> holder's value (its instance id, "" when unreadable) for every ``owners/<item>``
    lock held by a session, from a listing of ``folder``; nested or misnamed keys are left out."""
    held = {}
    for entry in entries:
        name = child_name(folder, entry.key)
        if name is not None and entry.session:
            held[name] = entry.text() or ""
    return held


def drained_members(folder: str, names: Iterable[str]) -> set[str]:
    """Members named by the ``drain/<member>`` keys of a key listing of ``folder``."""
    return {name for name in (child_name(folder, key) for key in names) if name is not None}


def parse_pins(folder: str, entries: Iterable[Any]) -> dict[str, str]:
    """item -> member from a listing of ``pins/``; a pin whose value is not a valid member
    name is left out (it could only ever mean "nowhere")."""
    pins = {}
    for entry in entries:
        item = child_name(folder, entry.key)
        member = (entry.text() or "").strip()
        if item is not None and valid_name(member):
            pins[item] = member
    return pins
