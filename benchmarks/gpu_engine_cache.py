"""TensorRT engine cache: reused across restarts, never across versions (GPU machines).

Builds a repository with ResNet-50 (random weights) in two versions with the same graph
and other weights, then loads them in fresh processes, as a restarted server would:

1. version 1, cold: TensorRT builds an engine and writes it to the cache;
2. version 1 again (a restart): the engine file is read, nothing is built or written;
3. version 2 (retrained): its own engine, under its own content digest.

Each load runs in its own process and reports the load time (session creation and the
first batch), the provider its nodes run on and the engine files of its version. Prints
one JSON object and exits non-zero when a check fails. Needs onnxruntime-gpu with
TensorRT (benchmarks/gpu_check.sh builds that environment)::

    python benchmarks/gpu_engine_cache.py --out var/gpu-check/engine-cache.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "optimization: {precision: fp16, engine_cache_dir: trt-cache}\n"


def _load_once(repo: Path, version: int) -> dict[str, object]:
    """In this process: load one version on TensorRT and run one batch."""
    import numpy as np

    from edgetier.runtime import ModelRepository, load_engine

    repository = ModelRepository(repo)
    start = time.perf_counter()
    engine = load_engine(repository.model_path("resnet50", version), repository.config("resnet50"))
    engine.run({"input": np.zeros((1, 3, 224, 224), np.float32)})
    load_s = time.perf_counter() - start
    cache = repo / "resnet50" / "trt-cache" / str(version)
    return {
        "version": version,
        "load_s": round(load_s, 3),
        "provider": engine.provider,
        "notes": engine.notes,
        "engines": {p.name: p.stat().st_mtime_ns for p in sorted(cache.glob("*.engine"))},
    }


def _in_fresh_process(repo: Path, version: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--load", str(repo), str(version)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"loading version {version} failed:\n{done.stderr[-4000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("var/gpu-check/cache-repo"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--load", nargs=2, metavar=("REPO", "VERSION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        print(json.dumps(_load_once(Path(args.load[0]), int(args.load[1]))))
        return 0

    from edgetier.synthetic import make_resnet50

    model_dir = args.repo / "resnet50"
    for version, seed in ((1, 0), (2, 1)):
        if not (model_dir / str(version) / "model.onnx").is_file():
            make_resnet50(model_dir / str(version) / "model.onnx", seed=seed)
    (model_dir / "config.yaml").write_text(CONFIG + "version_policy: {all: {}}\n")

    cold = _in_fresh_process(args.repo, 1)
    warm = _in_fresh_process(args.repo, 1)
    other = _in_fresh_process(args.repo, 2)
    cold_engines, other_engines = dict(cold["engines"]), dict(other["engines"])  # type: ignore[call-overload]
    checks = {
        "tensorrt_ran": all(
            r["provider"] == "TensorrtExecutionProvider" for r in (cold, warm, other)
        ),
        "no_fallback": not any(r["notes"] for r in (cold, warm, other)),
        "one_engine_built": len(cold_engines) == 1,
        "restart_reused_it": warm["engines"] == cold["engines"],
        "restart_faster": float(warm["load_s"]) < float(cold["load_s"]),  # type: ignore[arg-type]
        "version_2_own_engine": len(other_engines) == 1
        and set(other_engines).isdisjoint(cold_engines),
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
        "cold": cold,
        "restart": warm,
        "version_2": other,
        "restart_speedup": round(float(cold["load_s"]) / max(float(warm["load_s"]), 1e-9), 1),  # type: ignore[arg-type]
        "checks": checks,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
