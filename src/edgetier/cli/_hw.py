"""`edgetier hw` commands: probe, top, advise, govern, power, thermal-sim.

$ edgetier hw probe --json
$ edgetier hw top --count 3
$ edgetier hw advise --model resnet50.onnx --streams 8 --fps 15 --latency-ms 100
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from edgetier.cli._help import HelpGroup

app = typer.Typer(
    help="Probe the hardware, watch telemetry, choose hardware.", no_args_is_help=True
)


@app.command()
def probe(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Detect this machine (CPU, memory, NVIDIA GPUs and MIG, Jetson, RAPL) and its profile."""
    from rich.console import Console
    from rich.table import Table

    from edgetier.hardware import probe as run_probe

    machine = run_probe()
    data = machine.as_dict()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="edgetier hw probe", show_header=False)
    cpu = data["cpu"]
    table.add_row("profile", f"{data['profile']} ({data['profile_name']}, tier {data['tier']})")
    table.add_row(
        "cpu",
        f"{cpu['model']} · {cpu['physical_cores']} cores / {cpu['logical_cores']} threads · "
        f"{cpu['simd']} · vnni={cpu['vnni']} · peak {cpu['peak_fp32_gflops'] or 0:.0f} GFLOPS",
    )
    table.add_row("memory", f"{data['memory_bytes'] / 2**30:.1f} GiB")
    for gpu in data["gpus"]:
        mig = f" · MIG {len(gpu['mig_instances'])} instances" if gpu["mig_enabled"] else ""
        mem = gpu["memory_total_bytes"]
        memory = f"{mem / 2**30:.0f} GiB" if mem is not None else "memory shared (not reported)"
        table.add_row(f"gpu {gpu['index']}", f"{gpu['name']} · {memory}{mig}")
    if data["jetson"]:
        table.add_row("jetson", f"{data['jetson']['model']} (L4T {data['jetson']['l4t_release']})")
    table.add_row("rapl", ", ".join(data["rapl_zones"]) or "not readable")
    for note in data["notes"]:
        table.add_row("note", note)
    Console().print(table)


def _top_table(sample: Any) -> Any:
    from rich.table import Table

    table = Table(title=time.strftime("edgetier hw top  %H:%M:%S"))
    for col in ("device", "util %", "memory", "power W", "temp C", "clock MHz", "throttle"):
        table.add_column(col)
    mem_gib = (sample.memory_used_bytes or 0) / 2**30
    table.add_row(
        "cpu",
        f"{sample.cpu_percent or 0:.0f}",
        f"{mem_gib:.1f}/{(sample.memory_total_bytes or 0) / 2**30:.1f} GiB",
        f"{sample.cpu_power_w:.1f}" if sample.cpu_power_w is not None else "-",
        f"{sample.max_temperature_c:.0f}" if sample.max_temperature_c is not None else "-",
        "-",
        "",
    )
    for g in sample.gpus:
        table.add_row(
            f"gpu{g.index} {g.name}",
            f"{g.utilization_pct:.0f}" if g.utilization_pct is not None else "-",
            f"{(g.memory_used_bytes or 0) / 2**30:.1f}/"
            f"{(g.memory_total_bytes or 0) / 2**30:.0f} GiB",
            f"{g.power_w:.0f}/{g.power_limit_w:.0f}" if g.power_w and g.power_limit_w else "-",
            f"{g.temperature_c:.0f}" if g.temperature_c is not None else "-",
            str(g.sm_clock_mhz or "-"),
            "?"
            if g.throttle_reasons is None
            else ",".join(r for r in g.throttle_reasons if r != "gpu_idle"),
        )
    if sample.board_power_w is not None or sample.soc_gpu_percent is not None:
        table.add_row(
            "jetson soc gpu",
            f"{sample.soc_gpu_percent:.0f}" if sample.soc_gpu_percent is not None else "-",
            "",
            f"{sample.board_power_w:.1f}" if sample.board_power_w is not None else "-",
            "",
            f"{sample.soc_gpu_clock_mhz:.0f}" if sample.soc_gpu_clock_mhz else "-",
            "",
        )
    return table


