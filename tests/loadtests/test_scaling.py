"""The scaling runner's judgements, the Locust CSV reader, and the report's charts."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from loadtests.locust_distributed import parse_stats
from loadtests.plots import (
    create_series,
    delivery_series,
    is_smoke,
    memory_series,
    read_records,
    render,
)
from loadtests.scaling import (
    busy,
    connection_ceiling,
    connections_broke,
    creates_broke,
    deliveries_broke,
    last_json_line,
    memory_allows,
    parse_args,
    sinal_rung,
)


def rung(offered: int, delivered: int, p50: float, p99: float, lost: int = 0) -> dict[str, Any]:
    return {"offered": offered, "offered_deliveries_per_s": offered, "deliveries_per_s": delivered,
            "p50_ms": p50, "p99_ms": p99, "lost": lost, "server_cpu_pct": 60.0}  # fmt: skip


def test_a_rung_breaks_on_rate_loss_or_tail() -> None:
    assert deliveries_broke(rung(100_000, 99_500, 20, 60), p99_ms=100) is None
    assert "delivered 90,000/s" in str(deliveries_broke(rung(100_000, 90_000, 20, 60), 100))
    assert "lost" in str(deliveries_broke(rung(100_000, 100_000, 20, 60, lost=3), 100))
    assert "p99 140" in str(deliveries_broke(rung(100_000, 100_000, 20, 140), 100))


def test_creates_break_on_errors_loss_rate_or_tail() -> None:
    ok = {"creates_per_s": 1000.1, "p99_ms": 40.0, "lost": 0, "create_errors": {}}
    assert creates_broke(ok, 1000, 50) is None
    assert "2 creates failed" in str(creates_broke({**ok, "create_errors": {"503": 2}}, 1000, 50))
    assert "never reached" in str(creates_broke({**ok, "lost": 1}, 1000, 50))
    assert "answered" in str(creates_broke({**ok, "creates_per_s": 800.0}, 1000, 50))
    assert "p99 66" in str(creates_broke({**ok, "p99_ms": 66.0}, 1000, 50))


def test_connections_break_on_failures_or_slow_handshakes() -> None:
    ok = {"idle_connections": 5000, "idle_connect_failures": 0, "idle_handshake_p99_ms": 80.0}
    assert connections_broke(ok, 5000, 1000) is None
    failed = {**ok, "idle_connections": 4990, "idle_connect_failures": 10}
    assert connections_broke(failed, 5000, 1000) == "10 of 5000 connections failed to open"
    assert "handshake p99" in str(
        connections_broke({**ok, "idle_handshake_p99_ms": 1500}, 5000, 1000)
    )


def test_the_ceiling_is_the_smaller_of_descriptors_and_ports() -> None:
    assert connection_ceiling(20_000, 28_232) == (
        18_976,
        "descriptors (RLIMIT_NOFILE hard limit 20000)",
    )
    assert connection_ceiling(1_048_576, 28_232)[0] == 27_232
    assert connection_ceiling(1_048_576, 28_232)[1].startswith("loopback ports")


def test_memory_projection_counts_server_and_generator() -> None:
    step = {"idle_kb_per_conn": 10.0, "idle_rss_after_kb": 100_000}
    # 10,000 more connections at 10 KB: 200,000 KB in the server, as much in the generator.
    assert memory_allows(step, 10_000, 20_000, available_kb=600_000)
    assert not memory_allows(step, 10_000, 20_000, available_kb=400_000)
    assert memory_allows({}, 10_000, 20_000, available_kb=1)  # nothing measured: no verdict


def test_busy_names_what_was_saturated() -> None:
    figures = {"server_cpu_pct": 97.0, "generator_cpu_pct": 40.0, "redis_cpu_pct": None,
               "postgres_cpu_pct": 91.0, "foreign_cpu_pct": 70.0}  # fmt: skip
    assert busy(figures) == ["server core", "database", "other work on the machine"]
    assert busy({"server_cpu_pct": 50.0}) == []


def test_the_sinal_rung_or_the_null_servers() -> None:
    assert sinal_rung(
        {"sides": {"nchan": {"rungs": [1]}, "sinal": {"rungs": [{"p99_ms": 5}]}}}
    ) == {"p99_ms": 5}
    assert sinal_rung({"sides": {"null": {"rungs": [{"p99_ms": 2}]}}}) == {"p99_ms": 2}
    assert sinal_rung({}) is None


def test_last_json_line() -> None:
    assert last_json_line('progress\n{"a": 1}\n\n') == {"a": 1}
    assert last_json_line("Traceback ...\n") is None
    assert last_json_line("") is None


def test_options_override_the_plan() -> None:
    plan, limits, out, quick = parse_args(["--quick", "--only", "creates", "--client-core", "0"])
    assert quick
    assert limits == ["creates"]
    assert out == Path("results.jsonl")
    assert plan.client_core == 0
    assert plan.create_users == 200
    with pytest.raises(SystemExit):
        parse_args(["--only", "bogus"])
    with pytest.raises(SystemExit):
        parse_args(["--deliveries", "100,50"])


LOCUST_HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
)
LOCUST_CSV = (
    LOCUST_HEADER
    + """\
