"""`edgetier serve`: the inference node."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    model_repository: Path = typer.Option(..., "--model-repository", help="Model repository."),
) -> None:
    """Serve the models of a repository over KServe v2 HTTP and gRPC."""
    raise typer.Exit(1)
