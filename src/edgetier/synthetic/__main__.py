"""``python -m edgetier.synthetic train|evaluate ...``: rebuild or measure the shipped
pipeline models (see docs/pipeline-models.md)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = ("train", "evaluate")
    if not args or args[0] not in commands:
        print(
            "usage: python -m edgetier.synthetic {train,evaluate} [options]\n"
            "  train     train the detector and colour classifier on synthetic scenes\n"
            "  evaluate  mAP@0.5, MOTA and IDF1 of a detector on held-out scenes",
            file=sys.stderr,
        )
        return 2
    if args[0] == "train":
        from edgetier.synthetic._train import main as train

        return train(args[1:])
    from edgetier.synthetic._quality import main as evaluate

    return evaluate(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
