"""Latency against offered rate (open loop, Poisson arrivals) on the small model over gRPC.

Writes benchmarks/results/open_loop.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _harness import options, save

from edgetier.bench import ServerBenchConfig, ServerSettings, run_server_bench
from edgetier.bench._compare import resolve_model
from edgetier.bench._meta import model_info
from edgetier.bench._systems import start_system


def main() -> None:
    args = options(__doc__ or "")
    model, name = resolve_model("small", Path("var/bench/models"))
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_system("edgetier", model, name, ServerSettings(), Path(tmp)) as server,
    ):
        cfg = ServerBenchConfig(
            url=server.url("grpc"),
            model=name,
            concurrency=[],
            rates=[50, 100, 200, 400],
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            repeats=args.repeats,
            server_pids=[server.proc.pid],
            provider="CPUExecutionProvider",
        )
        report = run_server_bench(cfg, model=model_info(model, name))
    save(report, args.out_dir, "open_loop")


if __name__ == "__main__":
    main()
