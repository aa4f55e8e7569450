"""`edgetier nodes`: the fleet's nodes, their state, drain and uncordon.

$ edgetier nodes ls
$ edgetier nodes show edge-1 --json
$ edgetier nodes drain edge-1
"""

from __future__ import annotations

from typing import Any

import typer

from edgetier.cli._fleet import (
    AS_JSON,
    CONTROLLER,
    TOKEN,
    age,
    client,
    conditions_text,
    console,
    print_json,
    table,
)

app = typer.Typer(help="The fleet's nodes: list, show, drain, uncordon.", no_args_is_help=True)


def _figure(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def _state(node: dict[str, Any]) -> str:
    state = conditions_text(node["status"]["conditions"])
    return state + (", drained" if node["spec"]["unschedulable"] else "")


@app.command("ls")
def ls(
    controller: str | None = CONTROLLER, token: str | None = TOKEN, as_json: bool = AS_JSON
) -> None:
    """Every node: tier, profile, state, last heartbeat, telemetry, deployments."""
    with client(controller, token) as api:
        nodes = api.get("/v1/nodes")
    if as_json:
        print_json(nodes)
        return
    rows = []
    for node in nodes:
        status, telemetry = node["status"], node["status"]["telemetry"]
        rows.append(
            [
                node["metadata"]["name"],
                node["spec"]["tier"],
                node["spec"]["profile"],
                _state(node),
                age(status["last_heartbeat"]),
                _figure(telemetry.get("utilisation"), "{:.0%}"),
                _figure(telemetry.get("temperature_c"), "{:.0f} C"),
                _figure(telemetry.get("power_w"), "{:.1f} W"),
                ", ".join(status["placements"]) or "-",
                f"{status['reported_generation']}/{status['desired_generation']}",
            ]
        )
    columns = ["node", "tier", "profile", "state", "heartbeat", "util", "temp", "power"]
    columns += ["deployments", "gen run/want"]
    console().print(table(f"{len(nodes)} node(s)", columns, rows))


@app.command("show")
def show(
    name: str = typer.Argument(..., help="Node name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """One node: spec, conditions with reasons, workloads, desired assignments."""
    with client(controller, token) as api:
        node = api.get(f"/v1/nodes/{name}")
    if as_json:
        print_json(node)
        return
    out = console()
    spec, status = node["spec"], node["status"]
    labels = ", ".join(f"{k}={v}" for k, v in node["metadata"]["labels"].items()) or "-"
    facts = [
        ["tier / profile", f"{spec['tier']} / {spec['profile']}"],
        ["labels", labels],
        ["schedulable", "no (drained)" if spec["unschedulable"] else "yes"],
        ["last heartbeat", age(status["last_heartbeat"])],
        [
            "generation",
            f"runs {status['reported_generation']}, wanted {status['desired_generation']}",
        ],
        ["outbox pending", str(status["outbox_pending"])],
    ]
    out.print(table(f"node {name}", ["", ""], facts))
    out.print(
        table(
            "conditions",
            ["type", "status", "reason", "message"],
            [[c["type"], c["status"], c["reason"], c["message"]] for c in status["conditions"]],
        )
    )
    assignments = [
        [
            a["deployment"],
            a["kind"],
            f"{a['model']['model']}/{a['model']['version']}" if a.get("model") else "-",
            str(a["streams"]),
            str(a["generation"]),
        ]
        for a in node["desired"]
    ]
    columns = ["deployment", "kind", "model", "streams", "generation"]
    out.print(table("desired", columns, assignments))
    workloads = [
        [w["deployment"], w["phase"], str(w["generation"]), w.get("endpoint") or "-"]
        for w in status["workloads"]
    ]
    out.print(table("running", ["deployment", "phase", "generation", "endpoint"], workloads))


def _cordon(
    name: str, action: str, controller: str | None, token: str | None, as_json: bool
) -> None:
    with client(controller, token) as api:
        before = {d["metadata"]["name"] for d in api.get("/v1/deployments")}
        node = api.post(f"/v1/nodes/{name}/{action}")
        placements = {
            d["metadata"]["name"]: [p["node"] for p in d["status"]["placements"]]
            for d in api.get("/v1/deployments")
            if d["metadata"]["name"] in before
        }
    if as_json:
        print_json(node)
        return
    state = "drained: nothing new lands here" if action == "drain" else "schedulable again"
    typer.echo(f"node {name} {state}")
    for deployment, nodes in sorted(placements.items()):
        typer.echo(f"  {deployment}: on {', '.join(nodes) or 'no node'}")


@app.command("drain")
def drain(
    name: str = typer.Argument(..., help="Node name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Mark a node unschedulable; its deployments are placed elsewhere."""
    _cordon(name, "drain", controller, token, as_json)


@app.command("uncordon")
def uncordon(
    name: str = typer.Argument(..., help="Node name."),
    controller: str | None = CONTROLLER,
    token: str | None = TOKEN,
    as_json: bool = AS_JSON,
) -> None:
    """Make a drained node schedulable again."""
    _cordon(name, "uncordon", controller, token, as_json)
