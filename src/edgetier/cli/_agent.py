"""`edgetier agent`: the node agent (enrol, heartbeat, desired state, reconcile, outbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgetier.cli._serve import _from_command_line


def agent(
    ctx: typer.Context,
    controller: list[str] | None = typer.Option(
        None,
        "--controller",
        help="The controller's URL, e.g. http://127.0.0.1:8080 (required); its replicas' "
        "URLs: repeat the option or separate them with commas (the agent fails over).",
    ),
    name: str | None = typer.Option(
        None, "--name", help="The node's name, a DNS label (required)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="EDGETIER_ENROL_TOKEN",
        help="One-time enrolment token; needed until the node has enrolled (later starts "
        "reuse the credential kept in the store).",
    ),
    tier: str | None = typer.Option(
        None, "--tier", help="terminal | edge | region | cloud (default: the profile's tier)."
    ),
    profile: str | None = typer.Option(
        None,
        "--profile",
        help="Present this hardware catalog id instead of the probed machine (several "
        "agents on one host); its telemetry is marked simulated.",
    ),
    labels: str | None = typer.Option(None, "--labels", help="Node labels: k=v,k2=v2."),
    port_base: int = typer.Option(
        9000,
        "--port-base",
        help="First port: the server's HTTP (+1 gRPC, +2 metrics), then 10 per pipeline; "
        "agents on one host need bases 100 apart.",
    ),
    store: Path | None = typer.Option(
        None, "--store", help="Local store (default: var/agent/NAME)."
    ),
    heartbeat_s: float = typer.Option(
        5.0, "--heartbeat-s", help="Seconds between heartbeats until the controller sets it."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address the inference server listens on."
    ),
    mqtt_url: str | None = typer.Option(
        None,
        "--mqtt",
        envvar="EDGETIER_MQTT",
        help="MQTT broker of the controller's change notices, "
        "mqtt://[user[:password]@]host[:port] or mqtts://...: desired state is fetched as "
        "soon as a notice comes; the long poll goes on beside it (needs the mqtt extra).",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="A YAML file of agent settings (these options' names with '_', and the "
        "back-off and timeout settings of docs/agent.md); the options given here override it.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error."),
) -> None:
    """Enrol this node with the controller and run what it assigns here, also while the
    controller is unreachable. SIGTERM or Ctrl-C stops the children cleanly."""
    import asyncio
    import logging
    import signal

    from edgetier.agent import (
        EXIT_CREDENTIAL,
        Agent,
        AgentSettings,
        ControllerError,
        CredentialRejectedError,
    )
    from edgetier.config import read_yaml, validate
    from edgetier.errors import ConfigError

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if log_level.lower() != "debug":  # a line per request to the controller is noise
        logging.getLogger("httpx").setLevel(logging.WARNING)
    given: dict[str, Any] = {
        key: value
        for key, value in ctx.params.items()
        if key not in ("config", "log_level") and _from_command_line(ctx, key)
    }
    if "labels" in given:
        given["labels"] = _labels(given["labels"])
    try:
        data: Any = {}
        source = "command line"
        if config is not None:
            data, source = read_yaml(config, what="agent settings"), str(config)
            if not isinstance(data, dict):
                raise ConfigError(f"{config}: the agent settings must be a mapping of fields")
        data.update(given)
        for required in ("controller", "name"):
            if required not in data:
                raise ConfigError(
                    f"command line: --{required}: required (or {required} in --config)"
                )
        flags = {param.name: param.opts[0] for param in ctx.command.params}
        elsewhere = {key: ("command line", flags[key]) for key in given}
        settings = validate(
            AgentSettings, data, source=source, what="agent settings", given_elsewhere=elsewhere
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await Agent(settings).run(stop)

    try:
        code = asyncio.run(main())
    except CredentialRejectedError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(EXIT_CREDENTIAL) from None
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except ControllerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected k=v pairs, got {item!r}", param_hint="--labels")
        labels[key.strip()] = value.strip()
    return labels
