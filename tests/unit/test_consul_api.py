"""consul_api on its own: error translation, a rolled-back transaction, a dead session.

Layer: unit (direct calls on the mocked Consul, no node).
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from voltha_gevent.consul_api import ConsulAPI, ConsulException, translate
from voltha_gevent.errors import (
    ConsulRejected,
    ConsulUnavailable,
    PermissionDenied,
    SessionInvalid,
    TransactionFailed,
)
from voltha_gevent.txn import TxnOp


def test_translate_maps_client_errors_to_project_errors():
    from voltha_gevent.consul_api import ACLPermissionDenied, ClientError, NotFound

    assert isinstance(translate(requests.exceptions.ConnectionError("refused")), ConsulUnavailable)
    assert isinstance(translate(ConsulException("500 No cluster leader")), ConsulUnavailable)
    assert isinstance(translate(ConsulException('500 invalid session "x"')), SessionInvalid)
    assert isinstance(translate(ACLPermissionDenied("denied")), PermissionDenied)
    assert isinstance(translate(NotFound("gone")), ConsulRejected)
    assert isinstance(translate(ValueError("not json")), ConsulUnavailable)
    body = json.dumps({"Results": None, "Errors": [{"OpIndex": 0, "What": "failed session check"}]}, indent=4)
    failed = translate(ClientError("409 " + body))
    assert isinstance(failed, TransactionFailed)
    assert failed.errors == [(0, "failed session check")]


def test_network_errors_are_logged_in_a_few_words_not_urllib3_reprs():
    import socket

    import structlog

    from voltha_gevent.client_settings import ClientSettings
    from voltha_gevent.consul_api import make_client
    from voltha_gevent.retrying import Backoff, Retrying

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    api = ConsulAPI(make_client(ClientSettings(host="127.0.0.1", port=port), timeout=2.0))
    retrying = Retrying(backoff=Backoff(schedule=(0.01,)))
    with structlog.testing.capture_logs() as logs, pytest.raises(ConsulUnavailable) as info:
        retrying.call(lambda: api.get("k"), what="read", deadline=time.monotonic() + 0.05)
    gist = f"ConnectionRefused 127.0.0.1:{port}"
    assert str(info.value) == f"consul unavailable: {gist}"
    assert [e["error"] for e in logs if e["event"] == "consul-not-up"] == [f"consul unavailable: {gist}"]
    assert retrying.stats.last_error == f"consul unavailable: {gist}"


def test_txn_rollback_raises_transaction_failed_and_writes_nothing(api):
    with pytest.raises(TransactionFailed) as failure:
        api.txn([TxnOp.set("a", "1"), TxnOp.check_not_exists("a"), TxnOp.set("b", "2")])
    assert failure.value.errors and failure.value.errors[0][0] == 1
    assert api.get("a")[1] is None and api.get("b")[1] is None


def test_acquire_with_a_dead_session_is_session_invalid(api):
    session_id = api.create_session(name="t", ttl=10, behavior="release", lock_delay=0)
    api.destroy_session(session_id)
    with pytest.raises(SessionInvalid):
        api.acquire("lock", "me", session_id)
