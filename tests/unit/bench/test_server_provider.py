"""`bench server` reports the execution provider the server names in the model metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetier.bench import BenchReport, ServerBenchConfig, run_server_bench, server_provider
from edgetier.bench._loadgen import served_provider
from edgetier.cli._app import app
from edgetier.testing import RunningServer

pytestmark = pytest.mark.filterwarnings("ignore::edgetier.bench.ClientBottleneckWarning")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_provider_comes_from_the_server(server: RunningServer, protocol: str) -> None:
    address = server.grpc_url if protocol == "grpc" else server.http_url
    cfg = ServerBenchConfig(
        url=f"{protocol}://{address}",
        model="small",
        concurrency=[1],
        duration_s=None,
        count=5,
        warmup_s=0.0,
        energy=False,
        progress=False,
    )
    (row,) = run_server_bench(cfg).results
    assert row.provider == "CPUExecutionProvider"
    assert server_provider(cfg.url, "small") == "CPUExecutionProvider"


def test_bench_server_cli_names_the_provider(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "server"
    args = ["bench", "server", f"grpc://{server.grpc_url}", "--model", "small"]
    args += ["--concurrency", "1", "--count", "5", "--warmup-s", "0", "--no-energy"]
    args += ["--no-progress", "--no-plots", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| CPUExecutionProvider |" in out.with_suffix(".md").read_text()
    assert BenchReport.read(out.with_suffix(".json")).results[0].provider == (
        "CPUExecutionProvider"
    )
    assert "unknown" not in result.output


def test_provider_read_from_metadata_or_config() -> None:
    http_meta = {"parameters": {"execution_provider": "CUDAExecutionProvider"}}
    assert served_provider(http_meta, None) == "CUDAExecutionProvider"
    grpc_config = {"parameters": {"execution_provider": {"string_value": "CPUExecutionProvider"}}}
    assert served_provider({}, grpc_config) == "CPUExecutionProvider"
    assert served_provider({"name": "m"}, {"max_batch_size": 8}) is None  # e.g. Triton
