"""A real Prometheus server on loopback, for tests of the shipped alert rules and dashboard.

Guarantees of :class:`PrometheusServer`:

* It binds 127.0.0.1 on a port picked free at start, keeps its config, rules and TSDB in a
  directory of the caller's (a test's ``tmp_path``), runs in its own process group and only
  scrapes the targets it is given (loopback node endpoints).
* ``start()`` returns once ``/-/ready`` answers; a server that does not come up raises
  :class:`PrometheusStartupError` with the tail of its log.
* Only the process started here is ever signalled, by pid: SIGTERM, a wait, then SIGKILL.
  ``stop()`` is idempotent and also runs on context-manager exit.

The binary is found by :func:`find_prometheus_binary` in the order of
``scripts/install-prometheus.sh``: ``$PROMETHEUS_BIN``, ``prometheus`` on PATH, the project
cache, then the script itself (Debian bookworm's package unpacked into ``.cache/prometheus``).
``promtool`` is the one next to that binary, else the one on PATH. :func:`rules_with_for`
needs PyYAML (the ``test`` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..devagent import REPO_ROOT, AgentProcess, find_installed, free_port, http_get_json, log_tail
from ..lifecycle import StartStop

#: How long Prometheus may take to answer /-/ready.
STARTUP_TIMEOUT = 30.0
#: Poll interval while waiting for it.
POLL_INTERVAL = 0.2
#: The shipped rules, the promtool tests and the Grafana dashboard.
RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "voltha-rules.yml"
RULE_TESTS_DIR = REPO_ROOT / "deploy" / "prometheus" / "tests"
DASHBOARD_FILE = REPO_ROOT / "deploy" / "grafana" / "voltha.json"


class PrometheusNotFound(RuntimeError):
    """No usable ``prometheus``/``promtool`` could be found or installed."""


class PrometheusStartupError(RuntimeError):
    """Prometheus did not come up; the message carries the tail of its log."""


def find_prometheus_binary(*, install: bool = True) -> str:
    """The path of a ``prometheus`` binary: $PROMETHEUS_BIN, PATH, the cache, else the installer."""
    return find_installed("prometheus", env_var="PROMETHEUS_BIN", companions=("promtool",), install=install,
                          error=PrometheusNotFound)


def find_promtool(prometheus_bin: str) -> str:
    """``promtool`` from the same install as ``prometheus_bin`` (so versions match), else PATH."""
    sibling = Path(prometheus_bin).with_name("promtool")
    if os.access(sibling, os.X_OK):
        return str(sibling)
    on_path = shutil.which("promtool")
    if on_path:
        return on_path
    raise PrometheusNotFound(f"no promtool next to {prometheus_bin} nor on PATH")


def rules_with_for(source: Path, target: Path, durations: dict[str, str]) -> Path:
    """A copy of the rule file with some alerts' ``for:`` replaced (tests cannot wait 30 s).

    The expressions are untouched: the test exercises the shipped alerts, only sooner.
    """
    import yaml  # the test extra; imported here so conftest loads without it

    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in durations:
                rule["for"] = durations[rule["alert"]]
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


class PrometheusServer(StartStop):
    """One ``prometheus`` process scraping ``targets`` (``host:port``) as job ``job``."""

    def __init__(self, binary: str, workdir: Path, targets: list[str], *,
                 rule_files: list[Path] | None = None, job: str = "voltha", interval: str = "1s") -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.rule_files = [Path(p) for p in rule_files or []]
        self.job = job
        self.interval = interval
        self.port = 0
        self._process: AgentProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        }

    def start(self) -> PrometheusServer:
        if self._process is not None and self._process.alive():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        self.port = free_port()
        argv = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"]
        self._process = AgentProcess(argv, self.workdir / "prometheus.log")
        self._process.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if not self._process.alive():
                break
            if self._ready():
                return self
            time.sleep(POLL_INTERVAL)
        self.stop()
        raise PrometheusStartupError(f"prometheus did not become ready:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as answer:  # noqa: S310 - loopback
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def log_tail(self) -> str:
        return log_tail(self.workdir / "prometheus.log")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; its ``data`` (raises on a non-success answer)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = http_get_json(f"{self.url}/api/v1/{path}{query}", timeout=5.0)
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus answered {answer}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [ts, "v"]}, ...]``."""
        return list(self.api("query", query=promql)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing) with their labels and ``state``."""
        return list(self.api("alerts")["alerts"])

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """Label sets of the firing alerts named ``alertname``."""
        return [a["labels"] for a in self.alerts()
                if a["labels"].get("alertname") == alertname and a["state"] == "firing"]
