"""`edgetier serve`: the inference node (KServe v2 over HTTP and gRPC, Prometheus metrics)."""

from __future__ import annotations

from pathlib import Path

import typer

_MODES = ("none", "poll", "explicit")


def serve(
    model_repository: Path = typer.Option(
        ..., "--model-repository", help="Model repository: <repo>/<model>/<version>/model.onnx."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP port (0 = any free port)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port (0 = any free port)."),
    metrics_port: int = typer.Option(
        8002, "--metrics-port", help="Prometheus port (0 = any free port, -1 = off)."
    ),
    model_control_mode: str = typer.Option(
        "none", "--model-control-mode", help="none | poll | explicit (as Triton)."
    ),
    load_model: list[str] = typer.Option(
        [], "--load-model", help="Model to load at start in explicit mode ('*' = all); repeat."
    ),
    repository_poll_secs: float = typer.Option(
        15.0, "--repository-poll-secs", help="Seconds between repository scans in poll mode."
    ),
    max_request_size_bytes: int = typer.Option(
        64 * 1024 * 1024, "--max-request-size-bytes", help="Largest request body accepted."
    ),
    drain_timeout_s: float = typer.Option(
        30.0, "--drain-timeout-s", help="On SIGTERM, how long to wait for requests in flight."
    ),
    log_format: str = typer.Option("text", "--log-format", help="text | json (JSON lines)."),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error."),
    print_examples: bool = typer.Option(
        False,
        "--print-examples",
        help="Once ready, print a curl, a tritonclient snippet and a load-test line to try.",
    ),
) -> None:
    """Serve the models of a repository over KServe v2 HTTP and gRPC."""
    from pydantic import ValidationError

    from edgetier.server import ServerSettings

    if model_control_mode not in _MODES:
        raise typer.BadParameter(
            f"must be one of {', '.join(_MODES)}, got {model_control_mode!r}",
            param_hint="--model-control-mode",
        )
    if not model_repository.is_dir():
        raise typer.BadParameter(
            f"{model_repository} is not a directory", param_hint="--model-repository"
        )
    try:
        settings = ServerSettings(
            model_repository=model_repository,
            host=host,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=None if metrics_port < 0 else metrics_port,
            model_control_mode=model_control_mode,  # type: ignore[arg-type]
            load_models=load_model,
            repository_poll_secs=repository_poll_secs,
            max_request_size_bytes=max_request_size_bytes,
            log_format=log_format,  # type: ignore[arg-type]
            log_level=log_level,  # type: ignore[arg-type]
            drain_timeout_s=drain_timeout_s,
        )
    except ValidationError as exc:
        typer.echo(f"error: invalid option: {exc}", err=True)
        raise typer.Exit(2) from None
    from edgetier.server._run import run_until_signal

    raise typer.Exit(run_until_signal(settings, print_examples=print_examples))
