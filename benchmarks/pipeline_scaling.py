"""Pipeline scaling: aggregate FPS of N synthetic 720p streams against decode-only and
inference-only FPS for the same streams, capture->sink latency, and cross-stream batching
against per-stream (batch 1) inference.

    python benchmarks/pipeline_scaling.py --streams 1,2,4,8,16 --frames 60

Method (also in docs/pipelines.md): one synthetic 720p clip is rendered and encoded once;
each of the N streams is a file source on that clip. decode-only = N threads decoding the
clip at once (PyAV, as the sources do); inference-only = the detector alone on
pre-letterboxed frames at the pipeline's max batch size; pipeline = `Pipeline.run` with the
N file sources -> detector (shared DynamicBatcher) and no sinks. Per-stream = the same
pipeline with max_batch_size 1 and one frame in flight per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetier.pipeline import Pipeline, SceneConfig, SyntheticScene, parse_pipeline, write_video
from edgetier.pipeline._decode import pyav_frames
from edgetier.pipeline._models import ModelRunner, inspect_model, package_models_dir
from edgetier.pipeline._preprocess import Letterboxer
from edgetier.pipeline._testing import make_random_detector


def decode_only(clip: Path, n: int, frames: int) -> float:
    counts = [0] * n

    def work(i: int) -> None:
        for _ in pyav_frames(str(clip), label=f"bench-{i}", preference="auto"):
            counts[i] += 1
            if counts[i] >= frames:
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def inference_only(detector: Path, clip: Path, n: int, frames: int, batch: int) -> float:
    cfg = parse_pipeline(_config(detector, clip, 1, batch, 4)).stages[0]
    runner = ModelRunner("bench", inspect_model(detector), cfg)
    h, w = runner.info.input_hw
    lb = Letterboxer(h, w)
    images = [
        f.image for _, f in zip(range(batch), pyav_frames(str(clip), label="x"), strict=False)
    ]
    buf = np.empty((batch, 3, h, w), np.float32)
    for i in range(batch):
        lb(images[i % len(images)], buf[i])
    engine = runner.engines[0]
    engine.run({runner.info.input_name: buf})  # warm-up
    total, t0 = 0, time.perf_counter()
    while total < n * frames:
        engine.run({runner.info.input_name: buf})
        total += batch
    for e in runner.engines:
        e.close()
    return total / (time.perf_counter() - t0)


def _config(detector: Path, clip: Path, n: int, batch: int, in_flight: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "max_in_flight": in_flight,
        "sources": [
            {"id": f"s{i}", "kind": "file", "path": str(clip), "queue_size": 8} for i in range(n)
        ],
        "stages": [
            {
                "id": "detect",
                "kind": "detector",
                "model": str(detector),
                "max_batch_size": batch,
                "max_queue_delay_us": 2000,
                "confidence": 0.99,  # the random stand-in scores everything
            }
        ],
    }


def pipeline_run(
    detector: Path, clip: Path, n: int, frames: int, batch: int, in_flight: int
) -> dict[str, Any]:
    cfg = parse_pipeline(_config(detector, clip, n, batch, in_flight))
    with tempfile.TemporaryDirectory() as state:
        pipeline = Pipeline(cfg, state_dir=state)
        t0 = time.perf_counter()
        stats = asyncio.run(pipeline.run(max_frames=frames))
        wall = time.perf_counter() - t0
    total = sum(s.frames_out for s in stats.values())
    lat = np.concatenate([np.fromiter(s.latencies_s, float) for s in stats.values()])
    batches = pipeline.runners["detect"].batcher.stats.batch_histogram
    return {
        # steady state: from the first frame out to the last (model loading excluded)
        "fps": total
        / (max(s.last_out_s for s in stats.values()) - min(s.first_out_s for s in stats.values())),
        "frames": total,
        "wall_s": wall,
        "latency_p50_ms": float(np.percentile(lat, 50) * 1000),
        "latency_p99_ms": float(np.percentile(lat, 99) * 1000),
        "batch_histogram": {int(k): int(v) for k, v in sorted(batches.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,2,4,8,16")
    ap.add_argument("--frames", type=int, default=60, help="frames per stream")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--detector", default=None, help="ONNX detector; default: the package's")
    ap.add_argument("--out", default=None, help="JSON file; default benchmarks/results/...")
    args = ap.parse_args()
    counts = [int(x) for x in args.streams.split(",")]
    work = Path(tempfile.mkdtemp(prefix="edgetier-bench-"))
    detector = Path(args.detector) if args.detector else package_models_dir() / "detector.onnx"
    stand_in = not detector.is_file()
    if stand_in:
        detector = make_random_detector(work / "detector.onnx", input_size=640)
        print("note: no package detector; using a random stand-in with the same layout")
    fps = 30.0
    scene = SyntheticScene(
        SceneConfig(
            width=args.width, height=args.height, fps=fps, duration_s=args.frames / fps, seed=1
        )
    )
    clip = write_video(scene, work / "clip.mp4")
    rows = []
    for n in counts:
        row: dict[str, Any] = {"streams": n}
        row["decode_only_fps"] = decode_only(clip, n, args.frames)
        row["inference_only_fps"] = inference_only(
            detector, clip, n, args.frames, args.max_batch_size
        )
        row["pipeline"] = pipeline_run(detector, clip, n, args.frames, args.max_batch_size, 4)
        row["per_stream"] = pipeline_run(detector, clip, n, args.frames, 1, 1)
        bound = min(row["decode_only_fps"], row["inference_only_fps"])
        row["pipeline_vs_bound"] = row["pipeline"]["fps"] / bound
        row["batching_speedup"] = row["pipeline"]["fps"] / row["per_stream"]["fps"]
        rows.append(row)
        print(
            f"{n:>3} streams: pipeline {row['pipeline']['fps']:7.1f} fps "
            f"(decode {row['decode_only_fps']:7.1f}, infer {row['inference_only_fps']:7.1f}, "
            f"{row['pipeline_vs_bound']:.0%} of the slower) | per-stream "
            f"{row['per_stream']['fps']:6.1f} fps (x{row['batching_speedup']:.2f}) | "
            f"p50 {row['pipeline']['latency_p50_ms']:.0f} ms "
            f"p99 {row['pipeline']['latency_p99_ms']:.0f} ms",
            flush=True,
        )
    import onnxruntime as ort

    result = {
        "benchmark": "pipeline_scaling",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpu": platform.processor(),
            "cores": __import__("os").cpu_count(),
            "providers": ort.get_available_providers(),
        },
        "detector": "random stand-in (640x640 input)" if stand_in else str(detector.name),
        "resolution": [args.width, args.height],
        "frames_per_stream": args.frames,
        "max_batch_size": args.max_batch_size,
        "rows": rows,
    }
    out = (
        Path(args.out)
        if args.out
        else (Path(__file__).parent / "results" / f"pipeline_scaling-{dt.date.today()}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
