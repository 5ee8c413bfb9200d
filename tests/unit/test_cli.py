"""The command line without a real Consul: usage errors through the entry point (subprocess,
exit code 2), and the admin commands in process against the mocked Consul."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from voltha_gevent import admin
from voltha_gevent.assignment_docs import bucket_of, doc_key, encode, publish_ops
from voltha_gevent.config import Config
from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.entries import MAX_VALUE_BYTES
from voltha_gevent.keys import Keys
from voltha_gevent.membership import MemberRecord
from voltha_gevent.testing.agents import CONSUL_ENV_VARS
from voltha_gevent.testing.fake_consul import FakeConsul, ManualClock

PREFIX = "svc/unit"
KEYS = Keys(PREFIX)


def voltha(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in __import__("os").environ.items()
             if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    return subprocess.run([sys.executable, "-m", "voltha_gevent", *argv], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=30)


# --------------------------------------------------------------------------- entry point


def test_no_arguments_prints_usage_and_exits_2():
    result = voltha()
    assert result.returncode == 2
    assert "usage: voltha-gevent" in result.stderr
    assert "run" in result.stderr and "assignments" in result.stderr


BAD_ARGV = [
    ["frobnicate"],
    ["status", "--no-such-flag"],
    ["workload"],
    ["workload", "add"],
    ["workload", "add", "x", "--value", "v", "--value-file", "f"],
    ["assignments", "--item"],
    ["assignments", "--item", "a", "--item", "b"],
    ["run", "--embedded-consul", "sometimes"],
]

#: Calls cli.main() once per argv in one interpreter (one start-up instead of one per case).
_MAIN_MANY = """
import contextlib, io, json, sys
from voltha_gevent.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue()])
sys.stdout.write(json.dumps(results))
"""


def test_bad_arguments_exit_2():
    assert voltha("frobnicate").returncode == 2  # once through the real process exit
    result = subprocess.run([sys.executable, "-c", _MAIN_MANY, json.dumps(BAD_ARGV)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for argv, (code, err) in zip(BAD_ARGV, json.loads(result.stdout), strict=True):
        assert code == 2, (argv, err)
        assert "usage: voltha-gevent" in err and "error:" in err, (argv, err)


def test_bad_setting_exits_2_naming_it():
    result = voltha("status", "--consul", "no-port-here")
    assert result.returncode == 2
    assert result.stderr.startswith("voltha-gevent: invalid setting consul: 'no-port-here'")
    result = voltha("run", "--print-config", env={"VOLTHA_SESSION_TTL": "5"})
    assert result.returncode == 2 and "invalid setting session_ttl" in result.stderr


def test_a_config_that_breaks_the_fencing_budget_exits_2_with_one_line():
    result = voltha("run", "--print-config", "--stop-timeout", "30")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "stop_timeout/lock_delay/check_ttl/session_ttl" in result.stderr and "must be <=" in result.stderr


def test_config_is_accepted_before_and_after_the_subcommand(tmp_path):
    path = tmp_path / "v.toml"
    path.write_text('prefix = "from/file"\n')
    for argv in (["--config", str(path), "run", "--print-config"],
                 ["run", "--print-config", "--config", str(path)]):
        result = voltha(*argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert json.loads(result.stdout)["prefix"] == "from/file"
    bad = tmp_path / "bad.toml"
    bad.write_text("session_ttl = 5\n")  # read only if the flag reached the loader
    for argv in (["status", "--config", str(bad)], ["workload", "list", "--config", str(bad)]):
        result = voltha(*argv)
        assert result.returncode == 2 and "invalid setting session_ttl" in result.stderr, argv


def test_a_rest_port_in_use_exits_1_with_one_line():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = voltha("run", "--rest-port", str(port), "--embedded-consul", "never",
                        "--consul", "127.0.0.1:9")
    assert result.returncode == 1, result.stderr
    expected = (f"voltha-gevent: cannot serve HTTP on 127.0.0.1:{port}: Address already in use "
                "(set --rest-port/VOLTHA_REST_PORT, 0 picks a free one)\n")
    assert result.stderr.endswith(expected), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def not_consul(tmp_path) -> Iterator[str]:
    """A plain HTTP server (python -m http.server) that is not Consul; its access log is
    tmp_path/access.log."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = open(tmp_path / "access.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path)], stdout=log_file, stderr=log_file)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        log_file.close()


def test_an_http_server_that_is_not_consul_is_detected_before_anything_is_written(not_consul, tmp_path):
    for argv in (["workload", "add", "x1"], ["workload", "remove", "x1"], ["status"],
                 ["run", "--rest-port", "0", "--embedded-consul", "never"]):
        result = voltha(*argv, "--consul", not_consul)
        assert result.returncode == 1, (argv, result.stderr)
        assert f"voltha-gevent: not a Consul agent at {not_consul}: " in result.stderr, (argv, result.stderr)
        assert "added" not in result.stdout and "Traceback" not in result.stderr
    requests_seen = (tmp_path / "access.log").read_text()
    assert '"GET /v1/status/leader' in requests_seen
    assert "PUT" not in requests_seen and "DELETE" not in requests_seen and "/v1/kv" not in requests_seen


