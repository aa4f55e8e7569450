"""Check the hardware advisor's CPU estimate against ONNX Runtime on this machine.

    python benchmarks/hardware_advisor_check.py --threads 2 --batches 1 8 --repeats 5

Builds the demo ResNet-50 (random weights), measures throughput with ONNX Runtime (median of
the repeats), and prints the advisor's roofline estimate for this machine's CPU beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgetier.hardware import batch_time_s, candidates, model_cost, probe
from edgetier.synthetic import make_resnet50


def measure(path: Path, threads: int, batch: int, repeats: int, seconds: float) -> list[float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    sess.run(None, {name: x})  # warm-up
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            sess.run(None, {name: x})
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    machine = probe()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_resnet50(Path(tmp) / "resnet50.onnx")
        cost = model_cost(path)
        local = candidates(machine=machine, precision="fp32")[0]
        print(f"machine: {local.label}; ONNX Runtime {ort.__version__}, {args.threads} threads")
        print(
            "| batch | estimated infer/s | measured infer/s (median) | runs | measured/estimated |"
        )
        print("|---|---|---|---|---|")
        for batch in args.batches:
            est = batch / batch_time_s(cost, local, batch, 1.0)[0]
            rates = measure(path, args.threads, batch, args.repeats, args.seconds)
            med = statistics.median(rates)
            runs = ", ".join(f"{r:.1f}" for r in rates)
            print(f"| {batch} | {est:.1f} | {med:.1f} | {runs} | {med / est:.2f} |")


if __name__ == "__main__":
    main()
