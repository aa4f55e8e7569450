"""Serve one ONNX model with PyTriton (Triton Inference Server driven from Python)."""

# mypy: ignore-errors
# (run by the peer interpreter against untyped peer libraries; not part of the typed API)
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
from _common import ORT_TO_NUMPY, parser, session, wait_for_signal
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    sess = session(args)
    out_names = [o.name for o in sess.get_outputs()]

    @batch  # type: ignore[misc]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = sess.run(out_names, inputs)
        return dict(zip(out_names, results, strict=True))

    def spec(t: object) -> Tensor:
        shape = tuple(-1 if not isinstance(d, int) else d for d in t.shape[1:])  # type: ignore[attr-defined]
        return Tensor(name=t.name, dtype=ORT_TO_NUMPY[t.type], shape=shape)  # type: ignore[attr-defined]

    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=[spec(t) for t in sess.get_inputs()],
            outputs=[spec(t) for t in sess.get_outputs()],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                # batcher=None keeps the batch dimension but turns dynamic batching off.
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)
                if args.dynamic_batching
                else None,
            ),
            strict=False,
        )
        triton.run()
        print("READY", flush=True)
        wait_for_signal()


if __name__ == "__main__":
    main()
