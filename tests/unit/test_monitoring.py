"""The shipped alert rules and Grafana dashboard: promtool accepts and tests them, every alert
has a test, and every metric they name is one a node really exports.

A renamed metric would otherwise leave an alert that can never fire and a panel that stays
empty, silently: the names are checked against a live node's ``/metrics`` output.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from voltha_gevent import metrics
from voltha_gevent.testing.nodes import FakeCluster
from voltha_gevent.testing.prometheus import DASHBOARD_FILE, RULE_TESTS_DIR, RULES_FILE

pytestmark = pytest.mark.prometheus

#: Metric names in PromQL (recording rules, ``voltha:...``, are matched separately).
METRIC = re.compile(r"\bvoltha_[A-Za-z0-9_]+")
RECORDED = re.compile(r"\bvoltha:[A-Za-z0-9_:]+")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _rule_tests() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def _dashboard_exprs(node: Any) -> list[str]:
    """Every ``expr`` of every panel target, and the template variables' queries."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_dashboard_exprs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_dashboard_exprs(value))
    return found


def _exported_names() -> set[str]:
    """Sample names in a leader's /metrics (with a dispatcher mounted): every family there is."""
    with FakeCluster() as cluster:
        cluster.add_items("a", "b")
        node = cluster.add_node("n1")
        node.add_dispatcher(lambda item, payload: payload)
        assert cluster.wait_until(lambda: node.is_leader and cluster.converged({"a", "b"}))
        text = metrics.render(node.metrics_view).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_promtool_check_rules(promtool_bin: str) -> None:
    done = subprocess.run([promtool_bin, "check", "rules", str(RULES_FILE)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_example_config(promtool_bin: str) -> None:
    """The config the README tells readers to start Prometheus with, and the rules it loads."""
    config = RULES_FILE.with_name("prometheus.yml")
    done = subprocess.run([promtool_bin, "check", "config", str(config)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_promtool_rule_unit_tests(promtool_bin: str) -> None:
    files = _rule_tests()
    assert files, f"no promtool tests in {RULE_TESTS_DIR}"
    done = subprocess.run([promtool_bin, "test", "rules", *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_and_recording_rule_is_tested() -> None:
    """Each alert is seen firing in a promtool test, each recording rule is evaluated in one."""
    fired, evaluated = set(), set()
    for path in _rule_tests():
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
            evaluated |= set(RECORDED.findall(" ".join(t["expr"] for t in case.get("promql_expr_test", []))))
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert {"VolthaNoLeader", "VolthaItemsUnowned", "VolthaHandoverStuck", "VolthaSessionLost",
            "VolthaConsulPermissionDenied", "VolthaRevocationStuck"} <= alerts
    assert alerts - fired == set()
    assert recorded - evaluated == set()


def test_alerts_carry_severity_and_summary() -> None:
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = _exported_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    rule_exprs = [str(rule["expr"]) for rule in _rules()]
    dashboard_exprs = _dashboard_exprs(json.loads(DASHBOARD_FILE.read_text()))
    assert len(dashboard_exprs) > 20
    for where, exprs in (("rules", rule_exprs), ("dashboard", dashboard_exprs)):
        named = {name for expr in exprs for name in METRIC.findall(expr)}
        assert named, where
        assert named - exported == set(), f"{where} name metrics no node exports"
        used = {name for expr in exprs for name in RECORDED.findall(expr)}
        assert used - recorded == set(), f"{where} use recording rules that do not exist"


def test_name_check_catches_a_renamed_metric() -> None:
    """The check above is not vacuous: a name off by one letter is not among the exported ones."""
    exported = _exported_names()
    assert "voltha_is_leader" in exported
    assert "voltha_session_losses_total" in exported
    assert "voltha_dispatch_latency_seconds_bucket" in exported
    assert "voltha_handover_seconds_count" in exported
    assert "voltha_is_leaders" not in exported


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
