"""Peak resident memory of `edgetier serve` with the whole demo repository, under load.

Starts the server on the demo repository, drives each demo model in turn (gRPC, binary,
concurrency 2) while sampling the server process; each row carries the peak during that
model's load, and the notes the peak over the whole run.
Writes benchmarks/results/peak_memory.json.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from _harness import options, save

from edgetier.bench import (
    RequestSender,
    ResourceSampler,
    RunningSystem,
    ServerBenchConfig,
    make_report,
    measure_server,
    stop_process,
    wait_ready,
)
from edgetier.testing import free_port


async def drive(url: str, models: list[str], args: object, pid: int) -> list:  # type: ignore[type-arg]
    rows = []
    for name in models:
        cfg = ServerBenchConfig(
            url=url,
            model=name,
            concurrency=[2],
            duration_s=args.duration_s,  # type: ignore[attr-defined]
            warmup_s=args.warmup_s,
            server_pids=[pid],
            energy=False,  # type: ignore[attr-defined]
            progress=False,
            provider="CPUExecutionProvider",
        )
        sender = RequestSender(url, name)
        await sender.open()
        try:
            row = await measure_server(cfg, sender, concurrency=2)
            rows.append(row.model_copy(update={"system": f"edgetier: {name}"}))
        finally:
            await sender.close()
    return rows


def main() -> None:
    args = options(__doc__ or "", duration_s=3.0)
    from edgetier.synthetic import DEMO_MODELS, build_demo_repository

    repo = Path("var/bench/demo-models")
    build_demo_repository(repo)
    http, grpc, metrics = free_port(), free_port(), free_port()
    log = Path("var/bench/peak_memory-server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from edgetier.cli import main; main()",
                "serve",
                "--model-repository",
                str(repo),
                "--http-port",
                str(http),
                "--grpc-port",
                str(grpc),
                "--metrics-port",
                str(metrics),
                "--log-level",
                "warning",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningSystem("edgetier", proc, http, grpc, log)
    whole = ResourceSampler([proc.pid])
    try:
        wait_ready(server, "resnet50", 180)
        whole.start()
        rows = asyncio.run(drive(f"grpc://127.0.0.1:{grpc}", list(DEMO_MODELS), args, proc.pid))
        usage = whole.stop()
    finally:
        whole.close()
        stop_process(proc)
    notes = [
        f"demo repository: {', '.join(DEMO_MODELS)} all loaded; peak RSS of the server "
        f"over the whole run: {usage.peak_memory_bytes / 2**20:.0f} MiB"
    ]
    save(make_report("server", rows, model=None, notes=notes), args.out_dir, "peak_memory")


if __name__ == "__main__":
    main()