POST,/v1/notifications,1789,2,160,171.2,3.1,857.25,120.0,217.38,0.24,160,190,210,230,270,320,450,630,850,860,860
GET,/v1/stream,40,0,9,9.5,1.0,20.0,0.0,4.8,0.0,9,10,11,12,13,17,20,21,21,21,21
,Aggregated,1829,2,160,168.1,1.0,857.25,117.4,222.18,0.24,150,190,210,230,270,320,450,620,850,860,860
"""
)


def test_locust_csv_by_name_and_aggregated() -> None:
    stats = parse_stats(LOCUST_CSV)
    assert stats["requests"] == 1829
    assert stats["failures"] == 2
    assert stats["requests_per_s"] == pytest.approx(222.18)
    assert stats["p99_ms"] == 620
    created = stats["by_name"]["POST /v1/notifications"]
    assert (created["p50_ms"], created["p95_ms"], created["p99_ms"]) == (160, 320, 630)
    assert stats["by_name"]["GET /v1/stream"]["requests"] == 40


# -- the charts ---------------------------------------------------------------------------------


def fixture_records() -> list[dict[str, Any]]:
    def ladder(offered: int, p50: float, p99: float, nchan_p99: float) -> dict[str, Any]:
        sinal = rung(offered, offered, p50, p99)
        nchan = rung(offered, offered, p50 / 3, nchan_p99)
        return {"sides": {"sinal": {"rungs": [sinal]}, "nchan": {"rungs": [nchan]}}}

    def step(limit: str, size: int, result: dict[str, Any] | None) -> dict[str, Any]:
        return {"kind": "step", "limit": limit, "size": size, "result": result}

    def idle(held: int, rss_kb: int, per_connection: float) -> dict[str, Any]:
        return {"idle_connections": held, "idle_rss_after_kb": rss_kb,
                "idle_kb_per_conn": per_connection}  # fmt: skip

    steps: list[dict[str, Any]] = [
        {"kind": "run", "quick": True},
        step("deliveries", 100_000, ladder(100_000, 30, 55, 12)),
        step("deliveries", 50_000, ladder(50_000, 20, 40, 10)),
        step("deliveries", 200_000, None),  # a run that crashed
        step("creates", 500, {"rate": 500, "p50_ms": 4, "p99_ms": 30}),
        step("creates", 1000, {"rate": 1000, "p50_ms": 5, "p99_ms": None}),
        step("connections", 5000, idle(5000, 150_000, 13.1)),
        step("connections", 10000, idle(10000, 215_000, 12.9)),
        {"kind": "limit", "limit": "connections", "largest_ok": 10000},
    ]
    return steps


def test_records_skip_blank_and_cut_lines() -> None:
    lines = ['{"kind": "run"}', "", '{"kind": "step", "lim', "[1, 2]", '{"kind": "limit"}']
    assert [r["kind"] for r in read_records(lines)] == ["run", "limit"]


def test_series_are_chosen_per_system_and_sorted() -> None:
    records = fixture_records()
    series = {s.label: s.points for s in delivery_series(records)}
    assert series["Sinal p99"] == [(50_000, 40), (100_000, 55)]
    assert series["Nchan p99"] == [(50_000, 10), (100_000, 12)]
    assert set(series) == {"Sinal p50", "Sinal p99", "Nchan p50", "Nchan p99"}
    creates = {s.label: s.points for s in create_series(records)}
    assert creates == {"Sinal p50": [(500, 4), (1000, 5)], "Sinal p99": [(500, 30)]}
    rss, per_connection = memory_series(records)
    assert rss.points == [(5000, 150_000 / 1024), (10000, 215_000 / 1024)]
    assert per_connection.points == [(5000, 13.1), (10000, 12.9)]
    assert is_smoke(records)
    assert not is_smoke(records[1:])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_charts_render_non_empty_pngs(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(record) for record in fixture_records()) + "\n")
    with results.open() as handle:
        written = render(list(read_records(handle)), tmp_path / "images")
    names = sorted(path.name for path in written)
    assert names == ["scaling-creates.png", "scaling-deliveries.png", "scaling-memory.png"]
    for path in written:
        assert png_size(path) == (800, 480)
        assert path.stat().st_size > 10_000  # lines, labels and legends, not a blank canvas


def test_a_chart_without_data_is_not_written(tmp_path: Path) -> None:
    assert render([{"kind": "run", "quick": False}], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