# --------------------------------------------------------------------------- admin, mocked Consul


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConsul]:
    with FakeConsul(clock=ManualClock()) as cluster:
        monkeypatch.setattr(admin, "make_client", lambda settings, timeout: cluster.client())
        yield cluster


@pytest.fixture
def api(fake: FakeConsul) -> ConsulAPI:
    return ConsulAPI(fake.client())


CONFIG = Config.load(environ={"VOLTHA_PREFIX": PREFIX, "VOLTHA_CONSUL": "127.0.0.1:8500"})


def run_admin(capsys: pytest.CaptureFixture[str], command: str, **fields: Any) -> tuple[int, str, str]:
    defaults = {"json": False, "item": None, "action": None, "items": [], "value": "", "value_file": None}
    args = argparse.Namespace(command=command, **{**defaults, **fields})
    code = admin.dispatch(CONFIG, args)
    out, err = capsys.readouterr()
    return code, out, err


def member(api: ConsulAPI, name: str, port: int, capacity: float = 1.0) -> str:
    session = api.create_session(name=name, ttl=10, behavior="release", lock_delay=0, checks=[])
    record = MemberRecord(name, f"10.0.0.{port % 10}", f"ext-{name}", port, capacity)
    assert api.acquire(KEYS.member(name), record.to_json(), session)
    return session


@pytest.fixture
def cluster(api: ConsulAPI) -> dict[str, str]:
    """a (leader), b; items i1-i5: i1,i2 ok on a; i3 ok on b; i4 moving b->a (b owns);
    i5 unassigned; plus a dead member's assignment and an owner lock of a removed item."""
    sessions = {name: member(api, name, 8000 + n) for n, name in enumerate("ab", start=1)}
    assert api.acquire(KEYS.leader, "a", sessions["a"])
    for item in ("i1", "i2", "i3", "i4", "i5"):
        api.put(KEYS.item(item), b"v")
    published = {"i1": "a", "i2": "a", "i3": "b", "i4": "a", "i5": "gone", "old": "b"}
    api.txn(publish_ops(KEYS, published))
    for m, item in [("a", "i1"), ("a", "i2"), ("b", "i3"), ("b", "i4"), ("b", "old")]:
        assert api.acquire(KEYS.owner(item), m, sessions[m])
    api.put(KEYS.owner("released"), "a")  # an owner key nobody holds: not an owner
    return sessions


def test_status_json_counts_members_unassigned_and_handover(capsys, cluster):
    code, out, err = run_admin(capsys, "status", json=True)
    assert code == 0, err
    report = json.loads(out)
    assert (report["leader"], report["epoch"], report["prefix"]) == ("a", 1, PREFIX)
    assert report["workload_items"] == 5
    assert report["unassigned"] == ["i5"]
    assert report["in_handover"] == [{"item": "i4", "assigned": "a", "owner": "b"}]
    rows = {m["instance_id"]: m for m in report["members"]}
    assert set(rows) == {"a", "b"}
    assert (rows["a"]["assigned"], rows["a"]["owned"], rows["a"]["leader"]) == (3, 2, True)
    assert (rows["b"]["assigned"], rows["b"]["owned"], rows["b"]["leader"]) == (2, 3, False)
    assert (rows["b"]["internal_host"], rows["b"]["external_host"], rows["b"]["rest_port"]) == \
        ("10.0.0.2", "ext-b", 8002)


