"""The CLI through the real entry point (``python -m voltha_gevent`` subprocesses) on a real dev
agent: status of a 3-node cluster, workload edits picked up by the leader, bad input (exit 2),
Consul unreachable (exit 1), ``--help`` everywhere, ``run --print-config``, the metrics text,
and ``/health`` flipping to 503 when the session is destroyed and back to 200 on re-join."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.entries import MAX_VALUE_BYTES
from voltha_gevent.keys import Keys
from voltha_gevent.testing.agents import CONSUL_ENV_VARS, free_port
from voltha_gevent.testing.processes import NodeProcess, wait_for


def voltha(*argv: str, env: dict[str, str] | None = None,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a clean environment plus ``env``."""
    clean = {k: v for k, v in os.environ.items()
             if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    return subprocess.run([sys.executable, "-m", "voltha_gevent", *argv], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Admin:
    """The CLI pointed at one dev agent and one unique prefix (through VOLTHA_* variables)."""

    def __init__(self, agent) -> None:
        self.prefix = f"cli/{uuid.uuid4().hex[:8]}"
        self.keys = Keys(self.prefix)
        self.env = {"VOLTHA_CONSUL": agent.http_addr, "VOLTHA_PREFIX": self.prefix}
        self.api = ConsulAPI(make_client(ClientSettings(host=agent.host, port=agent.port)))

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return voltha(*argv, env=self.env)

    def json(self, *argv: str) -> dict:
        result = self(*argv, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def cleanup(self) -> None:
        self.api.delete(self.prefix + "/", recurse=True)


@pytest.fixture
def admin(dev_agent):
    a = Admin(dev_agent)
    try:
        yield a
    finally:
        a.cleanup()


def start_nodes(admin: Admin, agent, tmp_path: Path, names: list[str]) -> list[NodeProcess]:
    return [NodeProcess(n, agent.http_addr, tmp_path, prefix=admin.prefix).start() for n in names]


def explain(nodes: list[NodeProcess]) -> str:
    return "\n".join(f"--- {n.instance_id}\n{n.log_tail(15)}" for n in nodes)


def all_owned(nodes: list[NodeProcess], items: set[str]) -> bool:
    statuses = [n.status() for n in nodes]
    if not all(s and s["healthy"] for s in statuses):
        return False
    owned = [i for s in statuses for i in s["owned"]]
    return len(owned) == len(items) and set(owned) == items


# --------------------------------------------------------------------------- with nodes


@pytest.mark.consul
def test_status_and_workload_add_on_a_three_node_cluster(admin, dev_agent, tmp_path):
    items = {f"olt-{i:02d}" for i in range(6)}
    added = admin("workload", "add", *sorted(items), "--value", "cfg")
    assert added.returncode == 0, added.stderr
    assert added.stdout.split().count("added") == 6
    nodes = start_nodes(admin, dev_agent, tmp_path, ["cli-a", "cli-b", "cli-c"])
    try:
        assert wait_for(lambda: all_owned(nodes, items), 30), explain(nodes)
        assert wait_for(lambda: not admin.json("status")["in_handover"], 10)
        report = admin.json("status")
        leaders = [n.instance_id for n in nodes if (n.status() or {}).get("is_leader")]
        assert [report["leader"]] == leaders and report["epoch"] >= 1
        assert report["workload_items"] == 6 and report["unassigned"] == []
        rows = {m["instance_id"]: m for m in report["members"]}
        assert set(rows) == {"cli-a", "cli-b", "cli-c"}
        for node in nodes:
            row = rows[node.instance_id]
            assert row["rest_port"] == node.rest_port and row["internal_host"] == "127.0.0.1"
            assert row["assigned"] == row["owned"] == len(node.status()["owned"]) == 2
            assert row["leader"] == (node.instance_id == report["leader"])

        table = admin("status")
        assert table.returncode == 0, table.stderr
        assert f"leader      {report['leader']}  epoch {report['epoch']}" in table.stdout
        assert "6 items, 0 unassigned, 0 in handover" in table.stdout
        for node in nodes:
            mark = " *" if node.instance_id == report["leader"] else ""
            assert f"{node.instance_id}{mark}" in table.stdout and str(node.rest_port) in table.stdout

        # An administrator's edit is picked up by the leader and the new item becomes owned.
        again = admin("workload", "add", "olt-00", "olt-new")
        assert again.returncode == 0
        assert again.stdout.splitlines() == ["added   olt-new", "exists  olt-00 (left unchanged)"]
        assert admin.api.get(admin.keys.item("olt-00"))[1].value == b"cfg"
        assert wait_for(lambda: all_owned(nodes, items | {"olt-new"}), 20), explain(nodes)
        [row] = admin.json("assignments", "--item", "olt-new")
        assert row["assigned"] == row["owner"] == row["desired"] and row["state"] == "ok"
        removed = admin("workload", "remove", "olt-new")
        assert removed.returncode == 0 and removed.stdout.strip() == "removed olt-new"
        assert wait_for(lambda: all_owned(nodes, items), 20), explain(nodes)

        # The endpoint's metrics parse as Prometheus text and agree with the status.
        code, text = nodes[0].get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert code == 200
        assert families["voltha_owned_items"].samples[0].value == len(nodes[0].status()["owned"])
        assert families["voltha_members"].samples[0].value == 3
    finally:
        for node in nodes:
            node.stop()


@pytest.mark.consul
def test_health_flips_to_503_when_the_session_is_destroyed_and_back_after_rejoin(admin, dev_agent, tmp_path):
    [node] = start_nodes(admin, dev_agent, tmp_path, ["cli-h"])
    try:
        assert wait_for(lambda: (node.status() or {}).get("healthy"), 20), explain([node])
        assert node.get("/health")[0] == 200
        _, entry = admin.api.get(admin.keys.member("cli-h"))
        assert entry is not None and entry.session
        admin.api.destroy_session(entry.session)

        seen = []

        def health_is(code: int) -> bool:
            try:
                status, body = node.get("/health")
            except OSError:
                return False
            seen.append(status)
            return status == code

        assert wait_for(lambda: health_is(503), 15, step=0.05), (seen, explain([node]))
        assert wait_for(lambda: health_is(200), 25), (seen, explain([node]))
        _, again = admin.api.get(admin.keys.member("cli-h"))
        assert again is not None and again.session not in (None, entry.session)
        _, text = node.get("/metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["voltha_session_losses"].samples[0].value >= 1
    finally:
        node.stop()


# --------------------------------------------------------------------------- errors


@pytest.mark.consul
def test_bad_input_is_rejected_with_exit_2_and_nothing_written(admin, tmp_path):
    result = admin("workload", "add", "ok-item", "bad/name")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("voltha-gevent: invalid item name(s): 'bad/name'")
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_VALUE_BYTES + 1))
    result = admin("workload", "add", "big-item", "--value-file", str(big))
    assert result.returncode == 2 and "larger than Consul's limit" in result.stderr
    result = admin("assignments", "--item", "no/such")
    assert result.returncode == 2 and "invalid item name 'no/such'" in result.stderr
    result = admin("workload", "remove", "..")
    assert result.returncode == 2 and "invalid item name(s): '..'" in result.stderr
    assert admin.api.keys(admin.keys.workload)[1] == []


def test_consul_unreachable_exits_1_with_a_clear_message():
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    for argv in (["status"], ["workload", "add", "x"], ["assignments"]):
        result = voltha(*argv, env={"VOLTHA_CONSUL": address})
        assert result.returncode == 1, (argv, result.stderr)
        assert result.stderr == (
            f"voltha-gevent: cannot reach Consul at {address} (connection refused); "
            "check --consul, VOLTHA_CONSUL or CONSUL_HTTP_ADDR and that the agent is up\n")
        assert result.stdout == ""
    assert time.monotonic() - started < 20  # no endless retrying


HELP = [["--help"], ["run", "--help"], ["status", "--help"], ["workload", "--help"],
        ["workload", "list", "--help"], ["workload", "add", "--help"], ["workload", "remove", "--help"],
        ["assignments", "--help"], ["drain", "--help"], ["undrain", "--help"], ["workload", "pin", "--help"],
        ["workload", "unpin", "--help"]]


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a) for a in HELP])
def test_help_of_every_subcommand_exits_0(argv):
    result = voltha(*argv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: voltha-gevent") and result.stderr == ""


def test_print_config_masks_the_token_and_shows_flag_over_env_over_file(tmp_path):
    config_file = tmp_path / "voltha.toml"
    config_file.write_text('[voltha]\nsoak = 2.0\nprefix = "from/file"\nrest_port = 9001\n')
    env = {"VOLTHA_CONSUL_TOKEN": "very-secret-token", "VOLTHA_SOAK": "3", "VOLTHA_PREFIX": "from/env"}
    result = voltha("--config", str(config_file), "run", "--print-config", "--soak", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert "very-secret-token" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["consul_token"] == "***"
    assert (shown["soak"], shown["prefix"], shown["rest_port"]) == (4.0, "from/env", 9001)
    assert shown["session_ttl"] == 10  # default


@pytest.mark.consul
def test_run_with_rest_port_0_advertises_the_port_it_bound(admin, dev_agent, tmp_path):
    """``--rest-port 0``: the member record carries the port the endpoint really bound (the
    node's ``serve_http``, not a record patched by the CLI), and ``/health`` answers there."""
    node = NodeProcess("cli-port0", dev_agent.http_addr, tmp_path, prefix=admin.prefix)
    node.rest_port = 0  # VOLTHA_REST_PORT=0: pick a free one
    node.start()
    try:
        def advertised() -> int:
            rows = {m["instance_id"]: m for m in admin.json("status")["members"]}
            return int(rows.get("cli-port0", {}).get("rest_port", 0))

        assert wait_for(lambda: advertised() != 0, 30), node.log_tail(20)
        node.rest_port = advertised()
        status, body = node.get("/health")
        assert status == 200 and body["healthy"], body
    finally:
        node.stop()
