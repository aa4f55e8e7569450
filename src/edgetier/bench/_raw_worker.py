"""Raw ONNX Runtime for `bench compare`, in its own process: the server's engine, no server.

Run as ``python -m edgetier.bench._raw_worker '<json settings>'``. The worker loads the
model of a one-model repository through :func:`edgetier.runtime.load_engine`, the function
the server loads its engines with, so the session has the server's options (threads,
intra-op spinning, providers) and nothing of the server around it. It answers ``ready``
with the provider, then reads one JSON point per line on stdin (``{"batch_size": 8,
"concurrency": 1}``) and answers each with one JSON result line on stdout, until stdin
closes; so a caller can interleave raw windows with a server's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edgetier.bench._engine_bench import measure_engine
from edgetier.bench._loadgen import InputSpec, synthetic_inputs
from edgetier.bench._schema import BenchResult
from edgetier.bench._stats import latency_summary
from edgetier.runtime import Engine, ModelRepository, load_engine


def load(repository: Path, name: str) -> tuple[Engine, list[InputSpec], bool]:
    """The engine of the repository's model (its newest version), its inputs, and whether
    it batches."""
    repo = ModelRepository(repository)
    config = repo.config(name)
    engine = load_engine(repo.model_path(name, repo.versions_to_load(name)[-1]), config)
    specs = [InputSpec(t.name, t.datatype, tuple(t.shape)) for t in engine.inputs]
    return engine, specs, config.max_batch_size > 0


def _measure(
    engine: Engine, specs: list[InputSpec], batched: bool, opts: dict[str, Any], point: Any
) -> str:
    batch_size, concurrency = int(point["batch_size"]), int(point["concurrency"])
    inputs = synthetic_inputs(specs, batch_size, batched=batched)
    lat, wall_s, extra = measure_engine(
        lambda: engine.run(inputs),
        batch_size=batch_size,
        concurrency=concurrency,
        duration_s=opts["duration_s"] if opts.get("count") is None else None,
        count=opts.get("count"),
        warmup_s=opts["warmup_s"],
    )
    return BenchResult(
        system="onnxruntime",
        provider=engine.provider,
        batch_size=batch_size,
        concurrency=concurrency,
        throughput_per_s=len(lat) * batch_size / wall_s,
        latency_ms=latency_summary(lat),
        requests=len(lat),
        **extra,
    ).model_dump_json()


def main(argv: list[str]) -> None:
    opts = json.loads(argv[0])
    engine, specs, batched = load(Path(opts["repository"]), opts["name"])
    print(json.dumps({"ready": True, "provider": engine.provider}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(_measure(engine, specs, batched, opts, json.loads(line)), flush=True)
    engine.close()


if __name__ == "__main__":
    main(sys.argv[1:])
