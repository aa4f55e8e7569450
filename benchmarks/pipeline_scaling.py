"""Pipeline scaling: aggregate FPS of N synthetic 720p streams against decode-only and
inference-only FPS for the same streams, capture->sink latency, and cross-stream batching
against per-stream (batch 1) inference.

    python benchmarks/pipeline_scaling.py --streams 1,2,4,8,16 --frames 60 --repeats 3

Method (also in docs/pipelines.md): one synthetic 1280x720 clip is rendered and encoded
once (libx264, else mpeg4); each of the N streams is a file source on that clip, so
"decode" is real video decoding. decode-only = N threads decoding the clip at once
(PyAV, as the sources do, to RGB); inference-only = the detector alone (the pipeline's
engine settings) on pre-letterboxed frames at the pipeline's max batch size; pipeline =
`Pipeline.run` with the N file sources -> detector (one shared DynamicBatcher) and no
sinks. Per-stream = the same pipeline with max_batch_size 1 and one frame in flight per
stream. Each repeat measures every figure of every N side by side; medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetier.bench import BenchResult, latency_summary, make_report, merge_repeats, model_info
from edgetier.pipeline import (
    Letterboxer,
    ModelRunner,
    Pipeline,
    inspect_model,
    package_models_dir,
    parse_pipeline,
    pyav_frames,
)
from edgetier.synthetic import SceneConfig, SyntheticScene, write_video
from edgetier.testing import make_random_detector

RESULTS = Path(__file__).parent / "results"


def _result(system: str, n: int, fps: float, latencies_s: list[float], **extra: Any) -> BenchResult:
    return BenchResult(
        system=system,
        provider=extra.pop("provider", "CPUExecutionProvider"),
        batch_size=extra.pop("batch_size", 1),
        concurrency=n,
        throughput_per_s=fps,
        latency_ms=latency_summary(np.asarray(latencies_s) * 1e9),
        **extra,
    )


def decode_only(clip: Path, n: int, frames: int) -> BenchResult:
    """N threads decode the clip at once; latency = time per decoded frame in a thread."""
    counts = [0] * n
    gaps: list[list[float]] = [[] for _ in range(n)]

    def work(i: int) -> None:
        last = time.perf_counter()
        for _ in pyav_frames(str(clip), label=f"bench-{i}", preference="auto"):
            now = time.perf_counter()
            gaps[i].append(now - last)
            last = now
            counts[i] += 1
            if counts[i] >= frames:
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return _result(
        "decode-only",
        n,
        sum(counts) / wall,
        [g for gs in gaps for g in gs],
        provider="pyav-software",
        cpu_percent=100 * (time.process_time() - c0) / wall,
    )


def inference_only(
    runner: ModelRunner, images: list[np.ndarray], n: int, frames: int, batch: int
) -> BenchResult:
    """The engine alone on pre-letterboxed frames, N x frames frames in batches of `batch`."""
    h, w = runner.info.input_hw
    lb = Letterboxer(h, w)
    buf = np.empty((batch, 3, h, w), np.float32)
    for i in range(batch):
        lb(images[i % len(images)], buf[i])
    engine, name = runner.engines[0], runner.info.input_name
    engine.run({name: buf})  # warm-up
    total, times = 0, []
    t0, c0 = time.perf_counter(), time.process_time()
    while total < n * frames:
        s = time.perf_counter()
        engine.run({name: buf})
        times.append(time.perf_counter() - s)
        total += batch
    wall = time.perf_counter() - t0
    return _result(
        "inference-only",
        n,
        total / wall,
        times,
        provider=engine.provider,
        batch_size=batch,
        cpu_percent=100 * (time.process_time() - c0) / wall,
    )


def _config(detector: Path, clip: Path, n: int, batch: int, in_flight: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "max_in_flight": in_flight,
        "sources": [
            {"id": f"s{i}", "kind": "file", "path": str(clip), "queue_size": 2} for i in range(n)
        ],
        "stages": [
            {
                "id": "detect",
                "kind": "detector",
                "model": str(detector),
                "max_batch_size": batch,
                "max_queue_delay_us": 2000,
                "confidence": 0.3,
            }
        ],
    }


def pipeline_run(
    system: str, detector: Path, clip: Path, n: int, frames: int, batch: int, in_flight: int
) -> BenchResult:
    cfg = parse_pipeline(_config(detector, clip, n, batch, in_flight))
    cpu = _CpuWindow()
    with tempfile.TemporaryDirectory() as state:
        pipeline = Pipeline(cfg, state_dir=state)
        run = pipeline.run(max_frames=frames, progress=cpu.sample, progress_interval_s=0.25)
        stats = asyncio.run(run)
    total = sum(s.frames_out for s in stats.values())
    first = min(s.first_out_s or 0.0 for s in stats.values())
    last = max(s.last_out_s or 0.0 for s in stats.values())
    per_stream = [
        s.frames_out / max((s.last_out_s or 0.0) - (s.first_out_s or 0.0), 1e-9)
        for s in stats.values()
    ]
    # steady state: from the first frame out to the last (model loading excluded)
    return _result(
        system,
        n,
        total / max(last - first, 1e-9),
        [x for s in stats.values() for x in s.latencies_s],
        batch_size=batch,
        per_stream_fps=[round(f, 2) for f in per_stream],
        drops=sum(s.dropped for s in stats.values()),
        requests=total,
        cpu_percent=cpu.percent(),
    )


class _CpuWindow:
    """Process CPU time over the steady state, sampled by the pipeline's progress hook."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []

    def sample(self, stats: dict[str, Any]) -> None:
        if any(s.frames_out for s in stats.values()) and not all(s.done for s in stats.values()):
            self.points.append((time.perf_counter(), time.process_time()))

    def percent(self) -> float | None:
        if len(self.points) < 2:
            return None
        (w0, c0), (w1, c1) = self.points[0], self.points[-1]
        return 100 * (c1 - c0) / max(w1 - w0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--streams", default="1,2,4,8,16")
    ap.add_argument("--frames", type=int, default=60, help="frames per stream")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--in-flight", type=int, default=4, help="max_in_flight of the pipeline")
    ap.add_argument("--detector", default=None, help="ONNX detector; default: the package's")
    ap.add_argument("--out", type=Path, default=RESULTS / "pipeline-scaling.json")
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
    batch = args.max_batch_size
    cfg = parse_pipeline(_config(detector, clip, 1, batch, args.in_flight)).stages[0]
    runner = ModelRunner("bench", inspect_model(detector), cfg)
    images = [f.image for _, f in zip(range(8), pyav_frames(str(clip), label="x"), strict=False)]

    runs: dict[tuple[str, int], list[BenchResult]] = {}
    for rep in range(args.repeats):
        for n in counts:  # every figure of every N side by side, in each repeat
            for result in (
                decode_only(clip, n, args.frames),
                inference_only(runner, images, n, args.frames, batch),
                pipeline_run("pipeline", detector, clip, n, args.frames, batch, args.in_flight),
                pipeline_run("per-stream", detector, clip, n, args.frames, 1, 1),
            ):
                runs.setdefault((result.system, n), []).append(result)
            got = {s: runs[(s, n)][-1].throughput_per_s for s in _SYSTEMS}
            print(
                f"repeat {rep + 1} n={n:>2}: " + "  ".join(f"{s} {v:7.1f}" for s, v in got.items()),
                flush=True,
            )
    for engine in runner.engines:
        engine.close()

    merged = {key: merge_repeats(rs, label=f"{key[0]} x{key[1]}") for key, rs in runs.items()}
    notes = [
        f"{args.width}x{args.height} synthetic clip ({args.frames} frames, "
        f"{clip.name}), {args.frames} frames per stream, {args.repeats} repeats, medians",
        "detector: random stand-in" if stand_in else f"detector: {detector.name}",
        "decode-only latency = time per decoded frame in one thread; inference-only latency"
        " = time per batch; pipeline latency = capture (decoded) -> sink",
    ]
    print()
    print(_HEADER)
    for n in counts:
        m = {s: merged[(s, n)] for s in _SYSTEMS}
        line, note = _row(n, m, runs)
        print(line)
        notes.append(note)
    report = make_report("pipeline", list(merged.values()), model=model_info(detector), notes=notes)
    report.write(args.out)
    print(f"wrote {args.out}")


_SYSTEMS = ("decode-only", "inference-only", "pipeline", "per-stream")
_HEADER = (
    "| streams | decode-only FPS | inference-only FPS | pipeline FPS | FPS per stream"
    " | latency p50 / p99 ms | pipeline / min(decode, inference) | pipeline / shared-CPU bound"
    " | per-stream inference FPS | batching ratio"
    " | CPU ms/frame: decode + inference -> pipeline |"
    "\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def _row(
    n: int, m: dict[str, BenchResult], runs: dict[tuple[str, int], list[BenchResult]]
) -> tuple[str, str]:
    d, i = m["decode-only"].throughput_per_s, m["inference-only"].throughput_per_s
    p, s = m["pipeline"].throughput_per_s, m["per-stream"].throughput_per_s
    # ratios are medians of the per-repeat ratios (taken side by side in one repeat)
    reps = zip(*(runs[(k, n)] for k in _SYSTEMS), strict=True)
    vs_min, vs_shared, batching = [], [], []
    for rd, ri, rp, rs in reps:
        dd, ii, pp = rd.throughput_per_s, ri.throughput_per_s, rp.throughput_per_s
        vs_min.append(pp / min(dd, ii))
        vs_shared.append(pp * (1 / dd + 1 / ii))
        batching.append(pp / rs.throughput_per_s)
    lat = m["pipeline"].latency_ms
    per_stream = p / n
    r_min, r_shared, r_batch = (statistics.median(v) for v in (vs_min, vs_shared, batching))
    line = (
        f"| {n} | {d:.0f} | {i:.1f} | {p:.1f} | {per_stream:.1f} | "
        f"{lat.p50:.0f} / {lat.p99:.0f} | {r_min:.0%} | {r_shared:.0%} | {s:.1f} | "
        f"x{r_batch:.2f} | "
        f"{_cpu_ms(m['decode-only'])} + {_cpu_ms(m['inference-only'])} -> "
        f"{_cpu_ms(m['pipeline'])} |"
    )
    note = (
        f"{n} streams: pipeline/min(decode, inference) {r_min:.3f}, "
        f"pipeline/shared-CPU bound {r_shared:.3f}, batching vs per-stream x{r_batch:.3f}"
    )
    return line, note


def _cpu_ms(r: BenchResult) -> str:
    """Process CPU time per frame (all threads), from the median repeat's cpu_percent."""
    if r.cpu_percent is None or r.throughput_per_s <= 0:
        return "?"
    return f"{r.cpu_percent * 10 / r.throughput_per_s:.1f}"


if __name__ == "__main__":
    main()
