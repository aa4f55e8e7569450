"""`edgetier tokens`: enrolment tokens for agents, operator tokens, revocation.

$ edgetier tokens create --expires-in-s 3600
$ edgetier tokens ls
$ edgetier tokens revoke 3f2a9c01be44
"""

from __future__ import annotations

import typer

from edgetier.cli._fleet import AS_JSON, CONTROLLER, TOKEN, age, client, console, print_json, table

app = typer.Typer(help="Tokens: enrol agents, add operators, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    kind: str = typer.Option("enrol", "--kind", help="enrol (for an agent) or operator."),
    expires_in_s: float | None = typer.Option(
        None, "--expires-in-s", min=1, help="[default: enrol 1 day, operator never]"
    ),
    description: str = typer.Option("", "--description", help="What it is for."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Create a token; its text is printed once (give it to `edgetier agent --token`)."""
    body = {"kind": kind, "expires_in_s": expires_in_s, "description": description}
    with client(controller, token) as api:
        made = api.post("/v1/tokens", json=body)
    if as_json:
        print_json(made)
        return
    expiry = made["expires_at"] or "never"
    typer.echo(made["token"])
    typer.echo(f"({made['kind']} token {made['id']}, expires {expiry})", err=True)


@app.command("ls")
def ls(
    controller: str | None = CONTROLLER, token: str | None = TOKEN, as_json: bool = AS_JSON
) -> None:
    """List tokens (never their secrets) with their state."""
    with client(controller, token) as api:
        tokens = api.get("/v1/tokens")
    if as_json:
        print_json(tokens)
        return
    rows = [
        [
            t["id"],
            t["kind"],
            t["state"],
            t["node"] or "-",
            age(t["created_at"]),
            t["expires_at"] or "never",
            t["description"],
        ]
        for t in tokens
    ]
    columns = ["id", "kind", "state", "node", "created", "expires", "description"]
    console().print(table("tokens", columns, rows))


@app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., help="The token's id (edgetier tokens ls)."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Revoke any token: an operator's, an enrolment token or a node credential."""
    with client(controller, token) as api:
        revoked = api.delete(f"/v1/tokens/{token_id}")
    if as_json:
        print_json(revoked)
    else:
        typer.echo(f"revoked {revoked['kind']} token {revoked['id']}")
