"""What the controller reads from a pushed model: its platform, config, cost, precision
and measured throughput.

The cost comes from ``edgetier.hardware.model_cost`` (FLOPs, weight and activation bytes
per inference), which the scheduler turns into a throughput estimate per device; the
measured throughput per hardware profile comes from an ``edgetier bench`` JSON of the same
file::

    cost, precision = onnx_facts(Path("model.onnx"))       # (ModelCost, "fp32")
    throughput("...bench json...", digest, "fp32")          # {"jetson-xavier-nx": 212.0}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from edgetier.errors import ConfigError, EdgeTierError

__all__ = ["onnx_facts", "parse_config", "platform_of", "throughput"]


def platform_of(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return {".plan": "tensorrt_plan", ".engine": "tensorrt_plan", ".tflite": "litert_tflite"}.get(
        suffix, "onnxruntime_onnx"
    )


def parse_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: the model config must be a mapping, got {type(data).__name__}")
    safe: dict[str, Any] = json.loads(json.dumps(data, default=str))  # JSON for the database
    return safe


def onnx_facts(path: Path) -> tuple[Any, str | None]:
    """The model's cost (edgetier.hardware.model_cost) and the precision its graph shows:
    int8 with quantize/dequantize nodes, fp16 when most weights are half floats."""
    import onnx

    from edgetier.hardware import model_cost

    try:
        cost = model_cost(path)
        graph = onnx.load(str(path), load_external_data=False).graph
    except EdgeTierError as exc:
        raise ConfigError(f"file: {exc.message}") from None
    except Exception as exc:
        raise ConfigError(f"file: not a readable ONNX model: {exc}") from None
    ops = {node.op_type for node in graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul"}:
        return cost, "int8"
    half = sum(1 for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    if graph.initializer and half * 2 > len(graph.initializer):
        return cost, "fp16"
    return cost, "fp32"


def throughput(text: str | None, digest: str, precision: str) -> dict[str, float]:
    """Inferences/s per hardware profile from an ``edgetier bench`` JSON: the best result
    measured at the version's precision."""
    if not text:
        return {}
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"bench: not JSON: {exc}") from None
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith(
        "edgetier.bench/"
    ):
        raise ConfigError("bench: schema must be edgetier.bench/*, from an edgetier bench run")
    sha = (report.get("model") or {}).get("sha256")
    if sha and f"sha256:{sha}" != digest:
        raise ConfigError(f"bench: it measured a model with sha256 {sha}, not this file ({digest})")
    profile = (report.get("hardware") or {}).get("profile")
    if not profile:
        raise ConfigError("bench: hardware.profile is missing; cannot tell where it was measured")
    rates = [
        float(r.get("throughput_per_s") or 0)
        for r in report.get("results") or []
        if r.get("precision", "fp32") == precision and not r.get("errors")
    ]
    if not rates or max(rates) <= 0:
        raise ConfigError(f"bench: no result at precision {precision} with a throughput")
    return {str(profile): max(rates)}
