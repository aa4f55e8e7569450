"""`edgetier bench` commands: model, server, pipeline, compare, docs.

Heavy imports (onnxruntime, tritonclient, matplotlib) happen inside the commands so that
`edgetier --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from edgetier.bench import BenchReport

app = typer.Typer(
    help="Benchmark the raw engine, a server, a pipeline, or EdgeTier against its peers.",
    no_args_is_help=True,
)

_OUT_HELP = "Base path of the outputs: BASE.json, BASE.md and BASE-*.png."


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{option} must be comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise typer.BadParameter(f"{option} needs at least one value")
    return values


def _floats(items: list[str], option: str) -> list[float]:
    try:
        return [float(v) for item in items for v in item.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{option} must be numbers, got {items!r}") from None


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _finish(report: BenchReport, out: Path, plots: bool) -> None:
    from edgetier.bench import render_markdown, write_outputs

    files = write_outputs(report, out, plots=plots)
    typer.echo(render_markdown(report))
    for path in files:
        typer.echo(f"wrote {path}")


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command("model")
def bench_model(
    path: Path = typer.Argument(..., help="ONNX model file."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma-separated, e.g. 1,8."),
    providers: str = typer.Option(
        "", "--providers", help="tensorrt,cuda,cpu (default: every available one)."
    ),
    precisions: str = typer.Option("fp32", "--precisions", help="fp32,fp16,int8 where available."),
    concurrency: int = typer.Option(1, "--concurrency", help="Threads calling the session."),
    duration_s: float = typer.Option(5.0, "--duration-s", help="Measure for this long."),
    count: int | None = typer.Option(None, "--count", help="Measure this many calls instead."),
    warmup_s: float = typer.Option(1.0, "--warmup-s", help="Warm-up before each measurement."),
    intra_op_threads: int = typer.Option(
        0, "--intra-op-threads", help="0 = ONNX Runtime's default."
    ),
    inter_op_threads: int = typer.Option(0, "--inter-op-threads"),
    repeats: int = typer.Option(1, "--repeats", help="Repeat each point; medians and spread."),
    out: Path = typer.Option(Path("var/bench/model"), "--out", help=_OUT_HELP),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    energy: bool = typer.Option(True, "--energy/--no-energy", help="Measure energy per inference."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Benchmark the raw ONNX Runtime engine: batch, provider and precision sweeps."""
    from edgetier.bench import ModelBenchConfig, run_model_bench
    from edgetier.errors import EdgeTierError

    try:
        cfg = ModelBenchConfig(
            path=path,
            batch_sizes=_ints(batch_sizes, "--batch-sizes"),
            providers=_words(providers) or None,
            precisions=_words(precisions),  # type: ignore[arg-type]
            concurrency=concurrency,
            duration_s=None if count else duration_s,
            count=count,
            warmup_s=warmup_s,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            repeats=repeats,
            energy=energy,
            progress=progress,
        )
        report = run_model_bench(cfg)
    except EdgeTierError as exc:
        raise _fail(exc) from exc
    _finish(report, out, plots)


