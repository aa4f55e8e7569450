"""`edgetier deploy`: apply deployment files, watch their status, ask why they are where
they are.

$ edgetier deploy apply -f examples/fleet/traffic.yaml
$ edgetier deploy status
$ edgetier deploy explain traffic
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgetier.cli._fleet import (
    AS_JSON,
    CONTROLLER,
    TOKEN,
    client,
    conditions_text,
    console,
    fail,
    print_json,
    table,
)

app = typer.Typer(
    help="Deployments: apply a file, status, explain placements, delete.", no_args_is_help=True
)


def _pipeline_file(deployment_file: Path, name: str) -> Path | None:
    """A pipeline file named by a deployment: beside the deployment file, else from here."""
    for candidate in (deployment_file.parent / name, Path(name)):
        if candidate.is_file():
            return candidate
    return None


@app.command("apply")
def apply(
    file: Path = typer.Option(..., "-f", "--file", help="Deployment YAML (edgetier/v1)."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Create or update a deployment from a file; its pipeline file (spec.pipeline.file,
    read beside the deployment file) is sent with it. Every error at once, with its field."""
    from edgetier.config import read_yaml
    from edgetier.control import Deployment, load_resource
    from edgetier.errors import ConfigError

    try:
        deployment = load_resource(file, Deployment)
        body = read_yaml(file, what="Deployment file")
        pipeline = deployment.spec.pipeline
        content = path = None
        if pipeline is not None and pipeline.file:
            path = _pipeline_file(file, pipeline.file)
            if path is not None:
                from edgetier.pipeline import load_pipeline

                load_pipeline(path)  # refused here, with its own field paths, if invalid
                content = read_yaml(path, what="pipeline file")
    except ConfigError as exc:
        raise fail(exc.message) from None
    with client(controller, token) as api:
        if pipeline is not None and content is not None:
            api.put(f"/v1/pipelines/{pipeline.name}", json={"file": str(path), "content": content})
        applied = api.put(f"/v1/deployments/{deployment.name}", json=body)
    if as_json:
        print_json(applied)
        return
    typer.echo(
        f"deployment {deployment.name} applied (generation {applied['metadata']['generation']})"
    )
    _print_placements(applied)


def _print_placements(deployment: dict[str, Any]) -> None:
    status = deployment["status"]
    for p in status["placements"]:
        share = f", {p['streams']} stream(s)" if p["streams"] else ""
        typer.echo(f"  replica {p['replica']} on {p['node']}{share}: {p['reason']}")
    placed = next((c for c in status["conditions"] if c["type"] == "Placed"), None)
    if placed is not None and placed["status"] != "True":
        typer.echo(f"  not fully placed: {placed['message']} (see: edgetier deploy explain)")


@app.command("status")
def status(
    name: str | None = typer.Argument(None, help="One deployment [default: all]."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Deployments with their generation, placements and conditions."""
    with client(controller, token) as api:
        found = api.get(f"/v1/deployments/{name}") if name else api.get("/v1/deployments")
    if as_json:
        print_json(found)
        return
    deployments = [found] if name else found
    rows = []
    for d in deployments:
        spec, st = d["spec"], d["status"]
        what = spec.get("model") or spec.get("pipeline") or {}
        rows.append(
            [
                d["metadata"]["name"],
                ("model " if spec.get("model") else "pipeline ") + what.get("name", "?"),
                f"{st['observedGeneration']}/{d['metadata']['generation']}",
                ", ".join(
                    p["node"] + (f" ({p['streams']})" if p["streams"] else "")
                    for p in st["placements"]
                )
                or "-",
                conditions_text(st["conditions"]),
            ]
        )
    columns = ["deployment", "runs", "gen seen/want", "placements (streams)", "conditions"]
    out = console()
    out.print(table(f"{len(rows)} deployment(s)", columns, rows))
    if name:
        out.print(
            table(
                "conditions",
                ["type", "status", "reason", "message"],
                [
                    [c["type"], c["status"], c["reason"], c["message"]]
                    for c in found["status"]["conditions"]
                ],
            )
        )


@app.command("explain")
def explain(
    name: str = typer.Argument(..., help="Deployment name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Why the deployment is where it is: every node considered, rejected (why) or ranked."""
    with client(controller, token) as api:
        decision = api.get(f"/v1/deployments/{name}/explain")
    if as_json:
        print_json(decision)
        return
    typer.echo(decision["explanation"] or f"deployment {name} has not been scheduled yet")
    typer.echo(f"(decided at {decision['decided_at']} for generation {decision['generation']})")


@app.command("delete")
def delete(
    name: str = typer.Argument(..., help="Deployment name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Delete a deployment; its nodes stop what it ran."""
    with client(controller, token) as api:
        answer = api.delete(f"/v1/deployments/{name}")
    if as_json:
        print_json(answer)
    else:
        typer.echo(f"deployment {name} deleted")
