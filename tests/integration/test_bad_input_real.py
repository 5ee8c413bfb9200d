"""Bad input in the shared prefix of a real Consul, with node processes running.

Other writers put undecodable and huge values, odd and nested keys, broken membership
records, assignment documents for unknown members and items or unreadable ones, keys under
``assignments/`` that are not documents, ``owners/`` locks of foreign sessions
and a hand-written leader key into the prefix. The nodes must stay up, count the skips
(``/metrics``), lose nothing valid, converge on the valid items, and never run an item twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltha_gevent.assignment import desired_assignment
from voltha_gevent.assignment_docs import bucket_of, doc_key, encode, read_assignments
from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.keys import Keys
from voltha_gevent.testing.auditor import audit_reports, owners_in_consul, read_reports
from voltha_gevent.testing.processes import NodeProcess, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]
ITEMS = [f"dg{i:04d}" for i in range(1, 101)]
NODES = ("n1", "n2", "n3")
SETTLE = 30.0


class Bed:
    def __init__(self, agent, tmp: Path) -> None:
        self.prefix = f"bad/{uuid.uuid4().hex[:8]}"
        self.keys = Keys(self.prefix)
        self.client = make_client(ClientSettings(host=agent.host, port=agent.port))
        self.api = ConsulAPI(self.client)
        self.nodes = {n: NodeProcess(n, agent.http_addr, tmp, prefix=self.prefix) for n in NODES}

    def key(self, rest: str) -> str:
        return f"{self.prefix}/{rest}"

    def workload(self) -> dict[str, tuple[bytes | None, int]]:
        _, entries = self.api.list(self.key("workload/"), consistent=True)
        return {e.key: (e.value, e.modify_index) for e in entries}

    def converged(self, items: set[str]) -> bool:
        statuses = {n: p.status() for n, p in self.nodes.items()}
        if not all(s and s["healthy"] and not s["revoking"] for s in statuses.values()):
            return False
        owned = [(i, n) for n, s in statuses.items() for i in s["owned"]]  # type: ignore[index]
        if len(owned) != len(items) or {i for i, _ in owned} != items:
            return False
        documents = read_assignments(self.api, self.keys, consistent=True)
        if any(len(ms) != 1 for ms in documents.assigned.values()):
            return False  # an item published to two members (or a stray one still listed)
        published = {i: m for i, ms in documents.assigned.items() for m in ms if i in items}
        desired = desired_assignment({n: 1.0 for n in NODES}, items, published)
        held = owners_in_consul(self.api, self.key("owners/"))
        return published == desired == dict(owned) == {i: n for i, n in held.items() if i in items}

    def assignment_keys(self) -> set[str]:
        return set(self.api.keys(self.keys.assignments, consistent=True)[1])

    def explain(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(12)}" for n, p in self.nodes.items())


@pytest.fixture
def bed(dev_agent, tmp_path) -> Iterator[Bed]:
    b = Bed(dev_agent, tmp_path)
    for i, item in enumerate(ITEMS):
        b.api.put(b.key(f"workload/{item}"), f"value-{i}")
    try:
        for node in b.nodes.values():
            node.start()
        assert wait_for(lambda: b.converged(set(ITEMS)), SETTLE), b.explain()
        yield b
    finally:
        for node in b.nodes.values():
            node.stop()
        b.api.delete(b.prefix, recurse=True)


#: Keys under assignments/ that are not <member>/<bucket>: skipped and left alone.
LEFT_ALONE = ("assignments/n2/00/deeper", "assignments/n3/not-a-bucket", "assignments/c")


def bad_documents(bed: Bed) -> list[tuple[str, bytes | str, str | None]]:
    """A dead member's document, an item of no workload added to n1's, an unreadable one of
    n3's own, and keys that are not documents."""
    published = read_assignments(bed.api, bed.keys, consistent=True)
    stray = doc_key(bed.keys, "n1", bucket_of("no-such-item"))
    n1_items = [i for i in published.items_of("n1") if bucket_of(i) == bucket_of("no-such-item")]
    n3_doc = next(k for k in sorted(published.raw) if k.startswith(bed.keys.assignments_of("n3")))
    return [
        (f"assignments/ghost/{bucket_of('dg0001')}", encode(1, ["dg0001"]), None),
        (stray[len(bed.prefix) + 1:], encode(1, [*n1_items, "no-such-item"]), None),
        (n3_doc[len(bed.prefix) + 1:], b"\xff not json", None),
        *((k, encode(1, ["dg0002"]), None) for k in LEFT_ALONE),
    ]


