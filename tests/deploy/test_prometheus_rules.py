"""The Prometheus rules, their unit tests, the example Prometheus configuration and the Grafana
dashboard under deploy/, checked with promtool and against docs/monitoring.md.

promtool comes with Debian's `prometheus` package. Without it the promtool tests skip and say
why, except under `SINAL_REQUIRE_SERVICES=1` (set by `.ci/run`, which installs it), where they
fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_service
from tests.deploy.promql import (
    dashboard_queries,
    documented_metrics,
    metric_names,
    undocumented,
)
from tests.support import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "sinal.rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sinal.json"
MONITORING = ROOT / "docs" / "monitoring.md"
RUNBOOKS = "https://github.com/sinal/sinal/blob/main/docs/monitoring.md#"
# Series Prometheus makes itself rather than scraping them from Sinal.
PROMETHEUS_SERIES = {"up"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def monitoring_doc() -> str:
    return MONITORING.read_text(encoding="utf-8")


def section(markdown: str, heading: str) -> str:
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"docs/monitoring.md has no {heading!r} section"
    return match.group(1)


def first_table(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text`, without its header."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        if not re.fullmatch(r"[|\s:-]+", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]


def documented_alerts() -> dict[str, dict[str, str]]:
    """The "Alerts" table of docs/monitoring.md: name → {"for", "severity"}."""
    found = {}
    for cells in first_table(section(monitoring_doc(), "## Alerts")):
        name = cells[0].strip("`")
        found[name] = {"for": cells[2], "severity": cells[3]}
    return found


def seconds(duration: str) -> float:
    """`20 s`, `1 min`, `5 min` (the doc) or `20s`, `1m`, `1h30m` (Prometheus) in seconds."""
    units = {"s": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|s|m|h)", duration)
    assert parts, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def heading_anchors(markdown: str) -> set[str]:
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE)}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        require_service("promtool", "not on PATH: apt-get install prometheus")
    assert path is not None
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def assert_success(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


# --- promtool ---------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    assert_success(run(promtool, "check", "rules", "--lint=all", str(RULES)))


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    assert RULE_TESTS, "no unit tests in deploy/prometheus/tests/"
    result = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert_success(result)
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def test_example_config_passes_promtool_check(promtool: str) -> None:
    """The example configuration is valid and loads the rules file (a path relative to it)."""
    result = run(promtool, "check", "config", str(CONFIG))
    assert_success(result)
    assert "1 rule files found" in result.stdout, result.stdout


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every Grafana query, its variables replaced by sample values, is an expression
    Prometheus accepts (checked as the expression of a recording rule)."""
    values = {"$__rate_interval": "1m", "$__range": "1h", "$job": "sinal", "$instance": ".+"}
    recording: list[dict[str, str]] = []
    for where, expr in dashboard_queries(json.loads(DASHBOARD.read_text(encoding="utf-8"))):
        if expr.startswith("label_values("):
            continue  # a Grafana template query, not PromQL
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        recording.append({"record": f"dashboard:query_{len(recording)}", "expr": expr})
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recording}]}))
    assert_success(run(promtool, "check", "rules", str(rules_file)))


# --- rules against the documentation -------------------------------------------------------------


def test_one_alert_per_row_of_the_alerts_table() -> None:
    """Same names, same `for`, same severity as docs/monitoring.md."""
    documented = documented_alerts()
    shipped = alerts()
    assert sorted(shipped) == sorted(documented)
    for name, rule in shipped.items():
        assert seconds(rule["for"]) == seconds(documented[name]["for"]), name
        assert rule["labels"]["severity"] == documented[name]["severity"], name


def test_every_alert_explains_itself_and_links_its_runbook() -> None:
    anchors = heading_anchors(section(monitoring_doc(), "## Runbooks"))
    for name, rule in alerts().items():
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert "{{" in annotations["description"], f"{name}: description without a value"
        url = annotations["runbook_url"]
        assert url == RUNBOOKS + name.lower(), f"{name}: {url}"
        assert name.lower() in anchors, f"docs/monitoring.md has no runbook heading for {name}"


def test_rules_name_only_documented_metrics() -> None:
    """Every metric the rules read is in the metrics table of docs/monitoring.md, and every
    recording rule they read is defined in the file."""
    metrics = documented_metrics(monitoring_doc())
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    names = set().union(*(metric_names(rule["expr"]) for rule in rules()))
    assert names, "no metric names found in the rules"
    assert {name for name in names if ":" in name} <= recorded
    sinal = {name for name in names if ":" not in name} - PROMETHEUS_SERIES
    assert not undocumented(sinal, metrics)


def test_dashboard_names_only_documented_metrics() -> None:
    """The dashboard reads no recording rule (it works without the rules file loaded) and
    only metrics of the table, `up` and the standard process metrics."""
    metrics = documented_metrics(monitoring_doc())
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    problems = {}
    for where, expr in dashboard_queries(dashboard):
        names = metric_names(expr)
        unknown = undocumented(names - PROMETHEUS_SERIES, metrics)
        if not names or unknown:
            problems[where] = (expr, sorted(unknown))
    assert not problems


def test_dashboard_shape() -> None:
    """A Grafana dashboard that imports anywhere: a data source variable rather than a fixed
    data source uid, and every panel's queries through it."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    uids = set()
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        uids.add(panel["datasource"]["uid"])
        uids.update(target["datasource"]["uid"] for target in panel["targets"])
    assert uids == {"${datasource}"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# --- the unit tests themselves -----------------------------------------------------------------


def test_every_alert_has_unit_tests_that_fire_and_stay_quiet() -> None:
    """For each alert, the promtool tests hold a case where it fires with its labels and
    annotations, one where it is never even pending (below the threshold), and one where it is
    pending but never fires (above the threshold for less than its `for`)."""
    fires: set[str] = set()
    never: set[str] = set()
    pending_only: set[str] = set()
    for path in RULE_TESTS:
        document = load_yaml(path)
        assert document["rule_files"] == ["../sinal.rules.yml"], path
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check["exp_alerts"]:
                    assert {"summary", "description", "runbook_url"} <= set(
                        alert["exp_annotations"]
                    ), path
                    assert "severity" in alert["exp_labels"], path
                    fires.add(check["alertname"])
            checks = case.get("promql_expr_test", [])
            for check in checks:
                # max_over_time(ALERTS{alertname="X"}[1h]) with no sample: never pending.
                quiet = re.fullmatch(
                    r'max_over_time\(ALERTS\{alertname="(\w+)"\}\[1h\]\)', check["expr"]
                )
                if quiet and not check["exp_samples"]:
                    never.add(quiet.group(1))
            states = {
                (m.group(1), m.group(2), bool(c["exp_samples"]))
                for c in checks
                if (m := re.search(r'alertname="(\w+)", alertstate="(\w+)"', c["expr"]))
            }
            for name, state, present in states:
                if state == "pending" and present and (name, "firing", False) in states:
                    pending_only.add(name)
    names = set(alerts())
    assert not names - fires, "no case where these fire"
    assert not names - never, "no case where these are never pending"
    assert not names - pending_only, "no case where these are pending but never fire"
