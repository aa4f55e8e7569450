"""The root command: one Typer app per group, joined with add_typer.

Each group lives in its own module and imports heavy libraries inside its command
functions, so that `edgetier --help` stays instant.
"""

from __future__ import annotations

from typing import Any

import typer

from edgetier import __version__
from edgetier.cli import (
    _agent,
    _bench,
    _deploy,
    _fleet,
    _hw,
    _model,
    _nodes,
    _pipeline,
    _rollout,
    _serve,
    _simulate,
    _tokens,
    _up,
)
from edgetier.cli._help import HelpGroup


class _Group(HelpGroup):
    """The root group: help as HelpGroup's, and a command that meets a missing optional
    dependency ends with the install command instead of a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        from edgetier.errors import MissingExtraError
        from edgetier.extras import missing_extra

        try:
            return super().invoke(ctx)
        except MissingExtraError as exc:
            error: MissingExtraError | None = exc
        except ModuleNotFoundError as exc:
            error = missing_extra(exc)
            if error is None:
                raise
        assert error is not None
        command = " ".join(filter(None, [ctx.command_path, ctx.invoked_subcommand]))
        typer.echo(f"error: {command}: {error.message}", err=True)
        raise typer.Exit(3)


app = typer.Typer(
    name="edgetier",
    cls=_Group,
    help="AI inference on GPU edge nodes: serve models, run pipelines, benchmark, probe hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help wraps what rich's tables cut (see _help)
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgetier {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """EdgeTier command line."""


app.command("serve")(_serve.serve)
app.command("agent")(_agent.agent)
app.add_typer(_model.app, name="model", cls=HelpGroup)
app.add_typer(_hw.app, name="hw", cls=HelpGroup)
app.add_typer(_bench.app, name="bench", cls=HelpGroup)
app.add_typer(_pipeline.app, name="pipeline", cls=HelpGroup)
app.command("controller")(_fleet.controller)
app.command("up")(_up.up)
app.add_typer(_nodes.app, name="nodes", cls=HelpGroup)
app.add_typer(_deploy.app, name="deploy", cls=HelpGroup)
app.add_typer(_rollout.app, name="rollout", cls=HelpGroup)
app.add_typer(_tokens.app, name="tokens", cls=HelpGroup)
app.add_typer(_simulate.app, name="fleet", cls=HelpGroup)


def main() -> None:
    """Entry point of the `edgetier` script."""
    app()
