"""`edgetier rollout`: watch a new version go out batch by batch, pause, resume or undo it.

$ edgetier rollout status
$ edgetier rollout pause traffic
$ edgetier rollout undo traffic
"""

from __future__ import annotations

from typing import Any

import typer

from edgetier.cli._fleet import AS_JSON, CONTROLLER, TOKEN, age, client, console, print_json, table

app = typer.Typer(
    help="Rollouts of new versions: status, pause, resume, undo.", no_args_is_help=True
)


@app.command("status")
def status(
    name: str | None = typer.Argument(None, help="One deployment's rollout [default: all]."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Each deployment's newest rollout: state, batch, nodes updated, what it says."""
    with client(controller, token) as api:
        found = api.get(f"/v1/deployments/{name}/rollout") if name else api.get("/v1/rollouts")
    if as_json:
        print_json(found)
        return
    rollouts: list[dict[str, Any]] = [found] if name else found
    if not rollouts:
        typer.echo("no rollouts (a deployment rolls out when its model or pipeline changes)")
        return
    rows = [
        [
            r["deployment"],
            r["state"] + (f" ({r['reason']})" if r.get("reason") else ""),
            f"{r['from_revision']} -> {r['to_revision']}",
            f"{r['batch']}/{r['batches']}",
            f"{r['nodes_updated']}/{r['nodes_total']}",
            age(r["updated_at"]),
            r["message"],
        ]
        for r in rollouts
    ]
    columns = ["deployment", "state", "revision", "batch", "nodes", "updated", "message"]
    out = console()
    out.print(table(f"{len(rows)} rollout(s)", columns, rows))
    if name:
        out.print(f"from: {found['from']}\nto:   {found['to']}")


def _act(verb: str, name: str, controller: str | None, token: str | None, as_json: bool) -> None:
    with client(controller, token) as api:
        answer = api.post(f"/v1/deployments/{name}/rollout/{verb}")
    if as_json:
        print_json(answer)
    else:
        typer.echo(f"rollout of {name}: {answer['state']}: {answer['message']}")


@app.command("pause")
def pause(
    name: str = typer.Argument(..., help="Deployment name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Hold the rollout on its current batch (the nodes keep what they run)."""
    _act("pause", name, controller, token, as_json)


@app.command("resume")
def resume(
    name: str = typer.Argument(..., help="Deployment name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Go on from the batch it was paused on (its soak starts again)."""
    _act("resume", name, controller, token, as_json)


@app.command("undo")
def undo(
    name: str = typer.Argument(..., help="Deployment name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Put every node back on the previous revision (also after the rollout succeeded)."""
    _act("undo", name, controller, token, as_json)
