"""`edgetier pipeline` commands: validate, run and graph a pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Video analytics pipelines declared in YAML.", no_args_is_help=True)


def _load(path: Path) -> Any:
    from edgetier.errors import ConfigError
    from edgetier.pipeline import load_pipeline

    try:
        return load_pipeline(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="Pipeline YAML file.")) -> None:
    """Check a pipeline file against the schema and that its input files exist; errors name
    the field and what is allowed."""
    config = _load(file)
    problems = config.problems(file.parent)
    if problems:
        typer.echo(f"{file}: {len(problems)} source(s) cannot be read", err=True)
        for problem in problems:
            typer.echo(f"  {file}: {problem}", err=True)
        raise typer.Exit(2)
    streams = sum(getattr(s, "count", 1) for s in config.sources)
    typer.echo(
        f"{file}: valid: pipeline {config.name!r}, {streams} stream(s), "
        f"{len(config.stages)} stage(s), {len(config.sinks)} sink(s)"
    )


@app.command("graph")
def graph(
    file: Path = typer.Argument(..., help="Pipeline YAML file."),
    fmt: str = typer.Option("text", "--format", help="text or dot (Graphviz)."),
) -> None:
    """Print sources -> stages -> sinks as text or Graphviz dot."""
    from edgetier.pipeline import graph_dot, graph_text

    if fmt not in ("text", "dot"):
        typer.echo(f"--format must be text or dot, got {fmt!r}", err=True)
        raise typer.Exit(2)
    config = _load(file)
    typer.echo(graph_dot(config) if fmt == "dot" else graph_text(config))


@app.command("run")
def run(
    file: Path = typer.Argument(..., help="Pipeline YAML file."),
    duration_s: float | None = typer.Option(None, "--duration-s", help="Stop after this long."),
    frames: int | None = typer.Option(None, "--frames", help="Stop each stream after N frames."),
    state_dir: Path | None = typer.Option(
        None,
        "--state-dir",
        help="Where sinks keep state (MQTT outbox); default var/pipelines/NAME.",
    ),
    progress_interval_s: float = typer.Option(2.0, "--progress-interval-s", min=0.1),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run a pipeline until its sources end, --duration-s passes or Ctrl-C."""
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    handler = RichHandler(console=console, show_path=False)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(log_level.upper())
    try:
        _run(file, duration_s, frames, state_dir, progress_interval_s, console)
    finally:
        root.removeHandler(handler)


def _run(
    file: Path,
    duration_s: float | None,
    frames: int | None,
    state_dir: Path | None,
    progress_interval_s: float,
    console: Any,
) -> None:
    import asyncio
    import signal

    from edgetier.errors import EdgeTierError
    from edgetier.pipeline import Pipeline

    config = _load(file)
    problems = config.problems(file.parent)
    if problems:
        for problem in problems:
            typer.echo(f"{file}: {problem}", err=True)
        raise typer.Exit(2)
    try:
        pipeline = Pipeline(config, base_dir=file.parent, state_dir=state_dir)
    except EdgeTierError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(2) from None

    def show(stats: dict[str, Any]) -> None:
        parts = []
        for sid, st in stats.items():
            p50 = st.latency_ms(50)
            lat = f" p50 {p50:.0f} ms" if p50 is not None else ""
            err = f" errors {st.errors}" if st.errors else ""
            parts.append(
                f"{sid}: {st.fps:.1f} fps, {st.frames_out} frames, {st.dropped} dropped{lat}{err}"
            )
        total = sum(st.fps for st in stats.values())
        console.print(f"[bold]{total:.1f} fps total[/bold] | " + " | ".join(parts))

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, pipeline.stop)
        return await pipeline.run(
            duration_s=duration_s,
            max_frames=frames,
            progress=show,
            progress_interval_s=progress_interval_s,
        )

    try:
        stats = asyncio.run(main())
    except EdgeTierError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    for sid, st in stats.items():
        p50, p99 = st.latency_ms(50), st.latency_ms(99)
        lat = (
            f", latency p50 {p50:.0f} ms p99 {p99:.0f} ms"
            if p50 is not None and p99 is not None
            else ""
        )
        err = f", last error: {st.last_error}" if st.last_error else ""
        console.print(f"{sid}: {st.frames_out} frames, {st.dropped} dropped{lat}{err}")
    failed = {sid: st.failed for sid, st in stats.items() if st.failed}
    if failed:
        for sid, reason in failed.items():
            typer.echo(f"{file}: stream {sid} failed: {reason}", err=True)
        raise typer.Exit(1)
