"""What a watch's listings cost, counted from the answers themselves (``voltha_watch_bytes``).

The leader's watches must not download every owner lock on every change (issue 14); the byte
counter is how a benchmark sees it. On a real agent, a KEYS listing of 200 keys is roughly
its JSON size, a TREE listing of the same keys with their values is bigger, and each change
adds one more whole listing.
"""

from __future__ import annotations

import json

import gevent
import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import ConsulAPI, make_client
from voltha_gevent.watch import Watch, WatchKind

pytestmark = pytest.mark.consul


def test_watches_count_the_bytes_of_every_answer(dev_agent, kv_prefix: str) -> None:
    api = ConsulAPI(make_client(ClientSettings(host=dev_agent.host, port=dev_agent.port), 5.0))
    names = [f"{kv_prefix}w/item{i:04d}" for i in range(200)]
    for name in names:
        api.put(name, "x" * 40)
    folder = f"{kv_prefix}w/"
    keys_watch = Watch(api, folder, lambda data: None, kind=WatchKind.KEYS, wait=2, name="k").start()
    tree_watch = Watch(api, folder, lambda data: None, kind=WatchKind.TREE, wait=2, name="t").start()
    try:
        assert keys_watch.wait_delivered(5) and tree_watch.wait_delivered(5)
        listing = len(json.dumps(names))
        assert 0.9 * listing <= keys_watch.stats.bytes_read <= 1.2 * listing
        assert tree_watch.stats.bytes_read > 2 * keys_watch.stats.bytes_read  # values and metadata
        before = keys_watch.stats.bytes_read
        api.put(f"{kv_prefix}w/item9999", "y")
        for _ in range(50):
            if keys_watch.stats.changes >= 2:
                break
            gevent.sleep(0.1)
        assert keys_watch.stats.changes >= 2
        assert keys_watch.stats.bytes_read - before >= listing  # a change costs a whole listing
    finally:
        keys_watch.stop()
        tree_watch.stop()
