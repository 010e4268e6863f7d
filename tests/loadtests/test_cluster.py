"""The cluster-vs-standalone benchmark's arithmetic: rounds combined into one row per side,
the cluster ÷ standalone ratios, and what its options refuse."""

from __future__ import annotations

import argparse
import os

import pytest

from loadtests.cluster import comparison, fanout_row, parse_args
from loadtests.ladder import side_figures
from loadtests.procs import parse_cores


def rung(**figures: object) -> dict[str, object]:
    base = {
        "events_per_s": 1000.0, "deliveries_per_s": 1000, "server_cpu_pct": 40.0,
        "redis_cpu_pct": 10.0, "generator_cpu_pct": 20.0, "other_processes_cpu_pct": 5.0,
        "p50_ms": 2.0, "p99_ms": 10.0, "max_ms": 20.0, "lost": 0, "duplicated": 0,
        "publish_errors": 0, "disconnects": 0,
    }  # fmt: skip
    return {**base, **figures}


def test_rounds_combine_rates_by_mean_latency_by_median_losses_by_sum() -> None:
    row = side_figures(
        [
            rung(deliveries_per_s=900, p99_ms=10.0, lost=2, redis_cpu_pct_each=[1.0, 3.0]),
            rung(deliveries_per_s=1000, p99_ms=30.0, duplicated=1, redis_cpu_pct_each=[3, 5]),
            rung(deliveries_per_s=1100, p99_ms=11.0, redis_cpu_pct_each=[2.0, 4.0]),
        ]
    )
    assert row["rounds"] == 3
    assert row["deliveries_per_s"] == 1000
    assert row["p99_ms"] == 11.0  # the median: one noisy round does not move it
    assert (row["lost"], row["duplicated"]) == (2, 1)
    assert row["redis_cpu_pct_each"] == [2.0, 4.0]  # process by process
    assert "postgres_cpu_pct" not in row  # not measured: left out, not reported as 0


def test_ratios_are_cluster_over_standalone_and_none_without_a_base() -> None:
    standalone = side_figures([rung(p99_ms=10.0, redis_cpu_pct=0.0)])
    cluster = side_figures([rung(deliveries_per_s=500, p99_ms=25.0, redis_cpu_pct=3.0)])
    ratios = comparison(standalone, cluster)
    assert ratios["deliveries_per_s"] == 0.5
    assert ratios["p99_ms"] == 2.5
    assert ratios["server_cpu_pct"] == 1.0
    assert ratios["redis_cpu_pct"] is None  # 0 % standalone: no ratio rather than a division


def test_fanout_runs_become_one_row_with_the_foreign_load() -> None:
    run = {**rung(), "expected_deliveries_per_s": 80_000, "foreign_cpu_pct": 12.0}
    del run["other_processes_cpu_pct"], run["events_per_s"]
    row = fanout_row([run, {**run, "deliveries_per_s": 3000, "foreign_cpu_pct": 20.0}])
    assert row["deliveries_per_s"] == 2000
    assert row["expected_deliveries_per_s"] == 80_000
    assert row["foreign_cpu_pct"] == 16.0
    assert "events_per_s" not in row


def test_the_options_default_to_the_issue_workloads() -> None:
    cfg = parse_args([])
    assert (cfg.subscribers, cfg.rate) == (2000, 40)
    assert (cfg.users, cfg.events) == (10_000, 1000)
    assert (cfg.primaries, cfg.replicas) == (3, 1)
    assert cfg.redis_cores == set(range(os.cpu_count() or 1))
    per_user = cfg.per_user_config()
    assert (per_user.kind, per_user.channels, per_user.loads) == ("unicast", 10_000, (1000,))


@pytest.mark.parametrize(
    "argv",
    [
        ["--primaries", "2"],
        ["--users", "0"],
        ["--skip-fanout", "--skip-per-user"],
        ["--redis-cores", "99"],
        ["--warmup", "-1"],
    ],
)
def test_the_options_refuse_what_cannot_run(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_cores_are_all_or_a_list_of_this_machines() -> None:
    assert parse_cores("0") == {0}
    assert parse_cores("all") == set(range(os.cpu_count() or 1))
    with pytest.raises(argparse.ArgumentTypeError):
        parse_cores("one")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_cores(str(os.cpu_count()))