def test_status_table(capsys, cluster):
    code, out, _ = run_admin(capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split() == ["leader", "a", "epoch", "1"]
    assert "5 items, 1 unassigned, 1 in handover" in out
    header = next(line for line in lines if line.startswith("MEMBER"))
    assert header.split() == ["MEMBER", "INTERNAL", "EXTERNAL", "REST", "CAPACITY", "ASSIGNED", "OWNED",
                              "STATE"]
    row = ["a", "*", "10.0.0.1", "ext-a", "8001", "1", "3", "2", "active"]
    assert any(line.split() == row for line in lines)
    assert "in handover: i4 (b -> a)" in out and "unassigned: i5" in out


def test_status_of_an_empty_prefix(capsys, fake):
    code, out, _ = run_admin(capsys, "status")
    assert code == 0
    assert "leader      (none)  epoch 0" in out and "(no live members)" in out


def test_assignments_per_item_with_states(capsys, cluster):
    code, out, err = run_admin(capsys, "assignments", json=True)
    assert code == 0, err
    rows = {r["item"]: r for r in json.loads(out)}
    assert {i: r["state"] for i, r in rows.items()} == {
        "i1": "ok", "i2": "ok", "i3": "ok", "i4": "handover", "i5": "unassigned", "old": "stale"}
    assert (rows["i4"]["assigned"], rows["i4"]["owner"]) == ("a", "b")
    assert rows["i5"]["desired"] in ("a", "b")  # the pure function places it on a live member
    assert [r["assigned"] for r in json.loads(out)] == ["a", "a", "a", "b", "b", None]  # per member


def test_assignments_for_one_item_and_an_unknown_one(capsys, cluster):
    code, out, _ = run_admin(capsys, "assignments", item="i4")
    assert code == 0
    assert out.splitlines()[1].split() == ["i4", "a", out.splitlines()[1].split()[2], "b", "handover"]
    code, out, err = run_admin(capsys, "assignments", item="nope")
    assert code == 1 and "item 'nope' is not in the workload" in err
    code, _, err = run_admin(capsys, "assignments", item="bad/name")
    assert code == 2 and "invalid item name 'bad/name'" in err


def test_status_and_assignments_skip_what_is_not_a_readable_document(capsys, cluster, api):
    api.put(doc_key(KEYS, "b", bucket_of("i3")), b"not json")  # b's document of i3
    api.put(f"{KEYS.assignments}b/not-a-bucket", encode(1, ["i1"]))  # not a document key
    api.put(f"{KEYS.assignments}c", encode(1, ["i1"]))
    code, out, err = run_admin(capsys, "assignments", json=True)
    assert code == 0, err
    rows = {r["item"]: r for r in json.loads(out)}
    assert (rows["i3"]["assigned"], rows["i3"]["state"]) == (None, "unassigned")
    assert (rows["i1"]["assigned"], rows["old"]["assigned"]) == ("a", "b")  # the rest is read
    code, out, err = run_admin(capsys, "status", json=True)
    assert code == 0, err
    assert json.loads(out)["unassigned"] == ["i3", "i5"]


def test_workload_add_never_overwrites_and_says_which_existed(capsys, api, fake):
    api.put(KEYS.item("old"), b"keep me")
    code, out, _ = run_admin(capsys, "workload", action="add", items=["new1", "old", "new1"], value="v1")
    assert code == 0
    assert out.splitlines() == ["added   new1", "exists  old (left unchanged)"]
    assert api.get(KEYS.item("old"))[1].value == b"keep me"
    assert api.get(KEYS.item("new1"))[1].value == b"v1"
    code, out, _ = run_admin(capsys, "workload", action="list")
    assert (code, out.split()) == (0, ["new1", "old"])


def test_workload_add_rejects_bad_names_before_writing_anything(capsys, api):
    code, out, err = run_admin(capsys, "workload", action="add", items=["good", "bad/name", "..", "a b"])
    assert code == 2 and out == ""
    assert "invalid item name(s): 'bad/name', '..', 'a b'" in err
    assert api.keys(KEYS.workload)[1] == []


def test_workload_add_value_size_limit(capsys, api, tmp_path):
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * MAX_VALUE_BYTES)
    code, _, err = run_admin(capsys, "workload", action="add", items=["big"], value_file=str(exact))
    assert code == 0, err
    assert len(api.get(KEYS.item("big"))[1].value) == MAX_VALUE_BYTES
    over = tmp_path / "over"
    over.write_bytes(b"x" * (MAX_VALUE_BYTES + 1))
    code, _, err = run_admin(capsys, "workload", action="add", items=["bigger"], value_file=str(over))
    assert code == 2 and "larger than Consul's limit of 524288 bytes" in err
    code, _, err = run_admin(capsys, "workload", action="add", items=["x"], value_file=str(tmp_path / "no"))
    assert code == 2 and "cannot read --value-file" in err
    assert api.get(KEYS.item("bigger"))[1] is None


def test_workload_remove(capsys, api):
    api.put(KEYS.item("a"), b"")
    api.put(KEYS.item("c"), b"")
    code, out, err = run_admin(capsys, "workload", action="remove", items=["c"])
    assert (code, out, err) == (0, "removed c\n", "")


def test_workload_remove_of_a_missing_item_exits_1_after_removing_the_others(capsys, api):
    api.put(KEYS.item("a"), b"")
    code, out, err = run_admin(capsys, "workload", action="remove", items=["a", "b"])
    assert code == 1
    assert out.splitlines() == ["removed a", "absent  b (nothing to remove)"]
    assert err == "voltha-gevent: not in the workload: b\n"
    assert api.keys(KEYS.workload)[1] == []


def test_consul_down_exits_1_with_a_clear_message(capsys, fake):
    fake.set_down(True)
    code, out, err = run_admin(capsys, "status")
    assert code == 1 and out == ""
    assert err.startswith("voltha-gevent: cannot reach Consul at 127.0.0.1:8500")
    assert err.count("\n") == 1
