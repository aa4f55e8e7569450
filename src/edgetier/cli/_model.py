"""`edgetier model` commands: list a repository, build the demo one, add FP16/INT8 versions,
push a version to the fleet controller.

$ edgetier model demo var/demo-models
$ edgetier model list var/demo-models
$ edgetier model convert --fp16 var/demo-models/resnet50
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Model repository tools: list, demo, convert --fp16, quantize --int8, push.",
    no_args_is_help=True,
)


def _fail(message: str) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {message}", markup=True
    )
    return typer.Exit(1)


@contextmanager
def _progress(description: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar driven by progress(step, done, total) callbacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgetier.errors import EdgeTierError

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(step: str, done: int, total: int) -> None:
            bar.update(
                task,
                description=f"{description}: {step}",
                completed=done,
                total=total or None,
            )

        try:
            yield update
        except EdgeTierError as exc:
            bar.stop()
            raise _fail(exc.message) from None


@app.command("convert")
def convert(
    model_dir: Path = typer.Argument(..., help="Model directory (holds 1/, 2/, ...)."),
    fp16: bool = typer.Option(False, "--fp16", help="Convert the graph to FP16."),
    from_version: int | None = typer.Option(
        None, "--from-version", help="Version to start from (default: the latest)."
    ),
) -> None:
    """Add a new version in another precision. Inputs and outputs keep their types.

    The new version is added only once it loads.
    """
    if not fp16:
        raise _fail("choose a target precision: --fp16")
    from edgetier.runtime import convert_fp16

    with _progress("FP16") as progress:
        written = convert_fp16(model_dir, from_version=from_version, progress=progress)
    _wrote(written, "FP16")


@app.command("quantize")
def quantize(
    model_dir: Path = typer.Argument(..., help="Model directory (holds 1/, 2/, ...)."),
    int8: bool = typer.Option(False, "--int8", help="Static INT8 quantization (QDQ)."),
    calibration: Path | None = typer.Option(
        None,
        "--calibration",
        help="Directory of calibration samples: .npz keyed by input name, .npy, or images.",
    ),
    from_version: int | None = typer.Option(
        None, "--from-version", help="Version to start from (default: the newest FP32 one)."
    ),
    per_channel: bool = typer.Option(
        False, "--per-channel/--per-tensor", help="Weight scales per output channel or per tensor."
    ),
    max_samples: int | None = typer.Option(
        None, "--max-samples", min=1, help="Use at most this many calibration files."
    ),
) -> None:
    """Add a new version with static INT8 quantization calibrated on sample data.

    Starts from the newest FP32 version (an FP16 one cannot be quantized) unless
    --from-version names one; the new version is added only once it loads.
    """
    if not int8:
        raise _fail("choose a target precision: --int8")
    if calibration is None:
        raise _fail("--calibration DIR is required: static quantization needs sample inputs")
    from edgetier.runtime import quantize_int8

    with _progress("INT8") as progress:
        written = quantize_int8(
            model_dir,
            calibration,
            from_version=from_version,
            per_channel=per_channel,
            max_samples=max_samples,
            progress=progress,
        )
    _wrote(written, "INT8 QDQ")


def _wrote(written: Any, kind: str) -> None:
    """Say what was added and what it started from (the new version loaded once)."""
    typer.echo(
        f"wrote {written.path} (version {written.version}, {kind}) from version "
        f"{written.source} ({written.source_precision.upper()}); it loads"
    )


@app.command("demo")
def demo(
    path: Path = typer.Argument(..., help="Directory to write the demo repository to."),
    model: list[str] | None = typer.Option(
        None, "--model", help="Build only this model (repeatable). Default: all."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild models that are up to date."),
) -> None:
    """Build the demo repository: resnet50, simple, small, identity (random weights)."""
    from edgetier.synthetic import DEMO_MODELS, build_demo_repository

    names = list(model) if model else list(DEMO_MODELS)
    with _progress("demo models") as progress:
        done = 0

        def step(name: str, rebuilt: bool) -> None:
            nonlocal done
            done += 1
            progress(f"{name} {'built' if rebuilt else 'up to date'}", done, len(names))

        progress("building", 0, len(names))
        result = build_demo_repository(path, models=names, force=force, progress=step)
    for name, rebuilt in result.items():
        typer.echo(f"{name}: {'built' if rebuilt else 'up to date'}")
    typer.echo(f"demo repository ready at {path}")


@app.command("list")
def list_models(
    path: Path = typer.Argument(..., help="Model repository."),
    show_config: bool = typer.Option(
        False, "--config", help="Also print each model's full config (YAML)."
    ),
) -> None:
    """List the models of a repository with their versions and configs; exits with 1 when
    a model's config or files are invalid."""
    import yaml
    from rich.console import Console
    from rich.table import Table

    from edgetier.errors import EdgeTierError
    from edgetier.runtime import ModelRepository

    repo = ModelRepository(path)
    try:
        names = repo.models()
    except EdgeTierError as exc:
        raise _fail(exc.message) from None
    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"models in {path}")
    for column in ("model", "versions", "serves", "max batch", "inputs", "outputs", "batching"):
        table.add_column(column)
    configs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            versions = repo.versions(name)
            config = repo.config(name)
            serves = repo.versions_to_load(name)
        except EdgeTierError as exc:
            table.add_row(name, "", "", "", "[red]unavailable (see below)[/]", "", "")
            errors[name] = exc.message
            continue
        configs[name] = config
        batching = config.dynamic_batching
        table.add_row(
            name,
            ", ".join(map(str, versions)),
            ", ".join(map(str, serves)),
            str(config.max_batch_size),
            _tensors(config, config.input),
            _tensors(config, config.output),
            f"delay {batching.max_queue_delay_microseconds} us" if batching else "off",
        )
    console.print(table)
    for name, message in errors.items():
        console.print(f"[red]{name}:[/] {message}", markup=True)
    if show_config:
        for name, config in configs.items():
            console.rule(name)
            text = yaml.safe_dump(
                config.model_dump(exclude_none=True), sort_keys=False, default_flow_style=None
            )
            console.print(text, markup=False)
    if errors:
        raise typer.Exit(1)


