"""The dispatcher example of docs/dispatcher.md (``examples/dispatch.py``) on a real Consul: two processes
serve their own endpoints on ports picked at bind time, advertise those ports in their member
records, forward requests to each other, and take ``workload set`` values in place
(``on_updated``); ``--cas`` with a stale index writes nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.keys import Keys, held_owners
from voltha_gevent.membership import parse_members
from voltha_gevent.testing.agents import CONSUL_ENV_VARS
from voltha_gevent.testing.processes import wait_for

pytestmark = pytest.mark.consul
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dispatch.py"
ITEMS = [f"device_group_{i:04d}" for i in range(1, 5)]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    return {**env, **extra}


def http(port: int, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Example:
    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        with open(self.log, "w") as out:  # the child keeps its own copy of the descriptor
            argv, child_env = [sys.executable, str(EXAMPLE)], {**env, "VOLTHA_INSTANCE_ID": name}
            self.proc = subprocess.Popen(argv, env=child_env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def events(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def test_two_example_nodes_serve_forward_and_take_new_values_in_place(dev_agent, tmp_path):
    prefix = f"example-dispatch/{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    api = ConsulAPI(make_client(ClientSettings(host=dev_agent.host, port=dev_agent.port)))
    env = clean_env(VOLTHA_CONSUL=dev_agent.http_addr, VOLTHA_PREFIX=prefix, VOLTHA_REST_PORT="0",
                    VOLTHA_SOAK="0.5", VOLTHA_WORKER_SOAK="0.1", VOLTHA_LOG_FORMAT="json",
                    VOLTHA_CHECK_TTL="2", VOLTHA_LOCK_DELAY="2", VOLTHA_STOP_TIMEOUT="1.5")
    nodes = {"a": Example("a", {**env, "VOLTHA_SEED_WORKLOAD": "4"}, tmp_path)}
    nodes["b"] = Example("b", env, tmp_path)
    try:
        def spread() -> dict[str, str] | None:
            _, owners = api.list(keys.owners)
            held = held_owners(keys.owners, owners)
            return held if sorted(held) == ITEMS and set(held.values()) == {"a", "b"} else None

        assert wait_for(spread, 30), "\n".join(n.log.read_text()[-2000:] for n in nodes.values())
        # each record advertises the port its process bound (REST port 0 asked for a free one)
        records = parse_members(keys, api.list(keys.members)[1])
        for name, node in nodes.items():
            bound = node.events("example-serving")[0]["port"]
            assert records[name].rest_port == bound != 0
            status, view = http(bound, "/status")
            assert status == 200 and view["instance_id"] == name
            assert http(bound, "/health")[0] == 200
        owners = spread()
        assert owners is not None
        item = next(i for i, who in owners.items() if who == "b")
        status, answer = http(records["a"].rest_port, "/request", {"item": item, "payload": {"op": "get"}})
        assert status == 200, answer
        assert answer["result"]["served_by"] == "b" and answer["result"]["value"] is None  # seeded empty

        # live values: `workload set` reaches the owner through on_updated, no restart
        cli_env = clean_env(VOLTHA_CONSUL=dev_agent.http_addr, VOLTHA_PREFIX=prefix)

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "voltha_gevent", *argv], env=cli_env,
                                  capture_output=True, text=True, timeout=30)

        listed = cli("workload", "list", "--values", "--json")
        index = {row["item"]: row["modify_index"] for row in json.loads(listed.stdout)}[item]
        started = len(nodes["b"].events("device-group-started"))
        done = cli("workload", "set", item, "--value", '{"ip": "10.0.0.9"}', "--cas", str(index))
        assert done.returncode == 0, done.stderr
        assert wait_for(lambda: any(e["item"] == item and e["value"] == '{"ip": "10.0.0.9"}'
                                    for e in nodes["b"].events("device-group-updated")), 10)
        status, answer = http(records["a"].rest_port, "/request", {"item": item, "payload": {}})
        assert answer["result"]["value"] == '{"ip": "10.0.0.9"}'
        assert len(nodes["b"].events("device-group-started")) == started  # in place, not restarted
        stale = cli("workload", "set", item, "--value", "lost", "--cas", str(index))
        assert stale.returncode == 1 and "nothing written" in stale.stderr
        time.sleep(0.5)
        assert not any(e["value"] == "lost" for e in nodes["b"].events("device-group-updated"))
    finally:
        codes = {name: node.stop() for name, node in nodes.items()}
    assert codes == {"a": 0, "b": 0}, "\n".join(n.log.read_text()[-2000:] for n in nodes.values())
    assert all(len(n.events("device-group-stopped")) == len(n.events("device-group-started"))
               for n in nodes.values())
