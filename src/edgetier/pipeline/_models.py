"""Models of a pipeline: where their files are, their sidecars, their engines and batchers.

Each model stage gets the engines `edgetier.runtime.load_engines` gives for its
instance count (one per worker) behind one `edgetier.batching` DynamicBatcher, in
process: the frames (or crops) of every stream are submitted to the same batcher, which
merges them into batches across streams.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from edgetier.errors import ConfigError, ModelLoadError

log = logging.getLogger("edgetier.pipeline")

PACKAGE_SCHEME = "package://"


def package_models_dir() -> Path:
    """The folder of models shipped inside the edgetier.pipeline package."""
    return Path(str(resources.files("edgetier.pipeline") / "models"))


def resolve_model_path(ref: str, *, base_dir: Path) -> Path:
    """`package://NAME` -> the shipped NAME.onnx; a relative path is relative to `base_dir`."""
    if ref.startswith(PACKAGE_SCHEME):
        name = ref.removeprefix(PACKAGE_SCHEME)
        path = package_models_dir() / f"{name}.onnx"
        if not path.is_file():
            shipped = sorted(p.stem for p in package_models_dir().glob("*.onnx"))
            raise ConfigError(
                f"model {ref!r}: EdgeTier ships no model {name!r} "
                f"(it has: {', '.join(shipped) or 'none'}); see docs/pipelines.md to build them"
            )
        return path
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"model {ref!r}: {path} does not exist")
    return path


def read_sidecar(model_path: Path) -> dict[str, Any]:
    """The YAML next to a model (same stem), or {} when there is none."""
    sidecar = model_path.with_suffix(".yaml")
    if not sidecar.is_file():
        return {}
    data = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{sidecar}: must be a mapping, got {type(data).__name__}")
    return data


def class_names(sidecar: dict[str, Any], count: int) -> list[str]:
    """Class names from a sidecar (`names` as a list or an {index: name} map)."""
    names = sidecar.get("names")
    if isinstance(names, dict):
        return [str(names.get(i, names.get(str(i), f"class{i}"))) for i in range(count)]
    if isinstance(names, list) and len(names) >= count:
        return [str(n) for n in names[:count]]
    return [f"class{i}" for i in range(count)]


@dataclass
class ModelInfo:
    path: Path
    input_name: str
    input_shape: list[int]  # [N, 3, H, W] with -1 where dynamic
    output_names: list[str]
    output_shapes: list[list[int]]
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def input_hw(self) -> tuple[int, int]:
        size = self.sidecar.get("input_size") or self.sidecar.get("imgsz")
        if isinstance(size, int):
            return size, size
        if isinstance(size, list | tuple) and len(size) == 2:
            return int(size[0]), int(size[1])
        h, w = self.input_shape[2], self.input_shape[3]
        if h <= 0 or w <= 0:
            raise ConfigError(
                f"{self.path}: input {self.input_name!r} has dynamic H/W {self.input_shape}; "
                "give input_size: [H, W] in the model's sidecar YAML"
            )
        return h, w


def inspect_model(path: Path) -> ModelInfo:
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable ONNX model: {exc}") from None
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelLoadError(f"{path}: a pipeline model needs 1 input, it has {len(inputs)}")

    def dims(value: onnx.ValueInfoProto) -> list[int]:
        shape = value.type.tensor_type.shape
        return [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]

    shape = dims(inputs[0])
    if len(shape) != 4 or shape[1] not in (3, -1):
        raise ModelLoadError(f"{path}: input must be [N, 3, H, W], got {shape}")
    return ModelInfo(
        path=path,
        input_name=inputs[0].name,
        input_shape=shape,
        output_names=[o.name for o in graph.output],
        output_shapes=[dims(o) for o in graph.output],
        sidecar=read_sidecar(path),
    )


def _model_config(info: ModelInfo, name: str, stage: Any) -> Any:
    from edgetier.runtime import config_for_file

    optimization: dict[str, Any] = {"intra_op_threads": stage.intra_op_threads}
    if stage.execution_providers is not None:  # else the runtime's default order, where
        optimization["execution_providers"] = stage.execution_providers  # absent ones skip
    return config_for_file(
        info.path,
        name=name,
        max_batch_size=stage.max_batch_size if info.input_shape[0] == -1 else 0,
        instance_group=[{"count": stage.instance_count}],
        optimization=optimization,
        # ORT's idle intra-op threads spin by default; in a pipeline they would spin
        # against the decoder and reader threads on the same cores
        parameters={"session.intra_op.allow_spinning": "0"},
    )


class ModelRunner:
    """The model's engines behind one DynamicBatcher, one engine per worker thread;
    `infer` splits large requests into batches."""

    def __init__(self, name: str, info: ModelInfo, stage: Any) -> None:
        from edgetier.batching import DynamicBatcher
        from edgetier.runtime import load_engines

        self.name = name
        self.info = info
        config = _model_config(info, name, stage)
        self.engines = load_engines(info.path, config)
        self.provider = self.engines[0].provider
        self.max_batch_size = stage.max_batch_size if info.input_shape[0] == -1 else 1
        self.batcher = DynamicBatcher(
            [engine.run for engine in self.engines],
            max_batch_size=self.max_batch_size if info.input_shape[0] == -1 else 0,
            max_queue_delay_us=stage.max_queue_delay_us,
            instance_count=len(self.engines),
            name=name,
        )
        log.info(
            "model %s: %s on %s (%d instance%s)",
            name,
            info.path.name,
            self.provider,
            len(self.engines),
            "" if len(self.engines) == 1 else "s",
        )

    @property
    def on_gpu(self) -> bool:
        from edgetier.runtime import GPU_PROVIDERS

        return self.provider in GPU_PROVIDERS

    async def start(self) -> None:
        await asyncio.to_thread(self._warm_up)
        await self.batcher.start()

    def _warm_up(self) -> None:
        """One batch of the largest size through each engine before the first frame.

        ORT sizes its memory arena (and GPU providers choose their kernels) on the first
        run of a shape; done here, that cost does not fall on the first frames.
        """
        try:
            h, w = self.info.input_hw
            rows = self.max_batch_size if self.info.input_shape[0] == -1 else 1
            rows = max(rows, self.info.input_shape[0])
            batch = np.zeros((rows, 3, h, w), np.float32)
            for engine in self.engines:
                engine.run({self.info.input_name: batch})
        except Exception as exc:  # the first real batch will report a real problem
            log.debug("model %s: warm-up skipped: %s", self.name, exc)

    async def stop(self) -> None:
        await self.batcher.stop(drain=True)
        for engine in self.engines:
            engine.close()

    async def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run `batch` ([N, 3, H, W]) through the batcher, in chunks of max_batch_size."""
        n = batch.shape[0]
        if n <= self.max_batch_size:
            result = await self.batcher.submit({self.info.input_name: batch})
            return result.outputs
        parts = await asyncio.gather(
            *(
                self.batcher.submit({self.info.input_name: batch[i : i + self.max_batch_size]})
                for i in range(0, n, self.max_batch_size)
            )
        )
        return {k: np.concatenate([p.outputs[k] for p in parts]) for k in parts[0].outputs}
