"""The rules, Alertmanager config and Grafana dashboards: valid for the real tools, and every
query names a metric that feedpulse (or Triton, or Prometheus itself) really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import AlertMetrics, KeyLabels, WatchMetrics, WorkerMetrics
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
# Series that come from elsewhere: Prometheus itself, and Triton's metrics endpoint.
EXTERNAL = {
    "up",
    "ALERTS",
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
    "nv_cpu_utilization",
}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def exported_metric_names() -> set[str]:
    """Every series name the classify and alert workers and the model watch can expose."""
    # One registry each, as in the processes: the stuck-partition gauge is in two of them.
    registries = [CollectorRegistry() for _ in range(3)]
    WorkerMetrics(registries[0])
    AlertMetrics(registries[1], KeyLabels(10))
    WatchMetrics(registries[2])
    names: set[str] = set()
    for family in (f for registry in registries for f in registry.collect()):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
        }[family.type]
        names.update(family.name + suffix for suffix in suffixes)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (labels, strings, functions and ranges removed)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = match.group(0)
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        exprs += [a["expr"] for a in board.get("annotations", {}).get("list", []) if "expr" in a]
        found[path.name] = exprs
    return found


def test_name_extraction_sees_metrics_not_functions_or_labels() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x"}[5m]))) > on() group_left() max(b)'
    ) == {"a_bucket", "b"}
    assert metric_names("sum(rate(c_total[5m])) / clamp_min(d, 1e-9) / 1e6 > 0.05") == {
        "c_total",
        "d",
    }


def test_every_query_names_an_exported_metric() -> None:
    known = exported_metric_names() | EXTERNAL
    queries = {"rules.yml": rule_exprs(), **dashboard_exprs()}
    assert len(queries) == 4 and all(queries.values())
    unknown = {
        (where, name)
        for where, exprs in queries.items()
        for expr in exprs
        for name in metric_names(expr)
        if name not in known
    }
    assert unknown == set()


def run_tool(*args: str, cwd: Path = DEPLOY) -> str:
    """Run a Prometheus tool; fail with its output unless it exits 0. Returns stdout."""
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_pass_promtool_unit_tests() -> None:
    run_tool("promtool", "check", "rules", str(RULES))
    out = run_tool("promtool", "test", "rules", "tests/rules_test.yml", cwd=DEPLOY / "prometheus")
    assert "SUCCESS" in out


def test_prometheus_and_alertmanager_configs_are_valid() -> None:
    run_tool("promtool", "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    run_tool("amtool", "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"].startswith("feedpulse-") and board["panels"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for p in board["panels"]:
            assert p["datasource"]["uid"] == uid, (path.name, p["title"])
    provider = yaml.safe_load((provisioning / "dashboards" / "feedpulse.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    sentiment = json.loads((DEPLOY / "grafana" / "dashboards" / "sentiment.json").read_text())
    assert "FeedpulseSentimentSpike" in sentiment["annotations"]["list"][0]["expr"]
