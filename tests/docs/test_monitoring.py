"""The monitoring pack (docs/monitoring/): the rules pass `promtool check rules` and their unit
tests, every alert has a unit test, every alert points at a runbook section that exists, and
every query of the rules and the Grafana dashboard names only metrics the service really
exports (read from a running service's /metrics) or recording rules built on them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import httpx2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.support.service import Service

PACK = ROOT / "docs" / "monitoring"
SCRAPED = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}  # Prometheus adds these per target

# --- metric names in a PromQL expression ----------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
KEYWORDS |= {"inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana query, with $variables) reads:
    strings, label matchers, ranges, grouping label lists, numbers, durations, function and
    aggregation names and keywords are not metric names."""
    s = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", expr)  # Grafana: label_values(query, label)
    s = re.sub(r"^\s*label_values\(\s*\w+\s*\)\s*$", "", s)
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', s)  # strings (label values, regexes)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)  # Grafana variables
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)  # label lists
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"(?<![\w:])\d[\w.+-]*", " ", s)  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        name = match.group(0)
        if re.match(r"\s*\(", s[match.end() :]):  # a function or an aggregation
            continue
        if name.lower() not in KEYWORDS:
            names.add(name)
    return names


def test_metric_names_of_expressions() -> None:
    assert metric_names('sum by (route, status) (rate(modelcache_requests_total{instance=~"$instance"}[5m]))') == {
        "modelcache_requests_total"
    }
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(modelcache_request_seconds_bucket{route=~"/v1/.*"}[$__rate_interval])))'
    ) == {"modelcache_request_seconds_bucket"}
    assert metric_names(
        "a_total / on (instance, job, model) group_left () b_bytes{state=~\"loaded|x\"} > 0.9 or absent(up{job='m'})"
    ) == {"a_total", "b_bytes", "up"}
    assert metric_names("sum(x) without (y) unless z offset 5m and bool 1e3") == {"x", "z"}
    assert metric_names("label_values(modelcache_build_info, instance)") == {"modelcache_build_info"}
    assert metric_names("record:name:rate5m > 2") == {"record:name:rate5m"}


# --- the rule files ---------------------------------------------------------------------------------


def _rules(name: str) -> list[dict]:
    return [rule for group in yaml.safe_load((PACK / name).read_text())["groups"] for rule in group["rules"]]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "`promtool` is not installed: apt-get install prometheus"
        if os.environ.get("MODELCACHE_REQUIRE_DOCKER") == "1":
            pytest.fail(reason + " (MODELCACHE_REQUIRE_DOCKER=1)")
        pytest.skip(reason)
    return found


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml", "recording.yml"], cwd=PACK, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run([promtool(), "test", "rules", "tests.yml"], cwd=PACK, capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", "prometheus.yml"], cwd=PACK, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load((PACK / "tests.yml").read_text())
    assert set(tests["rule_files"]) == {"alerts.yml", "recording.yml"}
    fires, quiet = set(), set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {rule["alert"] for rule in _rules("alerts.yml")}
    assert len(alerts) >= 10
    assert alerts - fires == set(), "alerts without a case where they fire"
    assert alerts - quiet == set(), "alerts without a case where they stay quiet"
    assert (fires | quiet) - alerts == set(), "cases for alerts that do not exist"


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for line in markdown.splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_alert_explains_itself_and_names_a_runbook_section_that_exists() -> None:
    runbook = _anchors((ROOT / "docs" / "runbook.md").read_text())
    guide = (ROOT / "docs" / "monitoring.md").read_text()
    for rule in _rules("alerts.yml"):
        notes = rule["annotations"]
        assert notes["summary"] and len(notes["description"]) > 60, rule["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in runbook, (rule["alert"], notes["runbook_url"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert f"### {rule['alert']}" in guide, f"docs/monitoring.md does not explain {rule['alert']}"


# --- every query names an exported metric ---------------------------------------------------------


def exported(service: Service) -> set[str]:
    """The sample names the service exposes, also of families that have no sample yet
    (counters and histograms with no labels used so far)."""
    response = httpx2.get(f"{service.url}/metrics", timeout=10)
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.text):
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((PACK / "grafana-dashboard.json").read_text())
    queries = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def unknown_metrics(queries: list[str], known: set[str]) -> dict[str, set[str]]:
    """Each query's metric names that are neither exported, nor added by Prometheus, nor a
    recording rule (of recording.yml) whose own inputs are known; {} when all are."""
    recorded = {rule["record"]: rule["expr"] for rule in _rules("recording.yml")}
    valid = set(known) | SCRAPED
    while True:  # recording rules may build on each other
        more = {name for name, expr in recorded.items() if name not in valid and metric_names(expr) <= valid}
        if not more:
            break
        valid |= more
    return {q: missing for q in queries if (missing := metric_names(q) - valid)}


def test_a_query_on_a_metric_that_does_not_exist_is_found() -> None:
    known = {"modelcache_requests_total", "modelcache_queue_depth", "modelcache_queue_capacity"}
    assert unknown_metrics(["rate(modelcache_requests_total[5m])", "model:modelcache_queue:utilisation"], known) == {}
    bad = ['sum by (model) (rate(modelcache_gpu_seconds_total{model="x"}[5m]))', "route:nothing:rate5m"]
    assert unknown_metrics(bad, known) == {bad[0]: {"modelcache_gpu_seconds_total"}, bad[1]: {"route:nothing:rate5m"}}
    # a recording rule whose input the service does not export is not a valid name either
    assert unknown_metrics(["model:modelcache_queue:utilisation"], {"modelcache_queue_depth"}) != {}


def test_every_dashboard_and_rule_query_names_an_exported_metric(server: Service) -> None:
    names = exported(server)
    assert {"modelcache_requests_total", "modelcache_request_seconds_bucket", "modelcache_ready"} <= names
    queries = dashboard_queries()
    assert len(queries) >= 30
    rules = [rule["expr"] for rule in _rules("alerts.yml") + _rules("recording.yml")]
    assert unknown_metrics(queries + rules, names) == {}
    # and the dashboard shows what the issue asks for
    used = set().union(*(metric_names(q) for q in queries))
    for wanted in (
        "modelcache_requests_total",
        "modelcache_request_seconds_bucket",
        "modelcache_inference_seconds_bucket",
        "modelcache_queue_depth",
        "modelcache_rejected_total",
        "modelcache_shed_total",
        "modelcache_model_memory_bytes",
        "modelcache_model_state",
        "modelcache_model_loads_total",
        "modelcache_model_evictions_total",
        "modelcache_reloads_total",
        "modelcache_cancelled_total",
        "modelcache_model_restarts_total",
    ):
        assert wanted in used, wanted


def test_the_dashboard_imports_with_a_datasource_input() -> None:
    dashboard = json.loads((PACK / "grafana-dashboard.json").read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