@app.command("server")
def bench_server(
    url: str = typer.Argument(..., help="grpc://host:port or http://host:port."),
    model: str = typer.Option(..., "--model", help="Model name on the server."),
    version: str = typer.Option("", "--model-version"),
    batch_size: int = typer.Option(1, "--batch-size", help="Rows per request."),
    concurrency: str = typer.Option(
        "1,2,4,8", "--concurrency", help="Closed-loop sweep; '' for none."
    ),
    rate: list[str] = typer.Option(
        [],
        "--rate",
        help="Open-loop offered rate(s) in requests/s, Poisson; repeat or comma-separate.",
    ),
    tensors: str = typer.Option("binary", "--tensors", help="json (HTTP) | binary | shm."),
    duration_s: float = typer.Option(5.0, "--duration-s"),
    count: int | None = typer.Option(None, "--count", help="Closed loop: requests per point."),
    warmup_s: float = typer.Option(1.0, "--warmup-s"),
    repeats: int = typer.Option(1, "--repeats"),
    seed: int = typer.Option(0, "--seed", help="Seed of the open-loop arrival schedule."),
    server_pid: list[int] = typer.Option(
        [], "--server-pid", help="Sample this process's CPU and memory."
    ),
    perf_analyzer: bool = typer.Option(
        False,
        "--perf-analyzer",
        help="Run Triton's perf_analyzer (where on PATH) and read its CSV.",
    ),
    out: Path = typer.Option(Path("var/bench/server"), "--out", help=_OUT_HELP),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    energy: bool = typer.Option(True, "--energy/--no-energy"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Load a KServe v2 server: closed loop (concurrency) and open loop (Poisson rate)."""
    from edgetier.bench import (
        ModelInfo,
        ServerBenchConfig,
        make_report,
        run_perf_analyzer,
        run_server_bench,
        server_provider,
    )
    from edgetier.errors import EdgeTierError

    if tensors not in ("json", "binary", "shm"):
        raise typer.BadParameter(f"--tensors must be json, binary or shm, got {tensors!r}")
    conc = _ints(concurrency, "--concurrency") if concurrency.strip() else []
    rates = _floats(rate, "--rate")
    try:
        if perf_analyzer:
            results = run_perf_analyzer(
                url,
                model,
                batch_size=batch_size,
                concurrency=conc,
                rates=rates,
                tensors=tensors,  # type: ignore[arg-type]
                duration_s=duration_s,
            )
            provider = server_provider(url, model, version) or "unknown"
            results = [r.model_copy(update={"provider": provider}) for r in results]
            report = make_report(
                "server",
                results,
                model=ModelInfo(name=model, sha256="unknown"),
                notes=["measured with perf_analyzer"],
            )
        else:
            cfg = ServerBenchConfig(
                url=url,
                model=model,
                version=version,
                batch_size=batch_size,
                concurrency=conc,
                rates=rates,
                tensors=tensors,  # type: ignore[arg-type]
                duration_s=duration_s,
                count=count,
                warmup_s=warmup_s,
                repeats=repeats,
                seed=seed,
                server_pids=server_pid,
                energy=energy,
                progress=progress,
            )
            report = run_server_bench(cfg)
    except EdgeTierError as exc:
        raise _fail(exc) from exc
    _finish(report, out, plots)


@app.command("pipeline")
def bench_pipeline(
    file: Path = typer.Argument(..., help="Pipeline YAML file."),
    duration_s: float = typer.Option(10.0, "--duration-s"),
    repeats: int = typer.Option(1, "--repeats"),
    out: Path = typer.Option(Path("var/bench/pipeline"), "--out", help=_OUT_HELP),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    energy: bool = typer.Option(True, "--energy/--no-energy"),
) -> None:
    """Run a pipeline: aggregate and per-stream FPS, end-to-end latency p50/p99, drops."""
    from edgetier.bench import PipelineBenchConfig, run_pipeline_bench
    from edgetier.errors import EdgeTierError

    try:
        report = run_pipeline_bench(
            PipelineBenchConfig(path=file, duration_s=duration_s, repeats=repeats, energy=energy)
        )
    except EdgeTierError as exc:
        raise _fail(exc) from exc
    _finish(report, out, plots)


@app.command("compare")
def bench_compare(
    model: str = typer.Argument(
        ..., help="ONNX file, repository model folder, or demo model name."
    ),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes"),
    systems: str = typer.Option("onnxruntime,edgetier,pytriton,ray-serve", "--systems"),
    concurrency: str = typer.Option("1,8", "--concurrency"),
    protocols: str = typer.Option("grpc", "--protocols", help="grpc,http (Ray Serve: http only)."),
    tensors: str = typer.Option("binary", "--tensors", help="json | binary | shm."),
    duration_s: float = typer.Option(5.0, "--duration-s"),
    warmup_s: float = typer.Option(1.0, "--warmup-s"),
    repeats: int = typer.Option(1, "--repeats", help="Rounds over every system; medians."),
    interleave: bool = typer.Option(
        False,
        "--interleave/--one-at-a-time",
        help="Keep every system up and let them take turns point by point in each round.",
    ),
    max_batch_size: int | None = typer.Option(
        None, "--max-batch-size", help="Default: the model's config.yaml, else 8."
    ),
    max_queue_delay_us: int | None = typer.Option(
        None,
        "--max-queue-delay-us",
        help="Turns dynamic batching on. Default: config.yaml, else 2000.",
    ),
    dynamic_batching: bool | None = typer.Option(
        None,
        "--dynamic-batching/--no-dynamic-batching",
        help="Default: config.yaml, else on.",
        show_default=False,
    ),
    intra_op_threads: int | None = typer.Option(
        None,
        "--intra-op-threads",
        help="0 = ONNX Runtime's default. Default: config.yaml, else 0.",
    ),
    inter_op_threads: int | None = typer.Option(
        None, "--inter-op-threads", help="Default: config.yaml, else 0."
    ),
    intra_op_spinning: bool | None = typer.Option(
        None,
        "--intra-op-spinning/--no-intra-op-spinning",
        help="ONNX Runtime's intra-op spinning. Default: config.yaml, else off "
        "(the server's default).",
        show_default=False,
    ),
    provider: str | None = typer.Option(
        None,
        "--provider",
        help="cpu, cuda or tensorrt. Default: config.yaml's first available.",
    ),
    peer_python: Path | None = typer.Option(
        None,
        "--peer-python",
        help="Interpreter with the peers (default: .venv-peers/bin/python if present).",
    ),
    out: Path = typer.Option(Path("var/bench/compare"), "--out", help=_OUT_HELP),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    energy: bool = typer.Option(True, "--energy/--no-energy"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """The same model on raw ONNX Runtime, EdgeTier, PyTriton and Ray Serve: one table.

    Every system gets the model's own settings (its config.yaml, as `edgetier serve` would
    load it) and the server's ONNX Runtime session options; the options below override
    single values, and the report says where each came from.
    """
    from edgetier.bench import CompareConfig, ServerSettings, run_compare
    from edgetier.errors import EdgeTierError

    try:
        cfg = CompareConfig(
            model=model,
            batch_sizes=_ints(batch_sizes, "--batch-sizes"),
            systems=_words(systems),
            concurrency=_ints(concurrency, "--concurrency"),
            protocols=_words(protocols),
            tensors=tensors,  # type: ignore[arg-type]
            duration_s=duration_s,
            warmup_s=warmup_s,
            repeats=repeats,
            settings=ServerSettings(
                max_batch_size=max_batch_size,
                max_queue_delay_us=max_queue_delay_us,
                intra_op_threads=intra_op_threads,
                inter_op_threads=inter_op_threads,
                intra_op_spinning=intra_op_spinning,
                dynamic_batching=dynamic_batching,
                provider=provider,
            ),
            peer_python=peer_python,
            energy=energy,
            progress=progress,
            interleave=interleave,
        )
        report = run_compare(cfg)
    except EdgeTierError as exc:
        raise _fail(exc) from exc
    _finish(report, out, plots)


@app.command("docs")
def bench_docs(
    results: Path = typer.Argument(Path("benchmarks/results"), help="Folder of result JSON files."),
    out: Path = typer.Option(Path("docs/benchmarks.md"), "--out"),
    img_dir: Path = typer.Option(Path("docs/img"), "--img-dir"),
) -> None:
    """Regenerate docs/benchmarks.md and its plots from the result JSON files."""
    from edgetier.bench import build_docs

    for path in build_docs(results, out, img_dir):
        typer.echo(f"wrote {path}")
