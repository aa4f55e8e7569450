"""`edgetier bench compare` end to end on the small demo model: raw ONNX Runtime and EdgeTier."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetier.bench import CompareConfig, ServerSettings, run_compare
from edgetier.bench._report import render_markdown

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::edgetier.bench.SpreadWarning"),
    pytest.mark.filterwarnings("ignore::edgetier.bench.ClientBottleneckWarning"),
]


@pytest.mark.parametrize("interleave", [False, True])
def test_compare_rounds_pair_every_point(interleave: bool, tmp_path: Path) -> None:
    cfg = CompareConfig(
        model="small",
        systems=["onnxruntime", "edgetier"],
        batch_sizes=[1, 4],
        concurrency=[2],
        duration_s=0.5,
        warmup_s=0.2,
        repeats=2,
        settings=ServerSettings(intra_op_threads=1),
        model_cache=tmp_path / "models",
        energy=False,
        progress=False,
        interleave=interleave,
    )
    report = run_compare(cfg)
    points = {(r.system, r.protocol, r.batch_size, r.concurrency) for r in report.results}
    assert points == {
        (system, protocol, b, c)
        for system, protocol in (("onnxruntime", None), ("edgetier", "grpc"))
        for b in (1, 4)
        for c in (2,)
    }
    for r in report.results:
        assert (r.repeats, r.errors) == (2, 0), r
        assert r.requests > 0, r
        assert r.round_throughput_per_s is not None and len(r.round_throughput_per_s) == 2
        assert r.throughput_per_s == pytest.approx(
            sorted(r.round_throughput_per_s)[0] / 2 + sorted(r.round_throughput_per_s)[1] / 2
        )
    mode = "interleaved" if interleave else "one system up at a time"
    assert any(mode in n for n in report.notes)
    assert "× raw" in render_markdown(report)


def test_compare_serves_the_repository_models_own_config(tmp_path: Path) -> None:
    from edgetier.synthetic import build_demo_repository

    repo = tmp_path / "repo"
    build_demo_repository(repo, models=["small"])
    (repo / "small" / "config.yaml").write_text(
        "max_batch_size: 4\ndynamic_batching: {max_queue_delay_microseconds: 1000}\n"
    )
    cfg = CompareConfig(
        model=str(repo / "small"),
        systems=["onnxruntime", "edgetier"],
        batch_sizes=[1, 4],
        concurrency=[1],
        duration_s=0.3,
        warmup_s=0.1,
        energy=False,
        progress=False,
    )
    report = run_compare(cfg)
    assert report.settings["config"] == str(repo / "small" / "config.yaml")
    assert report.settings["max_batch_size"] == {"value": 4, "from": "config.yaml"}
    assert report.settings["max_queue_delay_us"] == {"value": 1000, "from": "config.yaml"}
    assert report.settings["intra_op_spinning"] == {"value": False, "from": "server default"}
    assert {r.provider for r in report.results} == {"CPUExecutionProvider"}
    markdown = render_markdown(report)
    assert "max batch size 4 (config.yaml)" in markdown
    assert "intra-op spinning off (server default)" in markdown
