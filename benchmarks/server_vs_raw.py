"""ResNet-50 at saturation: the EdgeTier server against raw ONNX Runtime, side by side.

Same model, ONNX Runtime threads and max batch size; gRPC with binary tensors; a
concurrency sweep. Target: server throughput >= 95 % of raw ONNX Runtime's.
Writes benchmarks/results/server_vs_raw.json.
"""

from __future__ import annotations

from _harness import options, save

from edgetier.bench import CompareConfig, run_compare


def main() -> None:
    args = options(__doc__ or "")
    cfg = CompareConfig(
        model="resnet50",
        systems=["onnxruntime", "edgetier"],
        batch_sizes=[1, 8],
        concurrency=[1, 2, 8],
        protocols=["grpc"],
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        repeats=args.repeats,
        progress=True,
    )
    save(run_compare(cfg), args.out_dir, "server_vs_raw")


if __name__ == "__main__":
    main()
