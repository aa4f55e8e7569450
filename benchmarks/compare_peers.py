"""EdgeTier against raw ONNX Runtime, PyTriton and Ray Serve: ResNet-50 and the small model.

Needs the peers (see docs/benchmarks.md). Writes benchmarks/results/compare_resnet50.json
and compare_small.json.
"""

from __future__ import annotations

from _harness import options, save

from edgetier.bench import CompareConfig, run_compare


def main() -> None:
    args = options(__doc__ or "")
    for model, stem in (("resnet50", "compare_resnet50"), ("small", "compare_small")):
        cfg = CompareConfig(
            model=model,
            batch_sizes=[1, 8],
            concurrency=[1, 8],
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
            repeats=args.repeats,
            peer_python=args.peer_python,
        )
        save(run_compare(cfg), args.out_dir, stem)


if __name__ == "__main__":
    main()