def test_junk_in_every_folder_is_skipped_and_nothing_valid_is_lost(bed: Bed) -> None:
    before = bed.workload()
    kv = bed.client.kv
    session = bed.client.session.create(name="stranger", lock_delay=0, ttl=60)
    record = json.dumps({"instance_id": "ghost", "internal_host": "h", "rest_port": 1})
    junk: list[tuple[str, bytes | str, str | None]] = [
        ("workload/sp ace", "odd name", None),
        ("workload/ü-umlaut", b"\xff\xfe\xfd", None),
        ("workload/semi;colon", "x", None),
        ("workload/nested/deeper", "x", None),
        ("workload/binary", bytes(range(256)), None),
        ("workload/huge", b"\xff" * (512 * 1024), None),
        ("members/ghost", b"\xff not json", session),
        ("members/lacks-id", json.dumps({"internal_host": "h"}), session),
        ("members/ghost2/nested", record, session),
        ("members/unlocked", record, None),
        *bad_documents(bed),
        ("owners/no-such-item", "n1", session),
        ("owners/contested", b"\xff\xfe", session),  # a stranger holds a new item's lock
        ("workload/contested", "valid", None),
    ]
    for key, value, holder in junk:
        assert kv.put(bed.key(key), value, acquire=holder) is True, key
    assert kv.put(bed.key("leader"), "ghost") is True  # by hand, no session
    items = set(ITEMS) | {"binary", "huge", "contested"}
    blocked = {"contested"}
    assert wait_for(lambda: bed.converged(items - blocked), SETTLE), bed.explain()
    assert all(p.alive() for p in bed.nodes.values())
    statuses = [p.status() for p in bed.nodes.values()]
    assert all("contested" not in s["owned"] for s in statuses)  # type: ignore[index]
    assert len({s["leader"] for s in statuses}) == 1  # type: ignore[index]

    leader = next(p for p in bed.nodes.values() if p.status()["is_leader"])  # type: ignore[index]
    code, metrics = leader.get("/metrics")
    assert code == 200
    skipped = [line for line in str(metrics).splitlines()
               if line.startswith("voltha_entries_skipped") and not line.endswith(" 0.0")]
    assert skipped, "the leader counted no skipped entries"
    _, metrics = bed.nodes["n3"].get("/metrics")
    skipped = [line for line in str(metrics).splitlines()
               if line.startswith("voltha_documents_skipped") and not line.endswith(" 0.0")]
    assert skipped, "n3 counted no skipped document"
    published = bed.assignment_keys()
    assert bed.key(f"assignments/ghost/{bucket_of('dg0001')}") not in published  # a dead member's: removed
    assert {bed.key(k) for k in LEFT_ALONE} <= published  # not documents: not ours to remove
    assert "no-such-item" not in read_assignments(bed.api, bed.keys).assigned

    # the stranger goes away: its lock goes with it and the blocked item converges too
    bed.client.session.destroy(session)
    assert wait_for(lambda: bed.converged(items), SETTLE), bed.explain()

    after = bed.workload()
    assert {k: v for k, v in after.items() if k in before} == before
    reports = [p.report_file for p in bed.nodes.values()]
    assert audit_reports(read_reports(reports)).violations == []
