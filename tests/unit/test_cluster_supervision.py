"""Supervision: crashes are logged with their traceback, shown on health, restarted, or fatal.

Layer: integration (timed FakeCluster runs: whole nodes on one FakeConsul, in real time).
"""

from __future__ import annotations

from typing import Any

import gevent
import structlog
import structlog.testing

from voltha_gevent import supervision
from voltha_gevent.testing.fake_consul import FakeConsul
from voltha_gevent.testing.nodes import FakeCluster


class Boom(RuntimeError):
    pass


def crash_members_view(node: Any) -> None:
    """Make the coordinator's members watch callback raise from inside its loop."""
    watch = node.coordinator._members_watch

    def explode(*args: Any) -> None:
        raise Boom("injected")

    watch._run = explode  # the next (re)start runs this and dies
    greenlet = watch._greenlet
    watch._greenlet = None
    greenlet.kill()
    starter = gevent.spawn(watch.start)
    supervision.bind_instance(starter, node.instance_id)  # as if the node itself restarted it
    starter.join()


def test_a_crashed_component_is_logged_with_its_traceback_shown_on_health_and_restarted() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.healthy, 5)
        watch = node.coordinator._members_watch
        original = type(watch)._run.__get__(watch)
        with structlog.testing.capture_logs() as logs:
            crash_members_view(node)
            assert cluster.wait_until(lambda: not node.healthy, 2)
            assert "crashed: members-view" in (node.unhealthy_reason() or "")
            watch._run = original  # the fault is gone: the restart must bring it back
            assert cluster.wait_until(lambda: node.healthy, 5), node.unhealthy_reason()
        crashed = [e for e in logs if e["event"] == "greenlet-crashed"]
        assert crashed and crashed[0]["component"] == "members-view"
        assert crashed[0]["exc_info"][0] is Boom and crashed[0]["exc_info"][2] is not None
        assert crashed[0]["instance_id"] == "a"


def test_a_component_that_keeps_crashing_fails_the_node() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.healthy, 5)
        crash_members_view(node)  # _run stays broken: every restart crashes again
        assert node.failed.wait(10), supervision.health_of("a")
        assert not node.healthy
        assert (node.unhealthy_reason() or "").startswith("failed: members-view crashed")


def test_every_log_event_of_a_node_carries_its_instance_id() -> None:
    events: list[dict[str, Any]] = []

    def keep(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        events.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(processors=[supervision.add_instance_id, keep])
    try:
        with FakeCluster(FakeConsul()) as cluster:
            cluster.add_items("x", "y", "z")
            cluster.add_node("a")
            cluster.add_node("b")
            assert cluster.wait_until(lambda: cluster.converged({"x", "y", "z"}), 10)
            gevent.sleep(0.1)
    finally:
        structlog.reset_defaults()
    node_events = [e for e in events if e["event"] in ("item-started", "lock-acquired", "session-created")]
    assert node_events
    assert all(e.get("instance_id") in ("a", "b") for e in node_events), node_events
    assert {e["instance_id"] for e in node_events} == {"a", "b"}


def test_a_crashed_heartbeat_gives_up_the_session_and_health_returns_with_the_next_one() -> None:
    with FakeCluster(FakeConsul()) as cluster:
        node = cluster.add_node("a")
        assert cluster.wait_until(lambda: node.healthy, 5)
        keeper = node.coordinator.session
        first = keeper.session_id
        original = keeper._send
        crashed: list[str] = []

        def send_once(api: object, signal: str, session_id: str) -> None:
            if session_id not in ("", first) and not crashed:
                crashed.append(signal)
                raise Boom("injected")
            original(api, signal, session_id)

        keeper._send = send_once  # the next session's first heartbeat crashes
        keeper.mark_lost(first, "test")
        assert cluster.wait_until(lambda: crashed and keeper.session_id not in (None, first)
                                  and keeper.losses >= 2, 10)
        assert cluster.wait_until(lambda: node.healthy, 10), node.unhealthy_reason()
