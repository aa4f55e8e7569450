"""`edgetier serve`: the inference node (KServe v2 over HTTP and gRPC, Prometheus metrics)."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    ctx: typer.Context,
    model_repository: Path | None = typer.Option(
        None,
        "--model-repository",
        help="Model repository: <repo>/<model>/<version>/model.onnx (required here or in "
        "--config).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="A YAML file of these options (their names with '_': http_port: 9000); the "
        "options given here override it.",
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
        30.0,
        "--drain-timeout-s",
        help="On SIGTERM, how long requests in flight may take (readiness false, new "
        "requests 503).",
    ),
    strict_readiness: bool = typer.Option(
        True,
        "--strict-readiness/--no-strict-readiness",
        help="Ready only while every model that should be loaded is ready (as Triton); "
        "--no-strict-readiness: ready whenever the server is up.",
    ),
    http_header_timeout_s: float = typer.Option(
        10.0, "--http-header-timeout-s", help="Time for a request line and headers (else 408)."
    ),
    http_body_timeout_s: float = typer.Option(
        10.0, "--http-body-timeout-s", help="Longest pause inside a request body (else 408)."
    ),
    http_keepalive_timeout_s: float = typer.Option(
        75.0, "--http-keepalive-timeout-s", help="Idle keep-alive connections close after this."
    ),
    http_max_header_bytes: int = typer.Option(
        65536, "--http-max-header-bytes", help="Largest request line plus headers (else 431)."
    ),
    http_max_connections: int = typer.Option(
        1024, "--http-max-connections", help="Open HTTP connections (more: 503 and close)."
    ),
    grpc_max_connections: int = typer.Option(
        1024, "--grpc-max-connections", help="Open gRPC connections (more are refused)."
    ),
    grpc_max_concurrent_streams: int = typer.Option(
        1024, "--grpc-max-concurrent-streams", help="Calls in flight per gRPC connection."
    ),
    grpc_max_connection_idle_s: float = typer.Option(
        300.0,
        "--grpc-max-connection-idle-s",
        help="Close gRPC connections idle this long (0 = never).",
    ),
    grpc_max_connection_age_s: float = typer.Option(
        0.0, "--grpc-max-connection-age-s", help="Close gRPC connections this old (0 = never)."
    ),
    grpc_max_connection_age_grace_s: float = typer.Option(
        30.0, "--grpc-max-connection-age-grace-s", help="More time for calls at that age."
    ),
    grpc_handshake_timeout_s: float = typer.Option(
        10.0, "--grpc-handshake-timeout-s", help="Time for a gRPC connection's handshake."
    ),
    grpc_keepalive_time_s: float = typer.Option(
        7200.0, "--grpc-keepalive-time-s", help="Ping a gRPC connection idle this long."
    ),
    grpc_keepalive_timeout_s: float = typer.Option(
        20.0, "--grpc-keepalive-timeout-s", help="Close it when the ping is unanswered this long."
    ),
    grpc_min_ping_interval_s: float = typer.Option(
        300.0,
        "--grpc-min-ping-interval-s",
        help="Clients may ping no more often without calls (else GOAWAY).",
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
    from edgetier.config import read_yaml, validate
    from edgetier.errors import ConfigError
    from edgetier.server import ServerSettings

    given = {
        name: value
        for name, value in ctx.params.items()
        if name not in _NOT_SETTINGS and _from_command_line(ctx, name)
    }
    if "metrics_port" in given and given["metrics_port"] < 0:
        given["metrics_port"] = None
    if "load_model" in given:
        given["load_models"] = given.pop("load_model")
    data: dict[str, object] = {}
    source = "command line"
    try:
        if config is not None:
            loaded = read_yaml(config, what="serve options")
            if not isinstance(loaded, dict):
                raise ConfigError(f"{config}: the serve options must be a mapping of fields")
            data, source = loaded, str(config)
        data.update(given)
        if "model_repository" not in data:
            raise ConfigError(
                "command line: --model-repository: required (or model_repository in --config)"
            )
        elsewhere = {name: ("command line", _flag(name)) for name in given}
        settings = validate(
            ServerSettings, data, source=source, what="serve options", given_elsewhere=elsewhere
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.model_repository.is_dir():
        raise typer.BadParameter(
            f"{settings.model_repository} is not a directory", param_hint="--model-repository"
        )
    from edgetier.server import run_until_signal

    raise typer.Exit(run_until_signal(settings, print_examples=print_examples))


_NOT_SETTINGS = frozenset({"config", "print_examples"})


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _flag(field: str) -> str:
    return "--" + {"load_models": "load_model"}.get(field, field).replace("_", "-")
