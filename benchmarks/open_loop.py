"""Latency against offered rate (open loop, Poisson arrivals) on the small model over gRPC.

Writes benchmarks/results/open_loop.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import options, save

from edgetier.bench import (
    ServerBenchConfig,
    ServerSettings,
    model_info,
    run_server_bench,
    served_model,
    start_system,
)


def main() -> None:
    args = options(__doc__ or "")
    served = served_model("small", ServerSettings(), Path("var/bench/models"))
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_system("edgetier", served, Path(tmp)) as server,
    ):
        cfg = ServerBenchConfig(
            url=server.url("grpc"),
            model=served.name,
            concurrency=[],
            rates=[50, 100, 200, 400],
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            repeats=args.repeats,
            server_pids=[server.proc.pid],
        )
        report = run_server_bench(cfg, model=model_info(served.file, served.name))
    save(report, args.out_dir, "open_loop")


if __name__ == "__main__":
    main()
