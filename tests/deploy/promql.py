"""Reading metric names out of PromQL, Grafana dashboards and the metrics table of
docs/monitoring.md, for tests that check the three agree.

The PromQL reading is deliberately crude (no parser): it drops what cannot be a metric name
(strings, label matchers, grouping clauses, ranges, Grafana variables, function names) and keeps
the identifiers left. That is enough for the expressions Sinal ships, and fails loudly (an unknown
name) rather than quietly when it is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_RANGES = re.compile(r"\[[^\[\]]*\]")
_OFFSETS = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_GRAFANA_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
# Grafana's template queries: label_values(metric, label) and label_values(label).
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(\s*([^,()]*?)\s*,\s*[a-zA-Z_]\w*\s*\)")
_LABEL_VALUES_OF_ANY = re.compile(r"\blabel_values\s*\(\s*[a-zA-Z_]\w*\s*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "inf", "nan", "atan2"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana template query) selects.

    `sum by (job) (rate(sinal_resets_total{reason="epoch"}[$__rate_interval]))` gives
    `{"sinal_resets_total"}`; names of recording rules (`job:sinal_x:rate5m`) come out whole.
    """
    text = _STRINGS.sub('""', expr)
    text = _GRAFANA_VARIABLES.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _OFFSETS.sub("", text)
    text = _LABEL_VALUES.sub(r"(\1)", text)
    text = _LABEL_VALUES_OF_ANY.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        if name.lower() in _KEYWORDS or re.fullmatch(r"[0-9].*", name):
            continue
        names.add(name)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expression) for every Prometheus query of a Grafana dashboard: panel targets
    (rows' nested panels included) and template variable queries."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if query:
            yield f"variable {variable.get('name')!r}", query


@dataclass(frozen=True)
class DocumentedMetric:
    name: str  # a full name, or a prefix when `wildcard` (`process_*`)
    type: str  # counter, gauge, histogram, or "" for a family of standard metrics
    wildcard: bool


def documented_metrics(markdown: str) -> list[DocumentedMetric]:
    """The rows of the metrics table (under the `## Metrics` heading) of docs/monitoring.md."""
    section = re.search(r"^## Metrics\n(.*?)(?=^## )", markdown, re.MULTILINE | re.DOTALL)
    if section is None:
        raise ValueError("no '## Metrics' section")
    metrics = []
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            wildcard = name.endswith("*")
            metrics.append(DocumentedMetric(name.rstrip("*"), cells[1], wildcard))
    return metrics


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def undocumented(names: set[str], metrics: list[DocumentedMetric]) -> set[str]:
    """The names that are not in the table: a name is documented when the table lists it, when
    it is a histogram's `_bucket`/`_sum`/`_count` series, or when it matches a `prefix_*` row."""
    exact = {metric.name: metric.type for metric in metrics if not metric.wildcard}
    prefixes = tuple(metric.name for metric in metrics if metric.wildcard)
    missing = set()
    for name in names:
        if name in exact or (prefixes and name.startswith(prefixes)):
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is not None and exact.get(base) == "histogram":
            continue
        missing.add(name)
    return missing
