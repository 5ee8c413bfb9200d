"""Shared helpers of the Consul-backed benches: monkey-patching, a dev agent, tables, medians.

``patch()`` must run before ``requests`` is imported anywhere in the process (the bench
modules call it first thing); without it greenlets doing HTTP run one after the other and
every concurrency figure is fake. Nothing here asserts on a number.
"""

from __future__ import annotations

from gevent import monkey

if not monkey.is_module_patched("socket"):
    monkey.patch_all()

import contextlib  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import structlog  # noqa: E402


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[str]:
    """A scratch folder for one section, removed afterwards unless ``VOLTHA_BENCH_KEEP=1``
    (then its path is printed: node logs and ledgers to look into after a bad run)."""
    path = tempfile.mkdtemp(prefix=prefix)
    keep = os.environ.get("VOLTHA_BENCH_KEEP") == "1"
    try:
        yield path
    finally:
        if keep:
            emit(f"(kept {path})\n")
        else:
            shutil.rmtree(path, ignore_errors=True)


def quiet_logs() -> None:
    """Library logs at warning and above only, so bench tables stay readable."""
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def api_for(http_addr: str, timeout: float = 30.0) -> Any:
    """A :class:`~voltha_gevent.consul_api.ConsulAPI` on the agent at ``host:port``."""
    from voltha_gevent.client_settings import ClientSettings
    from voltha_gevent.consul_api import ConsulAPI, make_client

    host, port = http_addr.rsplit(":", 1)
    return ConsulAPI(make_client(ClientSettings(host=host, port=int(port)), timeout))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; floats get 3 significant-ish decimals."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.extend("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(lines) + "\n"


def emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
