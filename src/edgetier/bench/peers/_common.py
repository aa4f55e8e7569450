"""Options shared by the peer scripts (stdlib only: the peer interpreter may lack edgetier)."""

# mypy: ignore-errors
# (run by the peer interpreter against untyped peer libraries; not part of the typed API)
from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort

ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help="path of model.onnx")
    p.add_argument("--name", required=True, help="model name to serve it under")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--metrics-port", type=int, default=0)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--intra-op-threads", type=int, default=0)
    p.add_argument("--inter-op-threads", type=int, default=0)
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    p.add_argument("--dynamic-batching", type=int, choices=(0, 1), default=1)
    p.add_argument("--intra-op-spinning", type=int, choices=(0, 1), default=1)
    return p


def session(args: argparse.Namespace) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.intra_op_threads
    opts.inter_op_num_threads = args.inter_op_threads
    if not args.intra_op_spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    chain = PROVIDERS[args.provider]
    return ort.InferenceSession(args.model, opts, providers=chain)


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT, then return so context managers shut down cleanly."""
    import signal
    import threading

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        pass
