"""The workers benchmark's plan: where each process of each side runs, which sides are the
same layout, what each 2-worker side is compared with; and what its options refuse."""

from __future__ import annotations

import pytest

from loadtests.ladder import side_figures
from loadtests.workers import baseline_of, comparisons, parse_args, placement_cores, plans

MACHINE = {0, 1}


def test_each_placement_puts_the_processes_where_it_says() -> None:
    assert placement_cores("shared", 1, 0, 1, MACHINE) == {"server": {0}}
    assert placement_cores("shared", 2, 0, 1, MACHINE) == {
        "supervisor": {0}, "worker 1": {0}, "worker 2": {0},
    }  # fmt: skip
    # spread: the second worker shares the generator's core
    assert placement_cores("spread", 2, 0, 1, MACHINE) == {
        "supervisor": {0}, "worker 1": {0}, "worker 2": {1},
    }  # fmt: skip
    assert placement_cores("spread", 3, 0, 1, MACHINE)["worker 3"] == {0}
    assert placement_cores("unpinned", 2, 0, 1, MACHINE) == {
        "supervisor": MACHINE, "worker 1": MACHINE, "worker 2": MACHINE,
    }  # fmt: skip


def test_one_worker_shared_and_spread_is_one_side_standing_for_both() -> None:
    cfg = parse_args(["--placements", "shared,spread,unpinned"])
    found = plans(cfg, MACHINE)
    assert [plan.name for plan in found] == [
        "workers1-shared", "workers2-shared", "workers2-spread",
        "workers1-unpinned", "workers2-unpinned",
    ]  # fmt: skip
    assert found[0].also == ["spread"]
    by_name = {plan.name: plan for plan in found}
    assert baseline_of(by_name["workers2-spread"], found) is by_name["workers1-shared"]
    assert baseline_of(by_name["workers2-unpinned"], found) is by_name["workers1-unpinned"]


def test_two_workers_are_compared_with_one_load_by_load() -> None:
    cfg = parse_args(["--placements", "shared,spread"])
    found = plans(cfg, MACHINE)

    def figures(delivered: int, p99: float) -> dict[str, object]:
        return side_figures([{"events_per_s": delivered, "deliveries_per_s": delivered,
                              "p99_ms": p99, "p50_ms": 1.0, "server_cpu_pct": 50.0}])  # fmt: skip

    rows = [
        {"offered": 1000, "workers1-shared": figures(1000, 10.0),
         "workers2-shared": figures(1000, 20.0), "workers2-spread": figures(1000, 5.0)},
        {"offered": 6000, "workers1-shared": figures(3000, 400.0),
         "workers2-shared": figures(3000, 400.0), "workers2-spread": figures(6000, 8.0)},
    ]  # fmt: skip
    ratios = comparisons(found, rows)
    assert set(ratios) == {"workers2-shared", "workers2-spread"}
    first, second = ratios["workers2-spread"]
    assert first is not None
    assert second is not None
    assert (first["p99_ms"], second["deliveries_per_s"], second["p99_ms"]) == (0.5, 2.0, 0.02)
    assert ratios["workers2-shared"][0] == {
        "events_per_s": 1.0, "deliveries_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0,
        "server_cpu_pct": 1.0,
    }  # fmt: skip


def test_the_defaults_are_the_per_user_workload_on_one_and_two_workers() -> None:
    cfg = parse_args([])
    assert cfg.workers == (1, 2)
    assert cfg.placements == ("shared", "spread")
    assert (cfg.ladder.kind, cfg.ladder.subscribers, cfg.ladder.channels) == (
        "unicast", 10_000, 10_000,
    )  # fmt: skip
    assert cfg.database_url.endswith("/sinal_bench_workers")
    assert parse_args(["broadcast"]).ladder.subscribers == 2000


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "0"],
        ["--placements", "everywhere"],
        ["--deliveries", "1000"],  # unicast takes --rates
        ["broadcast", "--rates", "1000"],
        ["--server-core", "1"],  # the generator's
        ["--database-url", "postgresql://postgres@127.0.0.1:5432/postgres"],
        ["--rounds", "0"],
    ],
)
def test_the_options_refuse_what_cannot_run(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
