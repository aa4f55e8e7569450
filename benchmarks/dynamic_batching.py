"""Dynamic batching on against off at concurrency 8 (ResNet-50, batch-1 requests, gRPC).

Writes benchmarks/results/dynamic_batching.json.
"""

from __future__ import annotations

from _harness import merge, options, relabel, save

from edgetier.bench import CompareConfig, ServerSettings, run_compare


def main() -> None:
    args = options(__doc__ or "")
    runs, rows = [], []
    for on in (True, False):
        cfg = CompareConfig(
            model="resnet50",
            systems=["edgetier"],
            batch_sizes=[1],
            concurrency=[8],
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            repeats=args.repeats,
            settings=ServerSettings(dynamic_batching=on),
        )
        report = run_compare(cfg)
        runs.append(report)
        rows += relabel(report, f"edgetier, dynamic batching {'on' if on else 'off'}")
    merged = merge(runs, rows)
    on_rate, off_rate = (r.throughput_per_s for r in rows)
    merged.notes.append(f"throughput gain of dynamic batching: {on_rate / off_rate:.2f}x")
    save(merged, args.out_dir, "dynamic_batching")


if __name__ == "__main__":
    main()
