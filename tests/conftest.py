"""Shared fixtures: the mocked Consul, a real dev agent, and clients for both.

A missing Consul (or Prometheus) binary skips the tests that need it locally and FAILS them
when ``CI=true``.
The logic lives in :mod:`voltha_gevent.testing`; keep this file thin.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from voltha_gevent.client_settings import ClientSettings
from voltha_gevent.consul_api import NetworkError, make_client
from voltha_gevent.testing import summary
from voltha_gevent.testing.agents import CONSUL_ENV_VARS, ConsulBinaryNotFound, DevAgent, find_consul_binary
from voltha_gevent.testing.fake_consul import FakeConsul, ManualClock
from voltha_gevent.testing.processes import POOL_FULL, pool_full_warnings
from voltha_gevent.testing.prometheus import PrometheusNotFound, find_prometheus_binary, find_promtool


@pytest.fixture(scope="session", autouse=True)
def _no_consul_env() -> Iterator[None]:
    """python-consul2 lets CONSUL_HTTP_ADDR/TOKEN override what tests pass: remove them."""
    with pytest.MonkeyPatch.context() as mp:
        for name in CONSUL_ENV_VARS:
            mp.delenv(name, raising=False)
        yield


@pytest.fixture(autouse=True)
def _thawed_heap() -> Iterator[None]:
    """Nodes freeze the process's heap when they settle (voltha_gevent.heap); a test process
    builds and drops whole clusters, so each test starts with a collector that sees them all."""
    yield
    gc.unfreeze()


class _PoolFull(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if POOL_FULL in message:
            self.records.append(message)


@pytest.fixture(autouse=True)
def _no_pool_full_warnings() -> Iterator[None]:
    """More calls in flight than a client's pool holds is a bug here (issue 14): fail on it."""
    handler = _PoolFull()
    logger = logging.getLogger("urllib3.connectionpool")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not handler.records, handler.records[:3]


@pytest.fixture(scope="session", autouse=True)
def _no_pool_full_in_node_logs() -> Iterator[None]:
    """The same for every node process the tests started (their logs are scanned at the end)."""
    yield
    found = pool_full_warnings()
    assert not found, found[:5]


@pytest.fixture(scope="session")
def consul_bin() -> str:
    """Path of a Consul binary; a skip locally, a failure under CI=true, when there is none."""
    try:
        return find_consul_binary()
    except ConsulBinaryNotFound as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Consul binary: {exc}")
        pytest.skip(f"no Consul binary: {exc}")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    """Path of a Prometheus binary (promtool next to it); skipped locally, failed under CI=true."""
    try:
        return find_prometheus_binary()
    except PrometheusNotFound as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no Prometheus binary: {exc}")
        pytest.skip(f"no Prometheus binary: {exc}")


@pytest.fixture(scope="session")
def promtool_bin(prometheus_bin: str) -> str:
    try:
        return find_promtool(prometheus_bin)
    except PrometheusNotFound as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and no promtool: {exc}")
        pytest.skip(f"no promtool: {exc}")


@pytest.fixture(scope="session")
def dev_agent(consul_bin: str) -> Iterator[DevAgent]:
    """One real ``consul agent -dev`` for the whole session, on 127.0.0.1 and free ports."""
    with DevAgent(consul_bin) as agent:
        yield agent


@pytest.fixture
def kv_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to this test, e.g. ``test/test_cas_zero-fake-1a2b3c4d/``."""
    name = re.sub(r"[^A-Za-z0-9,_.-]+", "-", request.node.name).strip("-")[:60]
    return f"test/{name}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def real_client(dev_agent: DevAgent, kv_prefix: str) -> Iterator[Any]:
    """A python-consul2 client on the dev agent; the test's ``kv_prefix`` is wiped afterwards."""
    client = make_client(ClientSettings(host=dev_agent.host, port=dev_agent.port))
    yield client
    try:
        client.kv.delete(kv_prefix, recurse=True)
    except NetworkError:
        pass


@pytest.fixture
def fake() -> Iterator[FakeConsul]:
    """A mocked Consul on a :class:`ManualClock` (``fake.clock.advance(s)`` moves time)."""
    with FakeConsul(clock=ManualClock()) as cluster:
        yield cluster


@pytest.fixture
def fake_client(fake: FakeConsul) -> Any:
    return fake.client()


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.consul)])
def contract_client(request: pytest.FixtureRequest) -> Any:
    """The same test against the mocked Consul and the real dev agent."""
    if request.param == "fake":
        return request.getfixturevalue("fake_client")
    return request.getfixturevalue("real_client")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Counts (real-Consul tests, and why partition tests skipped), then the beds' tables."""
    passed = terminalreporter.stats.get("passed", [])
    real = sum(1 for report in passed if "consul" in report.keywords)
    skipped = terminalreporter.stats.get("skipped", [])
    skipped_real = sum(1 for report in skipped if "consul" in report.keywords)
    partition = [report for report in skipped if "partition" in report.keywords]
    reasons = sorted({_skip_reason(report) for report in partition})
    terminalreporter.write_line(
        f"unit tests passed: {len(passed) - real}; integration tests against real Consul passed: {real}"
        + (f"; real-Consul tests SKIPPED: {skipped_real}" if skipped_real else "")
        + (f"; partition tests SKIPPED: {len(partition)} ({'; '.join(reasons)})" if partition else "")
    )
    for block in summary.blocks():
        terminalreporter.write_sep("-", block.title)
        for line in block.lines:
            terminalreporter.write_line(line)


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")
