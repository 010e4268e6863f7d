"""Charts of the scaling report from `loadtests.scaling`'s results file (PNG, no display).

    uv run python -m loadtests.plots results.jsonl                  # → docs/images/scaling-*.png
    uv run python -m loadtests.plots results.jsonl --into /tmp/charts

- `scaling-deliveries.png`: broadcast delivery latency (p50, p99) against offered
  deliveries/s, Sinal and, where the run had it, Nchan and the null server (the generator).
- `scaling-creates.png`: notification create → event latency (p50, p99) against offered
  creates/s.
- `scaling-memory.png`: server RSS (MB) and KB per connection against idle connections.

A chart whose series are all empty is not written (and said so on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"


# -- reading the results (pure) ----------------------------------------------------------------


def read_records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON records of a results file; blank lines and lines that are not JSON objects
    (a run cut short mid-line) are skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


@dataclass
class Series:
    """One line of a chart: (x, y) points sorted by x."""

    label: str
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, x: Any, y: Any) -> None:
        if isinstance(x, int | float) and isinstance(y, int | float):
            self.points.append((float(x), float(y)))
            self.points.sort()


def _steps(records: Iterable[dict[str, Any]], limit: str) -> Iterator[dict[str, Any]]:
    for record in records:
        if record.get("kind") == "step" and record.get("limit") == limit and record.get("result"):
            yield record


SYSTEM_LABELS = {"sinal": "Sinal", "nchan": "Nchan", "null": "null server (generator)"}


def delivery_series(records: Iterable[dict[str, Any]]) -> list[Series]:
    """p50 and p99 against offered deliveries/s, per system of the broadcast ladder runs
    (every rung of every side: Sinal, Nchan, the null server of a calibration)."""
    found: dict[str, Series] = {}
    for record in _steps(records, "deliveries"):
        for side, data in (record["result"].get("sides") or {}).items():
            label = SYSTEM_LABELS.get(side, side)
            for rung in data.get("rungs") or []:
                offered = rung.get("offered_deliveries_per_s", rung.get("offered"))
                for quantile in ("p50", "p99"):
                    name = f"{label} {quantile}"
                    found.setdefault(name, Series(name)).add(offered, rung.get(f"{quantile}_ms"))
    return [series for series in found.values() if series.points]


def create_series(records: Iterable[dict[str, Any]]) -> list[Series]:
    """Create → event p50 and p99 against offered creates/s."""
    p50, p99 = Series("Sinal p50"), Series("Sinal p99")
    for record in _steps(records, "creates"):
        result = record["result"]
        offered = result.get("rate", record.get("size"))
        p50.add(offered, result.get("p50_ms"))
        p99.add(offered, result.get("p99_ms"))
    return [series for series in (p50, p99) if series.points]


def memory_series(records: Iterable[dict[str, Any]]) -> tuple[Series, Series]:
    """Server RSS (MB) and KB per connection against idle connections held."""
    rss, per_connection = Series("server RSS (MB)"), Series("KB per connection")
    for record in _steps(records, "connections"):
        result = record["result"]
        held = result.get("idle_connections")
        after = result.get("idle_rss_after_kb")
        if isinstance(after, int | float):
            rss.add(held, after / 1024)
        per_connection.add(held, result.get("idle_kb_per_conn"))
    return rss, per_connection


def is_smoke(records: Iterable[dict[str, Any]]) -> bool:
    """Whether the results come from a smoke run (`--quick`): the charts say so."""
    return any(record.get("kind") == "run" and record.get("quick") for record in records)


# -- drawing -----------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def _title(text: str, smoke: bool) -> str:
    return f"{text}\n(smoke run: small sizes on a shared machine)" if smoke else text


def latency_chart(series: list[Series], title: str, x_label: str, path: Path, smoke: bool) -> bool:
    if not series:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=100)
    for line in series:
        xs, ys = zip(*line.points, strict=True)
        style = "--" if line.label.endswith("p50") else "-"
        axes.plot(xs, ys, style, marker="o", label=line.label)
    axes.set_xlabel(x_label)
    axes.set_ylabel("latency (ms)")
    axes.set_yscale("log")
    # Plain milliseconds on the log axis, not powers of ten.
    plain = plt.FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(plain)
    axes.set_title(_title(title, smoke))
    axes.grid(True, which="both", alpha=0.3)
    axes.xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return True


def memory_chart(rss: Series, per_connection: Series, path: Path, smoke: bool) -> bool:
    if not rss.points and not per_connection.points:
        return False
    plt = _pyplot()
    figure, left = plt.subplots(figsize=(8, 4.8), dpi=100)
    right = left.twinx()
    if rss.points:
        xs, ys = zip(*rss.points, strict=True)
        left.plot(xs, ys, "-", marker="o", color="tab:blue", label=rss.label)
    if per_connection.points:
        xs, ys = zip(*per_connection.points, strict=True)
        right.plot(xs, ys, "--", marker="s", color="tab:orange", label=per_connection.label)
    left.set_xlabel("idle SSE connections on one process")
    left.set_ylabel("server RSS (MB)", color="tab:blue")
    right.set_ylabel("KB per connection", color="tab:orange")
    right.set_ylim(bottom=0)
    left.set_ylim(bottom=0)
    left.set_title(_title("Memory against connections", smoke))
    left.grid(True, alpha=0.3)
    left.xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(handles=handles, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
    return True


def render(records: list[dict[str, Any]], into: Path) -> list[Path]:
    """Every chart the records have data for, as `into/scaling-*.png`; the paths written."""
    into.mkdir(parents=True, exist_ok=True)
    smoke = is_smoke(records)
    written = []
    charts: list[tuple[str, Callable[[Path], bool]]] = [
        (
            "scaling-deliveries.png",
            lambda path: latency_chart(
                delivery_series(records),
                "Broadcast delivery latency against offered load",
                "offered deliveries/s",
                path,
                smoke,
            ),
        ),
        (
            "scaling-creates.png",
            lambda path: latency_chart(
                create_series(records),
                "Notification create → event latency against offered load",
                "offered creates/s",
                path,
                smoke,
            ),
        ),
        ("scaling-memory.png", lambda path: memory_chart(*memory_series(records), path, smoke)),
    ]
    for name, draw in charts:
        path = into / name
        if draw(path):
            written.append(path)
        else:
            print(f"plots: no data for {name}", file=sys.stderr)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.plots", description=__doc__.splitlines()[0]
    )
    parser.add_argument("results", type=Path, help="the JSONL file of loadtests.scaling")
    parser.add_argument("--into", type=Path, default=IMAGES, help="directory of the PNGs")
    args = parser.parse_args(argv)
    with args.results.open() as handle:
        records = list(read_records(handle))
    for path in render(records, args.into):
        print(path)


if __name__ == "__main__":
    main()
