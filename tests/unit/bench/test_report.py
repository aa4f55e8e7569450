from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgetier.bench import (
    BenchReport,
    build_docs,
    parse_perf_analyzer_csv,
    render_markdown,
    write_outputs,
)
from edgetier.bench._meta import make_report
from edgetier.bench._schema import ModelInfo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESULT_KEYS = {
    "system",
    "protocol",
    "tensors",
    "provider",
    "precision",
    "batch_size",
    "concurrency",
    "offered_rate_per_s",
    "throughput_per_s",
    "latency_ms",
    "cpu_percent",
    "client_cpu_percent",
    "gpu_util_percent",
    "peak_memory_bytes",
    "energy_j_per_inference",
    "energy_source",
    "energy_estimated",
    "repeats",
    "spread_pct",
}


@pytest.fixture
def report(make_result: Any) -> BenchReport:
    rows = [
        make_result(
            100.0 * c,
            concurrency=c,
            seed=c,
            protocol="grpc",
            tensors="binary",
            energy_j_per_inference=0.2 / c,
            energy_source="estimate:cpu-x86",
            energy_estimated=True,
        )
        for c in (1, 2, 4)
    ]
    rows += [make_result(250.0, concurrency=c, seed=10 + c, system="onnxruntime") for c in (1, 2)]
    rows += [
        make_result(
            r * 0.98,
            concurrency=None,
            offered_rate_per_s=r,
            seed=20 + int(r),
            protocol="http",
            tensors="json",
        )
        for r in (50.0, 100.0)
    ]
    return make_report(
        "compare",
        rows,
        model=ModelInfo(name="tiny", sha256="0" * 64),
        command="edgetier bench compare tiny",
    )


def test_json_has_the_documented_keys_and_round_trips(report: BenchReport, tmp_path: Path) -> None:
    path = report.write(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "edgetier.bench/1"
    assert {"kind", "date", "command", "versions", "hardware", "model", "results"} <= set(data)
    assert {"id", "cpu", "cores", "memory_bytes", "gpus", "profile"} <= set(data["hardware"])
    assert set(data["results"][0]) >= RESULT_KEYS
    assert set(data["results"][0]["latency_ms"]) == {"mean", "p50", "p90", "p95", "p99", "max"}
    assert BenchReport.read(path) == report


def test_markdown_table_ratio_and_estimated_label(report: BenchReport) -> None:
    md = render_markdown(report)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + len(report.results)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert "× raw" in header and "p99 ms" in header
    first = dict(zip(header, [c.strip() for c in lines[2].strip("|").split("|")], strict=True))
    assert first["system"] == "edgetier"
    assert first["× raw"] == "0.40"  # 100 over raw's best at batch 1 (250)
    assert "estimated" in first["J/inference"]
    assert "estimated" in md.split("\n| ")[-1] or "*estimated*" in md
    assert report.command in md


def test_outputs_written(report: BenchReport, tmp_path: Path) -> None:
    files = write_outputs(report, tmp_path / "out" / "run")
    names = {f.name for f in files}
    assert {
        "run.json",
        "run.md",
        "run-throughput.png",
        "run-latency.png",
        "run-energy.png",
    } <= names
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == PNG_MAGIC


def test_build_docs(report: BenchReport, tmp_path: Path) -> None:
    results = tmp_path / "results"
    report.write(results / "compare_small.json")
    out = tmp_path / "docs" / "benchmarks.md"
    files = build_docs(results, out, tmp_path / "docs" / "img")
    text = out.read_text()
    assert "Small model" in text and "make bench-docs" in text
    assert "(img/compare_small-throughput.png)" in text
    assert all(f.exists() for f in files)


def test_perf_analyzer_csv_fixture() -> None:
    text = (Path(__file__).parent / "fixtures" / "perf_analyzer_concurrency.csv").read_text()
    rows = parse_perf_analyzer_csv(
        text, system="edgetier", protocol="grpc", tensors="binary", batch_size=1
    )
    assert [r.concurrency for r in rows] == [1, 4]
    assert rows[1].throughput_per_s == pytest.approx(3102.2)
    assert rows[0].latency_ms.p99 == pytest.approx(1.104)
    assert rows[0].latency_ms.max is None


def test_pipeline_report_with_energy_writes_its_plot(make_result: Any, tmp_path: Path) -> None:
    row = make_result(
        6.0,
        concurrency=None,
        system="edgetier-pipeline",
        energy_j_per_inference=1.4,
        energy_source="estimate:cpu-x86",
        energy_estimated=True,
    )
    report = make_report("pipeline", [row], model=ModelInfo(name="p", sha256="0" * 64), command="x")
    files = write_outputs(report, tmp_path / "pipe")
    assert (tmp_path / "pipe-energy.png") in files


def test_build_docs_skips_other_json(report: BenchReport, tmp_path: Path) -> None:
    results = tmp_path / "results"
    report.write(results / "compare_small.json")
    (results / "pipeline-quality.json").write_text('{"map50": 0.9}')
    build_docs(results, tmp_path / "benchmarks.md", tmp_path / "img")
    assert "pipeline-quality" not in (tmp_path / "benchmarks.md").read_text()


def test_ratio_pairs_rounds_when_both_sides_have_them(make_result: Any) -> None:
    from edgetier.bench._report import paired_p50_difference_ms, paired_ratio

    # The machine slows down round by round; each round the server does 0.96 of raw.
    raw = make_result(
        90.0,
        system="onnxruntime",
        round_throughput_per_s=[100.0, 90.0, 60.0],
        round_p50_ms=[10.0, 11.0, 16.0],
    )
    server = make_result(
        86.4, round_throughput_per_s=[96.0, 86.4, 57.6], round_p50_ms=[10.5, 11.5, 16.5]
    )
    assert paired_ratio(server, raw) == pytest.approx(0.96)
    assert paired_p50_difference_ms(server, raw) == pytest.approx(0.5)
    # Without rounds on both sides: the ratio of the medians.
    alone = make_result(81.0)
    assert paired_ratio(alone, raw) == pytest.approx(0.9)
    assert paired_p50_difference_ms(alone, raw) == pytest.approx(
        alone.latency_ms.p50 - raw.latency_ms.p50
    )


def test_compare_rounds_alternate_their_order() -> None:
    from edgetier.bench._compare import _round_order

    systems = ["onnxruntime", "edgetier", "pytriton"]
    assert _round_order(systems, 0) == systems
    assert _round_order(systems, 1) == systems[::-1]
    assert _round_order(systems, 2) == systems
