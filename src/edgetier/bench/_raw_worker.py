"""Raw ONNX Runtime for `bench compare`, in its own process: one session, no server.

Run as ``python -m edgetier.bench._raw_worker '<json settings>'``. The worker loads the
session once, then reads one JSON point per line on stdin (``{"batch_size": 8,
"concurrency": 1}``) and answers each with one JSON result line on stdout, until stdin
closes; so a caller can interleave raw windows with a server's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgetier.bench._engine_bench import ModelBenchConfig, _session, _specs, measure_engine
from edgetier.bench._loadgen import synthetic_inputs
from edgetier.bench._schema import BenchResult
from edgetier.bench._stats import latency_summary


def _measure(session: Any, cfg: ModelBenchConfig, specs: Any, point: dict[str, int]) -> str:
    batch_size, concurrency = int(point["batch_size"]), int(point["concurrency"])
    lat, wall_s, extra = measure_engine(
        session,
        synthetic_inputs(specs, batch_size),
        batch_size=batch_size,
        concurrency=concurrency,
        duration_s=cfg.duration_s if cfg.count is None else None,
        count=cfg.count,
        warmup_s=cfg.warmup_s,
    )
    return BenchResult(
        system="onnxruntime",
        provider=session.get_providers()[0],
        batch_size=batch_size,
        concurrency=concurrency,
        throughput_per_s=len(lat) * batch_size / wall_s,
        latency_ms=latency_summary(lat),
        requests=len(lat),
        **extra,
    ).model_dump_json()


def main(argv: list[str]) -> None:
    opts = json.loads(argv[0])
    cfg = ModelBenchConfig(
        path=Path(opts["model"]),
        intra_op_threads=opts["intra_op_threads"],
        inter_op_threads=opts["inter_op_threads"],
        intra_op_spinning=opts.get("intra_op_spinning", True),
        duration_s=opts["duration_s"],
        count=opts["count"],
        warmup_s=opts["warmup_s"],
    )
    session = _session(cfg, opts["provider"], "fp32")
    specs = _specs(session)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip():
            print(_measure(session, cfg, specs, json.loads(line)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
