"""Added latency at batch 1 on a small model: server p50 minus raw engine p50, gRPC and HTTP.

Concurrency 1, no dynamic batching (a queue delay would add itself to every request).
Target: under 1 ms over gRPC. Writes benchmarks/results/added_latency.json.
"""

from __future__ import annotations

from _harness import options, save

from edgetier.bench import CompareConfig, ServerSettings, run_compare


def main() -> None:
    args = options(__doc__ or "")
    cfg = CompareConfig(
        model="small",
        systems=["onnxruntime", "edgetier"],
        batch_sizes=[1],
        concurrency=[1],
        protocols=["grpc", "http"],
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        repeats=args.repeats,
        settings=ServerSettings(dynamic_batching=False, intra_op_threads=1),
    )
    save(run_compare(cfg), args.out_dir, "added_latency")


if __name__ == "__main__":
    main()
