"""Stand-ins for what the request dispatcher reads of a node and of the owners view.

Shared by the ``test_dispatcher*.py`` files: a scripted owners view, a node whose owned /
pending items and ownership tokens a test sets by hand, and WSGI environs.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import gevent

from voltha_gevent.membership import MemberRecord
from voltha_gevent.northbound import RequestDispatcher

SIZES = dict(queue_size=100, workers=8, forward_timeout=2.0)


class StubOwners:
    """An owners view answering from a script: ``answers`` is consumed one read at a time."""

    def __init__(self, *answers: str | None, workload: set[str] | None = None) -> None:
        self.answers = list(answers)
        self.reads = 0
        self.workload = workload  # None: every item is in the workload

    def in_workload(self, item: str) -> bool:
        return self.workload is None or item in self.workload

    def _next(self) -> str | None:
        self.reads += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    get = read = lambda self, item: self._next()  # noqa: E731

    def wait_change(self, timeout: float) -> bool:
        gevent.sleep(min(timeout, 0.01))
        return False

    def start(self) -> None: ...

    def stop(self) -> None: ...


class StubNode:
    """Just what the dispatcher reads of a node (a ``DispatchNode``). ``tokens``: the ownership
    token per owned item (default 1; None = the lease is not valid); ``barriers``: what
    ``add_revoke_barrier`` got."""

    def __init__(self, instance_id: str = "a", members=("a", "b", "c"), owned=(), pending=(),
                 ports: dict[str, int] | None = None, tokens: dict[str, int | None] | None = None) -> None:
        self.instance_id = instance_id
        ports = ports or {}
        self._members = {m: MemberRecord(m, "127.0.0.1", "127.0.0.1", ports.get(m, 1000 + i))
                         for i, m in enumerate(members)}
        self._owned, self._pending = set(owned), set(pending)
        self.tokens: dict[str, int | None] = dict(tokens or {})
        self.barriers: list[Any] = []

    def members(self):
        return dict(self._members)

    def owned(self):
        return set(self._owned)

    def pending(self):
        return set(self._pending)

    def ownership(self, item: str) -> SimpleNamespace | None:
        token = self.tokens.get(item, 1)
        if item not in self._owned or token is None:
            return None
        return SimpleNamespace(item=item, token=token)

    def add_revoke_barrier(self, barrier: Any) -> None:
        self.barriers.append(barrier)


def stub_dispatcher(owners: StubOwners, forward, node: StubNode | None = None, handler=None,
                    **kw: Any) -> RequestDispatcher:
    handler = handler or (lambda item, payload: ("local", item))
    dispatcher = RequestDispatcher(node or StubNode(), handler, forward=forward, owners=owners,
                                   **{**SIZES, "owner_wait": 1.0, **kw})
    return dispatcher.start()


def environ(body: Any, *, remote: str = "127.0.0.1", headers: dict[str, str] | None = None) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    env = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
           "REMOTE_ADDR": remote}
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env
