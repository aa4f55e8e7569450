"""Raw ONNX Runtime for `bench compare`, in its own process: one session, no server.

Run as ``python -m edgetier.bench._raw_worker '<json settings>'``; prints one JSON list of
results (every repeat, unmerged) on the last line of stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgetier.bench._engine_bench import ModelBenchConfig, _session, _specs, measure_engine
from edgetier.bench._loadgen import synthetic_inputs
from edgetier.bench._schema import BenchResult
from edgetier.bench._stats import latency_summary


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
    out = []
    for batch_size in opts["batch_sizes"]:
        inputs = synthetic_inputs(specs, batch_size)
        for conc in opts["concurrency"]:
            for _ in range(opts["repeats"]):
                lat, wall_s, extra = measure_engine(
                    session,
                    inputs,
                    batch_size=batch_size,
                    concurrency=conc,
                    duration_s=cfg.duration_s if cfg.count is None else None,
                    count=cfg.count,
                    warmup_s=cfg.warmup_s,
                )
                out.append(
                    BenchResult(
                        system="onnxruntime",
                        provider=session.get_providers()[0],
                        batch_size=batch_size,
                        concurrency=conc,
                        throughput_per_s=len(lat) * batch_size / wall_s,
                        latency_ms=latency_summary(lat),
                        requests=len(lat),
                        **extra,
                    ).model_dump(mode="json")
                )
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
