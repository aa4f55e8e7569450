"""HTTP and gRPC, with binary tensors, JSON tensors (HTTP) and system shared memory.

Small model and ResNet-50 at batch 1, concurrency 1 and 4, EdgeTier server.
Writes benchmarks/results/transports.json.
"""

from __future__ import annotations

from _harness import merge, options, save

from edgetier.bench import CompareConfig, run_compare


def main() -> None:
    args = options(__doc__ or "")
    runs = []
    for tensors, protocols in (
        ("binary", ["grpc", "http"]),
        ("shm", ["grpc", "http"]),
        ("json", ["http"]),
    ):
        runs.append(
            run_compare(
                CompareConfig(
                    model="small",
                    systems=["edgetier"],
                    batch_sizes=[1],
                    concurrency=[1, 4],
                    protocols=protocols,
                    tensors=tensors,  # type: ignore[arg-type]
                    duration_s=args.duration_s,
                    warmup_s=args.warmup_s,
                    repeats=args.repeats,
                )
            )
        )
    save(merge(runs), args.out_dir, "transports")


if __name__ == "__main__":
    main()
