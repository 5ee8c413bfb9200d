"""Bytes of the last answer each greenlet read from Consul, for the watches' byte counters.

A real client's ``requests`` response hook (installed by
:func:`~voltha_gevent.consul_api.make_client`) records the size; the mocked Consul records
nothing, so the size reads 0. Greenlet-local: concurrent calls do not mix their sizes.
"""

from __future__ import annotations

from typing import Any

import gevent.local
import requests

#: Size of the last answer each greenlet read (a real client's ``requests`` hook sets it).
_ANSWER = gevent.local.local()


def note_answer_size(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """The ``requests`` response hook: remember the size of the answer this greenlet read."""
    _ANSWER.size = len(response.content)


def answer_size() -> int:
    """Bytes of the last answer this greenlet read from Consul, 0 when unknown (the fake).

    Read it right after a call: the watches count what their listings cost.
    """
    return getattr(_ANSWER, "size", 0)


def forget_answer_size() -> None:
    _ANSWER.size = 0


__all__ = ["answer_size", "forget_answer_size", "note_answer_size"]
