"""A real 3-server Consul cluster on 127.0.0.1-3 survives the loss of its Raft leader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import make_client
from voltha_gevent.testing.agents import Cluster

pytestmark = [pytest.mark.consul, pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster(consul_bin: str) -> Iterator[Cluster]:
    with Cluster(3, consul_bin) as running:
        yield running


def client_for(cluster: Cluster, i: int) -> Any:
    host, port = cluster.host_port(i)
    return make_client(ClientSettings(host=host, port=port), timeout=5.0)


def test_key_survives_leader_loss_and_server_rejoins(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader(30)
    writer = client_for(cluster, leader)
    assert writer.kv.put("cluster/key", "survives") is True

    cluster.kill(leader)
    new_leader = cluster.wait_for_leader(30)
    assert new_leader != leader
    reader = client_for(cluster, new_leader)
    _, entry = reader.kv.get("cluster/key", consistency="consistent")
    assert entry["Value"] == b"survives"

    cluster.restart(leader)
    assert cluster.leader_index() is not None
    _, entry = client_for(cluster, leader).kv.get("cluster/key", consistency="consistent")
    assert entry["Value"] == b"survives"