@app.command()
def top(
    interval_s: float = typer.Option(
        1.0, "--interval-s", min=0.05, help="Seconds between samples."
    ),
    count: int = typer.Option(
        0, "--count", min=0, help="Stop after N samples (0: run until Ctrl-C)."
    ),
    once: bool = typer.Option(False, "--once", help="Print one sample and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print samples as JSON lines."),
) -> None:
    """A live view of utilisation, memory, power, temperature, clocks and throttling."""
    from rich.console import Console
    from rich.live import Live

    from edgetier.hardware import TelemetrySampler

    sampler = TelemetrySampler()
    total = 1 if once else count
    console = Console()
    if as_json or total:
        for i in range(total or 1):
            time.sleep(interval_s if i or not once else min(interval_s, 0.2))
            sample = sampler.sample()
            if as_json:
                typer.echo(json.dumps(sample.as_dict()))
            else:
                console.print(_top_table(sample))
        return
    with Live(_top_table(sampler.sample()), console=console, refresh_per_second=4) as live:
        try:
            while True:
                time.sleep(interval_s)
                live.update(_top_table(sampler.sample()))
        except KeyboardInterrupt:
            pass


@app.command()
def advise(
    model: Path = typer.Option(..., "--model", exists=True, dir_okay=False, help="ONNX model."),
    streams: int = typer.Option(..., "--streams", min=1),
    fps: float = typer.Option(..., "--fps", min=0.001),
    latency_ms: float = typer.Option(..., "--latency-ms", min=0.001),
    power_budget_w: float | None = typer.Option(None, "--power-budget-w", min=0.1),
    bench: list[Path] = typer.Option([], "--bench", help="edgetier bench JSON (repeatable)."),
    precision: str | None = typer.Option(None, "--precision", help="fp32, fp16 or int8."),
    top_n: int = typer.Option(0, "--top", min=0, help="Show only the first N devices."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rank catalog devices (and this machine) for a model at N streams x F fps."""
    from rich.console import Console
    from rich.markup import escape

    from edgetier.errors import ConfigError
    from edgetier.hardware import Workload
    from edgetier.hardware import advise as run_advise
    from edgetier.hardware import probe as run_probe

    if precision not in (None, "fp32", "fp16", "int8"):
        raise typer.BadParameter(f"precision must be fp32, fp16 or int8, got {precision!r}")
    try:
        work = Workload(streams, fps, latency_ms, power_budget_w)
        verdicts = run_advise(
            model,
            work,
            bench_files=bench,
            machine=run_probe(),
            precision=precision,  # type: ignore[arg-type]
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if top_n:
        verdicts = verdicts[:top_n]
    if as_json:
        typer.echo(json.dumps([v.as_dict() for v in verdicts], indent=2))
        return
    console = Console()
    console.print(
        f"[bold]{model.name}[/]: {streams} streams x {fps:g} fps = {work.rate_per_s:g}/s, "
        f"latency <= {latency_ms:g} ms"
        + (f", power <= {power_budget_w:g} W" if power_budget_w else "")
    )
    for rank, v in enumerate(verdicts, 1):
        mark = "[green]✔[/]" if v.carries else "[red]✘[/]"
        console.print(f"{rank:2d}. {mark} {escape(v.explain())} [dim]({v.basis})[/]")


@app.command("thermal-sim")
def thermal_sim(
    ambient_c: float = typer.Option(40.0, "--ambient-c"),
    duration_s: float = typer.Option(3600.0, "--duration-s", min=1.0),
    governor: bool = typer.Option(True, "--governor/--no-governor"),
    target_c: float = typer.Option(84.0, "--target-c"),
    as_json: bool = typer.Option(False, "--json", help="Print events and the summary as JSON."),
) -> None:
    """Simulate a passively cooled Jetson Nano at full load, with or without the governor."""
    from edgetier.hardware import ThermalGovernor, ThermalModel, simulate

    model = ThermalModel.passive_jetson_nano(ambient_c)
    gov = ThermalGovernor(target_c=target_c) if governor else None
    run = simulate(model, gov, duration_s)
    summary = {
        "simulated": True,
        "ambient_c": ambient_c,
        "governor": governor,
        "mean_throughput_fraction": round(run.mean_throughput_fraction, 4),
        "mean_high_priority_fraction": round(run.mean_high_priority_fraction, 4),
        "max_temperature_c": round(run.max_temperature_c, 2),
        "events": [e.__dict__ for e in run.events],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for e in run.events:
        typer.echo(f"{e.time_s:7.0f} s  {e.action:9s} {e.from_level} -> {e.to_level}  ({e.reason})")
    typer.echo(
        f"simulation: throughput {summary['mean_throughput_fraction']:.1%} of demand, "
        f"high-priority {summary['mean_high_priority_fraction']:.1%}, "
        f"max {summary['max_temperature_c']} C"
    )


@app.command()
def govern(
    target_c: float = typer.Option(84.0, "--target-c", help="Temperature to stay under."),
    hysteresis_c: float = typer.Option(3.0, "--hysteresis-c", min=0.0),
    hold_s: float = typer.Option(120.0, "--hold-s", min=0.0, help="Cool time before a step up."),
    min_dwell_s: float = typer.Option(90.0, "--min-dwell-s", min=0.0),
    zone: str | None = typer.Option(None, "--zone", help="Sensor to govern on (default: hottest)."),
    recorded: Path | None = typer.Option(
        None, "--recorded", exists=True, dir_okay=False, help="Replay a tegrastats log."
    ),
    interval_s: float = typer.Option(
        1.0, "--interval-s", min=0.01, help="Seconds between readings (tegrastats' interval)."
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after N readings."),
) -> None:
    """Run the thermal governor on live telemetry or a recorded tegrastats log.

    Each decision (step down / step up, with its reason) is printed as one JSON event line;
    the pipelines and batchers act on the level it names.
    """
    from edgetier.hardware import (
        TelemetrySampler,
        ThermalGovernor,
        governing_temperature_c,
        sample_from_tegrastats,
    )

    gov = ThermalGovernor(
        target_c=target_c, hysteresis_c=hysteresis_c, hold_s=hold_s, min_dwell_s=min_dwell_s
    )
    if recorded is not None:
        lines = [ln for ln in recorded.read_text().splitlines() if ln.strip()]
        readings: Any = (
            sample_from_tegrastats(ln, time_s=i * interval_s) for i, ln in enumerate(lines)
        )
    else:
        sampler = TelemetrySampler()

        def live() -> Any:
            while True:
                yield sampler.sample()
                time.sleep(interval_s)

        readings = live()
    seen = 0
    for sample in readings:
        temp = governing_temperature_c(sample.temperatures_c, zone)
        if temp is None:
            what = f"sensor {zone!r}" if zone else "temperature sensor"
            typer.echo(
                f"error: no {what} in this telemetry (found: "
                f"{', '.join(sample.temperatures_c) or 'none'}); nothing to govern",
                err=True,
            )
            raise typer.Exit(2)
        event = gov.observe(sample.time_s, temp)
        if event is not None:
            typer.echo(json.dumps({"kind": "thermal_governor", **event.__dict__}))
        seen += 1
        if count is not None and seen >= count:
            break
    typer.echo(
        json.dumps({"kind": "summary", "readings": seen, "level": gov.current.name}), err=True
    )


power_app = typer.Typer(help="Power settings: nvpmodel, jetson_clocks, GPU power limits, cpufreq.")
app.add_typer(power_app, name="power", cls=HelpGroup)


def _power_governor(dry_run: bool, record: Path | None) -> Any:
    from edgetier.hardware import PowerGovernor

    return PowerGovernor(dry_run=dry_run, record_path=record)


def _report(changes: list[Any], dry_run: bool) -> None:
    for c in changes:
        prefix = "would run" if dry_run else "ran"
        typer.echo(f"{prefix}: {c.command}   ({c.mechanism} {c.target}: {c.before} -> {c.after})")


@power_app.command("set")
def power_set(
    nvpmodel: int | None = typer.Option(None, "--nvpmodel", help="Jetson power mode id."),
    jetson_clocks: bool = typer.Option(False, "--jetson-clocks", help="Lock Jetson clocks at max."),
    gpu_power_limit_w: float | None = typer.Option(None, "--gpu-power-limit-w"),
    gpu: int = typer.Option(0, "--gpu", min=0, help="GPU index for --gpu-power-limit-w."),
    cpufreq_governor: str | None = typer.Option(None, "--cpufreq-governor"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact commands only."),
    record: Path | None = typer.Option(None, "--record", help="Where changes are recorded."),
) -> None:
    """Change power settings; each change is recorded so that `power restore` undoes it."""
    from edgetier.errors import EdgeTierError

    gov = _power_governor(dry_run, record)
    changes = []
    try:
        if nvpmodel is not None:
            changes.append(gov.set_nvpmodel(nvpmodel))
        if jetson_clocks:
            changes.append(gov.jetson_clocks())
        if gpu_power_limit_w is not None:
            changes.append(gov.set_gpu_power_limit(gpu, gpu_power_limit_w))
        if cpufreq_governor is not None:
            changes.append(gov.set_cpufreq_governor(cpufreq_governor))
    except EdgeTierError as exc:
        _report(changes, dry_run)
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not changes:
        raise typer.BadParameter("give at least one setting (see --help)")
    _report(changes, dry_run)


@power_app.command("restore")
def power_restore(
    dry_run: bool = typer.Option(False, "--dry-run"),
    record: Path | None = typer.Option(None, "--record"),
) -> None:
    """Put back every recorded power setting, newest first."""
    from edgetier.errors import EdgeTierError

    try:
        changes = _power_governor(dry_run, record).restore()
    except EdgeTierError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not changes:
        typer.echo("nothing to restore")
    _report(changes, dry_run)
