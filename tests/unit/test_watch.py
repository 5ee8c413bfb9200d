"""The blocking-query watch: only real changes are delivered, index resets, errors survived.

Layer: unit (one Watch on the mocked Consul, no node).
"""

from __future__ import annotations

import gevent

from voltha_gevent.consul_api import ConsulAPI
from voltha_gevent.testing.nodes import wait_until
from voltha_gevent.watch import Watch, WatchFactory, WatchKind


def test_watch_delivers_only_real_changes(live_fake, api):
    seen = []
    watch = Watch(api, "w/", seen.append, kind=WatchKind.KEYS, wait=2).start()
    try:
        assert watch.wait_delivered(2)
        api.put("w/a", "1")
        assert wait_until(lambda: seen[-1] == ["w/a"])
        api.put("other", "x")  # a wake-up elsewhere is not a change here
        api.put("w/a", "2")  # a value change does not change the key list
        gevent.sleep(0.3)
        assert seen == [[], ["w/a"]] or seen == [None, ["w/a"]]
    finally:
        watch.stop()


def test_watch_resets_its_index_when_it_goes_backwards(live_fake, api):
    seen = []
    for i in range(10):
        api.put("r/a", str(i))
    watch = Watch(api, "r/", seen.append, kind=WatchKind.KEYS, wait=1).start()
    try:
        assert watch.wait_delivered(2)
        assert watch.index >= 10
        live_fake.reset_index(1)
        api.put("r/b", "1")
        assert wait_until(lambda: seen and seen[-1] == ["r/a", "r/b"], timeout=5)
        assert watch.stats.resets >= 1
    finally:
        watch.stop()


def test_watch_survives_a_failing_callback_and_consul_errors(live_fake, api):
    calls = []

    def explode(data):
        calls.append(data)
        raise RuntimeError("bad record")

    watch = Watch(api, "x/", explode, kind=WatchKind.TREE, wait=1).start()
    try:
        assert watch.wait_delivered(2)
        with live_fake.outage():
            gevent.sleep(0.3)
        api.put("x/1", "v")
        assert wait_until(lambda: len(calls) >= 2)
        assert watch.stats.callback_failures >= 2 and watch.stats.errors >= 1
        assert watch.running
    finally:
        watch.stop()


def test_a_watch_sees_a_session_expiring_on_the_clock_exactly_once(fake):
    """Stepped on the fake's ManualClock (the ``fake`` fixture): the release happens at the
    advance that crosses 2 x TTL, and the watch reports it once, between the two holders."""
    api = ConsulAPI(fake.client())
    first = api.create_session(name="a", ttl=10, behavior="release", lock_delay=0)  # expires at 20
    assert api.acquire("L", "a", first)
    holders = []
    watch = Watch(api, "L", lambda entry: holders.append(entry.session if entry else "absent"),
                  kind=WatchKind.KEY, wait=2).start()
    try:
        assert watch.wait_delivered(2)
        fake.clock.advance(19.9)
        assert first in fake.sessions()
        fake.clock.advance(0.2)
        assert first not in fake.sessions()
        assert wait_until(lambda: len(holders) == 2)
        fake.clock.advance(100)  # nothing else is due: no wake-up, nothing delivered
        second = api.create_session(name="b", ttl=100, behavior="release", lock_delay=0)
        assert api.acquire("L", "b", second)
        assert wait_until(lambda: len(holders) == 3)
        assert holders == [first, None, second]
        assert watch.stats.changes == 3
    finally:
        watch.stop()


def test_the_watch_factory_builds_every_kind_on_its_client_and_wait(live_fake, api):
    watches = WatchFactory(api, wait=2)
    built = [watches.key("f/a", print, name="a"), watches.tree("f/", print, name="t"),
             watches.keys("f/", print, name="k", separator="/")]
    assert [(w.api, w.kind, w.wait, w.name) for w in built] == [
        (api, WatchKind.KEY, 2, "a"), (api, WatchKind.TREE, 2, "t"), (api, WatchKind.KEYS, 2, "k")]
    assert built[2].separator == "/" and not any(w.running for w in built)
    api.put("f/x", "1")
    names: list = []
    keys_watch = watches.keys("f/", names.append, name="k2").start()
    assert wait_until(lambda: names == [["f/x"]])
    keys_watch.stop()
