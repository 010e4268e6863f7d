"""The crude PromQL reading of tests/deploy/promql.py, on the shapes Sinal's rules and dashboard
use."""

from __future__ import annotations

import pytest

from tests.deploy.promql import DocumentedMetric, documented_metrics, metric_names, undocumented


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sinal_build_info", {"sinal_build_info"}),
        ('up{job="sinal"} == 0', {"up"}),
        (
            'sum by (job) (rate(sinal_resets_total{reason="epoch", x=~"a|b"}[$__rate_interval]))',
            {"sinal_resets_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (job, le) "
            "(rate(sinal_delivery_lag_seconds_bucket[5m])))",
            {"sinal_delivery_lag_seconds_bucket"},
        ),
        (
            "job:sinal_handshakes:rate1m > 200 and on (job) job:sinal_resets:rate1m > 20",
            {"job:sinal_handshakes:rate1m", "job:sinal_resets:rate1m"},
        ),
        (
            "sum(rate(a_total[5m] offset 1h)) by (le) / ignoring(x) group_left(y) b * 1e3",
            {"a_total", "b"},
        ),
        ("rate(process_cpu_seconds_total[${__rate_interval}])", {"process_cpu_seconds_total"}),
        ("max_over_time(sinal_x[1h:5m]) unless bool c", {"sinal_x", "c"}),
        ('label_replace(d, "dst", "$1", "src", "(.*)")', {"d"}),
        ('label_values(sinal_build_info{job=~"$job"}, instance)', {"sinal_build_info"}),
        ("label_values(job)", set()),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_documented_metrics_and_histogram_series() -> None:
    table = """# Title

## Metrics

| metric | type | labels | meaning |
| --- | --- | --- | --- |
| `a_total` | counter | | |
| `b_seconds` | histogram | | |
| `c` | gauge | | |
| `process_*`, `python_*` | | | |

## Next

| `not_a_metric` | gauge | | |
"""
    metrics = documented_metrics(table)
    assert metrics == [
        DocumentedMetric("a_total", "counter", False),
        DocumentedMetric("b_seconds", "histogram", False),
        DocumentedMetric("c", "gauge", False),
        DocumentedMetric("process_", "", True),
        DocumentedMetric("python_", "", True),
    ]
    names = {"a_total", "b_seconds_bucket", "b_seconds_count", "process_open_fds"}
    assert not undocumented(names, metrics)
    assert undocumented({"c_bucket", "a_total_sum", "not_a_metric", "d"}, metrics) == {
        "c_bucket",
        "a_total_sum",
        "not_a_metric",
        "d",
    }
