"""`edgetier hw` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="hw commands.", no_args_is_help=True)
