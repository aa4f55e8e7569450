"""The fleet's commands share these: the controller's address and token, errors as one
line, JSON or tables; and `edgetier controller` itself.

$ edgetier controller --data-dir var/controller --port 8080
$ edgetier nodes ls --controller http://10.0.0.5:8080 --token "$EDGETIER_TOKEN"
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

CONTROLLER = typer.Option(
    None,
    "--controller",
    envvar="EDGETIER_CONTROLLER",
    help="Controller URL [default: http://127.0.0.1:8080].",
    show_default=False,
)
TOKEN = typer.Option(
    None,
    "--token",
    envvar="EDGETIER_TOKEN",
    help="Operator token [default: read var/controller/operator-token].",
    show_default=False,
)
AS_JSON = typer.Option(False, "--json", help="Print JSON instead of a table.")


def fail(message: str, code: int = 1) -> typer.Exit:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", markup=True
    )
    return typer.Exit(code)


@contextmanager
def client(controller: str | None, token: str | None) -> Iterator[Any]:
    """A ControllerClient; an EdgeTier error ends the command with its message."""
    from edgetier.control import ControllerClient
    from edgetier.errors import EdgeTierError

    try:
        with ControllerClient(controller, token) as api:
            yield api
    except EdgeTierError as exc:
        raise fail(exc.message) from None


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> Any:
    from rich.table import Table

    shown = Table(title=title)
    for column in columns:
        shown.add_column(column, overflow="fold")
    for row in rows:
        shown.add_row(*row)
    return shown


def age(text: str | None, now: datetime | None = None) -> str:
    """'12 s ago' for an ISO time; '-' for none."""
    if not text:
        return "-"
    seconds = ((now or datetime.now(UTC)) - datetime.fromisoformat(text)).total_seconds()
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def conditions_text(conditions: list[dict[str, Any]]) -> str:
    return ", ".join(c["type"] for c in conditions if c.get("status") == "True") or "-"


def check_mqtt_option(value: str | None) -> str | None:
    """``--mqtt``: a broker URL (checked here, so that the error names the option)."""
    from edgetier.control import check_mqtt_url

    try:
        return check_mqtt_url(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def controller(
    data_dir: Path = typer.Option(
        Path("var/controller"), "--data-dir", help="Database, artifacts and operator token."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535),
    node_timeout_s: float = typer.Option(
        15.0, "--node-timeout-s", min=0.1, help="A node without heartbeat this long: Offline."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="SQLAlchemy URL [default: SQLite in the data dir]; postgresql://USER:PASSWORD@"
        "HOST/DB for several replicas on one database (docs/fleet.md).",
    ),
    raw_retention_s: float = typer.Option(
        3600.0, "--raw-retention-s", min=0, help="Keep raw telemetry samples this long."
    ),
    downsampled_retention_s: float = typer.Option(
        86400.0, "--downsampled-retention-s", min=0, help="Keep per-minute means this long."
    ),
    mqtt: str | None = typer.Option(
        None,
        "--mqtt",
        envvar="EDGETIER_MQTT",
        callback=check_mqtt_option,
        help="MQTT broker for change notices, mqtt://[user[:password]@]host[:port] or "
        "mqtts://...: agents started with --mqtt converge at once (settings field mqtt_url).",
    ),
) -> None:
    """Run the fleet controller: its API (docs at /docs), database and reconcile loop.

    Needs the control extra: pip install 'edgetier[control]'.
    """
    from edgetier.control import Controller, ControllerSettings
    from edgetier.errors import EdgeTierError, MissingExtraError

    try:
        settings = ControllerSettings(
            data_dir=data_dir,
            host=host,
            port=port,
            node_timeout_s=node_timeout_s,
            database_url=database_url,
            raw_retention_s=raw_retention_s,
            downsampled_retention_s=downsampled_retention_s,
            mqtt_url=mqtt,
        )
        server = Controller(settings)
        typer.echo(server.banner(), err=True)
        server.run()
    except MissingExtraError:
        raise  # the CLI names the extra to install (exit status 3)
    except EdgeTierError as exc:
        raise fail(exc.message) from None