def _tensors(config: Any, tensors: Any, shown: int = 3) -> str:
    lines = [
        f"{t.name} {t.datatype}[{','.join(map(str, config.full_shape(t)))}]"
        for t in tensors[:shown]
    ]
    if len(tensors) > shown:
        lines.append(f"... {len(tensors) - shown} more")
    return "\n".join(lines)


def _push_files(source: Path, version: int | None) -> tuple[Path, Path | None]:
    """The model file and config.yaml to push from a file, a version folder or a model
    folder of a repository (<model>/<version>/model.*; the newest version unless named)."""
    if source.is_file():
        return source, None
    if not source.is_dir():
        raise _fail(f"{source}: no such file or directory")
    config = source / "config.yaml"
    versions = sorted((int(p.name), p) for p in source.iterdir() if p.is_dir() and p.name.isdigit())
    folder = source
    if versions:
        chosen = dict(versions).get(version) if version is not None else versions[-1][1]
        folder = chosen or versions[-1][1]
    elif source.parent.joinpath("config.yaml").is_file():
        config = source.parent / "config.yaml"  # a version folder: the config is one up
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.stem == "model")
    if not files:
        raise _fail(f"{folder}: no model file (model.onnx, model.plan, model.tflite)")
    return files[0], config if config.is_file() else None


@app.command("push")
def push(
    source: Path = typer.Argument(..., help="A model file, or a repository's model folder."),
    name: str = typer.Option(..., "--name", help="The model's name on the controller."),
    version: int | None = typer.Option(
        None, "--version", min=1, help="Version number [default: the next one]."
    ),
    bench: Path | None = typer.Option(
        None, "--bench", help="edgetier bench JSON: measured throughput on its hardware."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="config.yaml to send [default: the model folder's]."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32, fp16 or int8 [default: read from the graph]."
    ),
    controller: str | None = typer.Option(
        None,
        "--controller",
        envvar="EDGETIER_CONTROLLER",
        help="Controller URL.",
        show_default=False,
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="EDGETIER_TOKEN", help="Operator token.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Push a model version to the fleet controller (stored by its SHA-256; its cost and
    measured throughput go with it for the scheduler)."""
    from edgetier.cli._fleet import client, print_json

    model_file, found_config = _push_files(source, version)
    config = config or found_config
    files: dict[str, Any] = {"file": (model_file.name, model_file.read_bytes())}
    for key, path in (("config", config), ("bench", bench)):
        if path is not None:
            if not path.is_file():
                raise _fail(f"--{key} {path}: no such file")
            files[key] = (path.name, path.read_bytes())
    form = {
        key: str(value)
        for key, value in (("version", version), ("precision", precision))
        if value is not None
    }
    with client(controller, token) as api:
        pushed = api.post(f"/v1/models/{name}/versions", files=files, data=form)
    if as_json:
        print_json(pushed)
        return
    flops = f", {pushed['flops'] / 1e6:.1f} MFLOP/inference" if pushed.get("flops") else ""
    typer.echo(
        f"{name} version {pushed['version']}: {pushed['digest']} "
        f"({pushed['size_bytes'] / 1e6:.2f} MB, {pushed['precision']}{flops}) from {model_file}"
    )
    for profile, rate in pushed["throughput"].items():
        typer.echo(f"  measured on {profile}: {rate:.1f} inferences/s")
