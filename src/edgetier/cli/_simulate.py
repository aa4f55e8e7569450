"""`edgetier fleet simulate`: many simulated nodes against a real controller.

$ edgetier fleet simulate --nodes 1000 --heartbeat-s 10 --duration-s 300
$ edgetier fleet simulate --controller http://a:8080,http://b:8080 --nodes 50 --report out.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgetier.cli._fleet import TOKEN, fail

if TYPE_CHECKING:
    from edgetier.simulate import Progress

app = typer.Typer(help="Fleet tools: a simulator of many nodes for tests and benchmarks.")

_DEFAULT_TOKEN_FILE = Path("var/controller/operator-token")


def _shares(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        tier, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            mix[tier.strip()] = float(value)
        except ValueError:
            raise fail(f"--mix: expected tier=share pairs, got {item!r}", 2) from None
    return mix


@app.command("simulate")
def simulate(
    controller: list[str] | None = typer.Option(
        None,
        "--controller",
        envvar="EDGETIER_CONTROLLER",
        help="Controller URL [default: http://127.0.0.1:8080]; repeat it or separate with "
        "commas for replicas (nodes spread over them, move on when one is unreachable).",
        show_default=False,
    ),
    token: str | None = TOKEN,
    nodes: int = typer.Option(10, "--nodes", help="How many nodes to simulate."),
    duration_s: float = typer.Option(60.0, "--duration-s", help="Stop after this long."),
    heartbeat_s: float | None = typer.Option(
        None, "--heartbeat-s", help="Heartbeat interval [default: what the controller says]."
    ),
    wait_s: float = typer.Option(30.0, "--wait-s", help="Desired-state long poll, seconds."),
    prefix: str = typer.Option("sim", "--prefix", help="Node names: PREFIX-TIER-NNNN."),
    mix: str = typer.Option(
        "terminal=0.4,edge=0.4,region=0.15,cloud=0.05",
        "--mix",
        help="Share of nodes per tier; profiles are drawn from the hardware catalog.",
    ),
    overheating: float = typer.Option(
        0.02, "--overheating", help="Share of nodes whose fan fails for a while."
    ),
    dropped_links: float = typer.Option(
        0.02, "--dropped-links", help="Share of nodes that lose their link once."
    ),
    flapping: float = typer.Option(0.01, "--flapping", help="Share of nodes whose link flaps."),
    link_down_s: str = typer.Option(
        "20,60", "--link-down-s", help="A dropped link's outage: MIN,MAX seconds."
    ),
    flap_s: float = typer.Option(20.0, "--flap-s", help="A flapping link: down, up, ..."),
    seed: int = typer.Option(0, "--seed", help="Draws profiles and faults."),
    download: bool = typer.Option(
        True, "--download/--no-download", help="Download and check assigned artifacts."
    ),
    progress_s: float = typer.Option(5.0, "--progress-s", help="A progress line this often."),
    report: Path | None = typer.Option(
        None, "--report", help="Write the final figures here as JSON."
    ),
) -> None:
    """Simulate NODES agents (catalog profiles across the four tiers, synthetic telemetry,
    overheating, dropped links, flapping) against a running controller; stops by itself
    after DURATION_S. Needs the operator token (it creates one enrolment token per node)."""
    import asyncio
    import signal

    from edgetier.errors import ConfigError, EdgeTierError
    from edgetier.simulate import FleetSimulation, SimulationSettings

    given = controller or ["http://127.0.0.1:8080"]
    urls = [u.strip() for item in given for u in item.split(",") if u.strip()]
    if not token and _DEFAULT_TOKEN_FILE.is_file():
        token = _DEFAULT_TOKEN_FILE.read_text(encoding="utf-8").strip()
    if not token:
        raise fail(
            "no operator token: give --token, set EDGETIER_TOKEN, or run beside the "
            f"controller's {_DEFAULT_TOKEN_FILE}",
            2,
        )
    try:
        low, _, high = link_down_s.partition(",")
        settings = SimulationSettings(
            controllers=urls,
            operator_token=token,
            nodes=nodes,
            duration_s=duration_s,
            heartbeat_s=heartbeat_s,
            wait_s=wait_s,
            prefix=prefix,
            mix=_shares(mix),
            overheating=overheating,
            dropped_links=dropped_links,
            flapping=flapping,
            link_down_s=(float(low), float(high or low)),
            flap_s=flap_s,
            seed=seed,
            download=download,
        )
    except (ConfigError, ValueError) as exc:
        raise fail(f"{exc}", 2) from None

    def show(progress: Progress) -> None:
        typer.echo(progress.line(), err=True)

    async def main() -> Progress:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await FleetSimulation(settings).run(progress=show, progress_s=progress_s, stop=stop)

    try:
        final = asyncio.run(main())
    except EdgeTierError as exc:
        raise fail(exc.message) from None
    typer.echo("done: " + final.line())
    if report is not None:
        report.write_text(json.dumps(final.as_dict(), indent=2) + "\n", encoding="utf-8")
