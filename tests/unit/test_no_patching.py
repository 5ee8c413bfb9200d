"""The test process stays unpatched: nothing imported here may monkey-patch it.

Layer: unit. ``voltha_gevent.cli`` patches the process when imported (the entry point must
patch before ``requests``); a test module that imports it at collection patches ``ssl`` after
``urllib3`` took its ``SSLContext``, and every in-process TLS call then recurses
(tests/integration/test_tls_real.py failed so). Parsing goes through ``cli_parser``.
"""

from __future__ import annotations

import sys

import gevent.monkey


def test_nothing_collected_in_this_process_monkey_patched_it() -> None:
    assert "voltha_gevent.cli" not in sys.modules
    assert not gevent.monkey.is_module_patched("ssl")
