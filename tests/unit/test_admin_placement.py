"""``drain``/``undrain`` and ``workload pin``/``unpin`` in process against the mocked Consul,
and what ``status`` and ``assignments`` show of them."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import pytest

from voltha_gevent import admin
from voltha_gevent.assignment_docs import AssignmentBook
from voltha_gevent.config import Config
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.keys import Keys
from voltha_gevent.membership import MemberRecord
from voltha_gevent.testing.fake_consul import FakeConsul, ManualClock

PREFIX = "svc/placement"
KEYS = Keys(PREFIX)
CONFIG = Config.load(environ={"VOLTHA_PREFIX": PREFIX, "VOLTHA_CONSUL": "127.0.0.1:8500"})


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsulAPI]:
    """Members a and b (b draining itself), items i1-i4."""
    with FakeConsul(clock=ManualClock()) as fake:
        monkeypatch.setattr(admin, "make_client", lambda settings, timeout: fake.client())
        api = ConsulAPI(fake.client())
        for n, name in enumerate("ab", start=1):
            session = api.create_session(name=name, ttl=10, behavior="release", lock_delay=0, checks=[])
            record = MemberRecord(name, "127.0.0.1", "127.0.0.1", 8000 + n, draining=name == "b")
            assert api.acquire(KEYS.member(name), record.to_json(), session)
        for item in ("i1", "i2", "i3", "i4"):
            api.put(KEYS.item(item), b"")
        yield api


def run(capsys: pytest.CaptureFixture[str], command: str, **fields: Any) -> tuple[int, str, str]:
    defaults = {"json": False, "item": None, "action": None, "items": [], "member": None, "wait": 0.0}
    code = admin.dispatch(CONFIG, argparse.Namespace(command=command, **{**defaults, **fields}))
    out, err = capsys.readouterr()
    return code, out, err


def test_drain_and_undrain_write_and_remove_the_drain_key(capsys, api):
    assert run(capsys, "drain", member="a") == (0, "draining a\n", "")
    assert api.get(KEYS.drain("a"))[1] is not None
    code, out, _ = run(capsys, "drain", member="later")
    assert code == 0 and "not a live member" in out
    assert run(capsys, "undrain", member="a") == (0, "undrained a\n", "")
    assert api.get(KEYS.drain("a"))[1] is None
    code, _, err = run(capsys, "undrain", member="b")  # b drains itself: not the operator's
    assert code == 1 and "b is not drained by an operator (it drains itself" in err
    code, _, err = run(capsys, "drain", member="bad/name")
    assert code == 2 and "invalid member name" in err


def test_drain_wait_gives_up_with_exit_1_while_the_member_holds_items(capsys, api, monkeypatch):
    monkeypatch.setattr("voltha_gevent.admin_placement.DRAIN_POLL", 0.01)
    book = AssignmentBook(KEYS, epoch=1)
    api.txn(book.changes([], [("a", "i1")]))
    code, out, err = run(capsys, "drain", member="a", wait=0.05)
    assert code == 1 and "a still holds 1 item(s) after 0.05 s" in err
    api.txn(book.changes([("a", "i1")], []))  # its last item: the document is deleted
    assert api.keys(KEYS.assignments_of("a"))[1] == []
    code, out, _ = run(capsys, "drain", member="a", wait=1.0)
    assert code == 0 and out.splitlines() == ["draining a", "drained  a"]


def test_status_shows_draining_members_and_pins(capsys, api):
    run(capsys, "drain", member="a")
    run(capsys, "workload", action="pin", item="i1", member="b")
    code, out, _ = run(capsys, "status", json=True)
    report = json.loads(out)
    assert {m["instance_id"]: m["draining"] for m in report["members"]} == {"a": True, "b": True}
    assert report["pins"] == {"i1": "b"}
    code, out, _ = run(capsys, "status")
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line[:2] in ("a ", "b ")}
    assert rows == {"a": "draining", "b": "draining"} and "pinned: i1 -> b" in out
    code, out, _ = run(capsys, "assignments", json=True, item=None)
    assert all(row["desired"] is None for row in json.loads(out))  # everyone drains: nothing to run


def test_pin_needs_a_workload_item_and_says_when_it_is_dormant(capsys, api):
    code, out, _ = run(capsys, "workload", action="pin", item="i2", member="a")
    assert (code, out) == (0, "pinned  i2 -> a\n")
    assert api.get(KEYS.pin("i2"))[1].value == b"a"
    code, out, _ = run(capsys, "workload", action="pin", item="i2", member="b")  # replaces; b drains
    assert code == 0 and "dormant while b is not a live, undrained member" in out
    assert api.get(KEYS.pin("i2"))[1].value == b"b"
    code, _, err = run(capsys, "workload", action="pin", item="nope", member="a")
    assert code == 1 and "not in the workload: nope" in err and api.get(KEYS.pin("nope"))[1] is None
    code, out, err = run(capsys, "workload", action="unpin", items=["i2", "i3"])
    assert code == 1 and out.splitlines() == ["unpinned i2", "absent  i3 (not pinned)"]
    assert "not pinned: i3" in err and api.get(KEYS.pin("i2"))[1] is None


def test_assignments_desired_follows_an_active_pin(capsys, api):
    run(capsys, "workload", action="pin", item="i3", member="a")
    code, out, _ = run(capsys, "assignments", json=True, item="i3")
    assert json.loads(out)[0]["desired"] == "a"
