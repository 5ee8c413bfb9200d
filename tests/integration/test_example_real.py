"""The embedding example (``examples/embed.py``, docs/embedding.md) runs as written on a real Consul."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.consul
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed.py"


def test_embedding_example_runs_and_owns_seeded_items(dev_agent):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOLTHA_", "CONSUL_HTTP"))}
    env.update({"VOLTHA_CONSUL": dev_agent.http_addr, "VOLTHA_PREFIX": "example-test",
                "VOLTHA_INSTANCE_ID": "ex1",
                "VOLTHA_SEED_WORKLOAD": "3", "VOLTHA_SOAK": "0.5", "VOLTHA_REST_PORT": "0",
                "VOLTHA_LOG_FORMAT": "json", "EMBED_SECONDS": "1"})
    done = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count('"device-group-started"') == 3
    assert done.stderr.count('"device-group-stopped"') == 3
    assert '"settled": true' in done.stderr
