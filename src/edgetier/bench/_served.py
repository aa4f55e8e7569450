"""The model as `bench compare` serves it: the model's own config, with options on top.

Every compared system gets the same settings, and they are the ones `edgetier serve` would
use: where the model lives in a repository (a model folder, ``<model>/<version>/model.onnx``
beside a config.yaml, or a demo model name) they come from its config.yaml, with the
server's defaults for what that leaves out; a bare ONNX file gets the server's defaults and
dynamic batching with a 2 ms queue delay. ONNX Runtime's session options are the server's
(intra-op spinning off unless the config turns it on). Each field given in
:class:`ServerSettings` overrides one value, and the report says where each came from::

    served = served_model("models/resnet50", ServerSettings(max_batch_size=4), cache)
    served.max_batch_size, served.sources["max_batch_size"]      # 4, "option"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgetier.errors import ConfigError
from edgetier.runtime import (
    PROVIDER_NAMES,
    ModelConfig,
    ModelRepository,
    config_for_file,
    load_config_file,
)
from edgetier.synthetic import DEMO_MODELS, build_demo_repository

__all__ = [
    "BARE_FILE_QUEUE_DELAY_US",
    "PROVIDER_CHOICES",
    "SPINNING_KEY",
    "ServedModel",
    "ServerSettings",
    "served_model",
]

BARE_FILE_QUEUE_DELAY_US = 2000
"""Queue delay of the dynamic batching a bare ONNX file (no config.yaml) is compared with."""

SPINNING_KEY = "session.intra_op.allow_spinning"
PROVIDER_CHOICES = tuple(sorted(PROVIDER_NAMES))  # cpu, cuda, tensorrt

OPTION, CONFIG, SERVER_DEFAULT, BENCH_DEFAULT = (
    "option",
    "config.yaml",
    "server default",
    "bench default",
)


@dataclass(frozen=True)
class ServerSettings:
    """Settings given for every compared system; None takes the model's own (see module)."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    """Setting it turns dynamic batching on unless ``dynamic_batching`` is False."""
    intra_op_threads: int | None = None
    """0 = ONNX Runtime's default (one thread per physical core)."""
    inter_op_threads: int | None = None
    dynamic_batching: bool | None = None
    provider: str | None = None
    """cpu, cuda or tensorrt: the first provider tried (the rest of the chain falls back)."""
    intra_op_spinning: bool | None = None
    """ONNX Runtime's ``session.intra_op.allow_spinning``; the server's default is off."""

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_delay_us", "intra_op_threads"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if self.inter_op_threads is not None and self.inter_op_threads < 0:
            raise ConfigError(f"inter_op_threads must be >= 0, got {self.inter_op_threads}")
        if self.provider is not None and self.provider not in PROVIDER_CHOICES:
            raise ConfigError(
                f"provider must be one of {', '.join(PROVIDER_CHOICES)}, got {self.provider!r}"
            )


@dataclass(frozen=True)
class ServedModel:
    """One model as every compared system serves it."""

    file: Path
    """The ONNX file every system loads."""
    name: str
    config: ModelConfig
    """What EdgeTier serves; raw ONNX Runtime loads it through the server's own engine."""
    origin: str
    """Where the config came from: the config.yaml, or that the file has none."""
    version: int | None
    provider: str
    """Short name of the provider the first instance runs on: cpu, cuda or tensorrt."""
    sources: dict[str, str] = field(default_factory=dict)
    """Setting -> where its value came from: option, config.yaml, server or bench default."""

    @property
    def max_batch_size(self) -> int:
        return self.config.max_batch_size

    @property
    def dynamic_batching(self) -> bool:
        return self.config.dynamic_batching is not None

    @property
    def max_queue_delay_us(self) -> int:
        dyn = self.config.dynamic_batching
        return dyn.max_queue_delay_microseconds if dyn is not None else 0

    @property
    def intra_op_threads(self) -> int:
        return self.config.optimization.intra_op_threads

    @property
    def inter_op_threads(self) -> int:
        return self.config.optimization.inter_op_threads

    @property
    def intra_op_spinning(self) -> bool:
        return self.config.parameters.get(SPINNING_KEY, "0") == "1"

    def settings(self) -> dict[str, Any]:
        """The settings for the report's JSON: each value with where it came from."""
        values: dict[str, Any] = {
            "max_batch_size": self.max_batch_size,
            "dynamic_batching": self.dynamic_batching,
            "max_queue_delay_us": self.max_queue_delay_us,
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
            "intra_op_spinning": self.intra_op_spinning,
            "provider": self.provider,
        }
        return {
            "config": self.origin,
            "version": self.version,
            **{k: {"value": v, "from": self.sources[k]} for k, v in values.items()},
        }

    def describe(self) -> str:
        """One sentence for the report: every setting, where it came from."""
        s = self.sources

        def threads(n: int) -> str:
            return f"{n}" if n else "0 = ONNX Runtime's default"

        batching = (
            f"dynamic batching on ({s['dynamic_batching']}), max queue delay "
            f"{self.max_queue_delay_us} us ({s['max_queue_delay_us']})"
            if self.dynamic_batching
            else f"dynamic batching off ({s['dynamic_batching']})"
        )
        version = f" version {self.version}" if self.version is not None else ""
        return (
            f"every system: {self.name}{version}, settings from {self.origin}: "
            f"ONNX Runtime {self.provider} provider ({s['provider']}), intra-op threads "
            f"{threads(self.intra_op_threads)} ({s['intra_op_threads']}), inter-op threads "
            f"{threads(self.inter_op_threads)} ({s['inter_op_threads']}), intra-op spinning "
            f"{'on' if self.intra_op_spinning else 'off'} ({s['intra_op_spinning']}), "
            f"max batch size {self.max_batch_size} ({s['max_batch_size']}), {batching}; "
            "raw ONNX Runtime loads the model through the server's engine (same session "
            "options); the client runs on the same machine"
        )

    def write_repository(self, root: Path) -> Path:
        """A one-model repository under ``root`` that serves exactly :attr:`config`."""
        model_dir = root / self.name
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        # a repository version's other files (external data) travel with its model file
        source = self.file.resolve()
        items = list(source.parent.iterdir()) if self.version is not None else [source]
        for item in items:
            same = item.name == source.name
            link = version_dir / (self.config.default_model_filename if same else item.name)
            if not link.exists():
                os.symlink(item, link)
        data = self.config.model_dump(mode="json", exclude_none=True)
        data["version_policy"] = {"latest": {"num_versions": 1}}
        (model_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        return root


def served_model(spec: str, options: ServerSettings, cache: Path) -> ServedModel:
    """Resolve an ONNX file, a repository model folder or a demo model name, and its config
    with ``options`` applied."""
    file, name, config_file, version = _locate(spec, cache)
    if config_file is not None:
        raw = load_config_file(config_file, name=name)
        base = ModelRepository(config_file.parent.parent).config(name)
        origin = str(config_file)
        fallback = SERVER_DEFAULT
    else:
        raw = None
        base = config_for_file(file, name=name)
        if base.max_batch_size > 0:
            base = config_for_file(
                file,
                name=name,
                dynamic_batching={"max_queue_delay_microseconds": BARE_FILE_QUEUE_DELAY_US},
            )
        origin = f"no config.yaml beside {file}: the server's defaults"
        fallback = BENCH_DEFAULT if base.max_batch_size > 0 else SERVER_DEFAULT
    sources = _sources(raw, options, fallback)
    data = _apply(base.model_dump(mode="json", exclude_none=True), options)
    data.pop("name")
    config = config_for_file(file, name=name, **data)
    return ServedModel(
        file=file,
        name=name,
        config=config,
        origin=origin,
        version=version,
        provider=first_provider(config),
        sources=sources,
    )


def first_provider(config: ModelConfig) -> str:
    """The provider the server's first instance would run on (what this build has)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    group = config.instance_group[0]
    wanted = ["cpu"] if group.kind == "KIND_CPU" else list(config.optimization.execution_providers)
    for key in wanted:
        if PROVIDER_NAMES[key] in available:
            return key
    raise ConfigError(
        f"model {config.name!r}: none of the providers {wanted} is in this onnxruntime "
        f"(it has {', '.join(sorted(available))}); pass --provider cpu"
    )


def _locate(spec: str, cache: Path) -> tuple[Path, str, Path | None, int | None]:
    """(ONNX file, model name, its config.yaml or None, version or None)."""
    path = Path(spec)
    if path.is_file():
        if path.parent.name.isdigit():  # <repo>/<model>/<version>/model.onnx
            config_file = path.parent.parent / "config.yaml"
            name = path.parent.parent.name
            found = config_file if config_file.is_file() else None
            return path, name, found, int(path.parent.name)
        return path, path.stem, None, None
    if path.is_dir():
        return _from_folder(path)
    if spec not in DEMO_MODELS:
        raise ConfigError(
            f"model must be an ONNX file, a repository model folder or a demo model "
            f"({', '.join(DEMO_MODELS)}), got {spec!r}"
        )
    build_demo_repository(cache, models=[spec])
    return _from_folder(cache / spec)


def _from_folder(folder: Path) -> tuple[Path, str, Path | None, int | None]:
    repo, name = ModelRepository(folder.parent), folder.name
    versions = repo.versions_to_load(name)
    if not versions:
        raise ConfigError(
            f"model folder {folder} holds no version its version_policy selects "
            f"(versions on disk: {repo.versions(name)})"
        )
    version = versions[-1]
    file = repo.model_path(name, version)
    if not file.is_file():
        raise ConfigError(f"model folder {folder}: version {version} has no {file.name}")
    config_file = folder / "config.yaml"
    return file, name, config_file if config_file.is_file() else None, version


def _sources(raw: ModelConfig | None, options: ServerSettings, fallback: str) -> dict[str, str]:
    """Where each setting comes from: the option, the config file, or a default."""
    given: set[str] = set()
    if raw is not None:
        opt = raw.optimization.model_fields_set
        dyn = raw.dynamic_batching
        given = {
            name
            for name, there in (
                ("max_batch_size", "max_batch_size" in raw.model_fields_set),
                ("dynamic_batching", "dynamic_batching" in raw.model_fields_set),
                (
                    "max_queue_delay_us",
                    dyn is not None and "max_queue_delay_microseconds" in dyn.model_fields_set,
                ),
                ("intra_op_threads", "intra_op_threads" in opt),
                ("inter_op_threads", "inter_op_threads" in opt),
                ("intra_op_spinning", SPINNING_KEY in raw.parameters),
                (
                    "provider",
                    "execution_providers" in opt or "instance_group" in raw.model_fields_set,
                ),
            )
            if there
        }
    sources = {}
    for name in (
        "max_batch_size",
        "dynamic_batching",
        "max_queue_delay_us",
        "intra_op_threads",
        "inter_op_threads",
        "intra_op_spinning",
        "provider",
    ):
        if getattr(options, name) is not None:
            sources[name] = OPTION
        elif name in given:
            sources[name] = CONFIG
        elif name in ("dynamic_batching", "max_queue_delay_us"):
            sources[name] = fallback
        else:
            sources[name] = SERVER_DEFAULT
    if options.dynamic_batching is None:
        if options.max_batch_size == 0:
            sources["dynamic_batching"] = sources["max_queue_delay_us"] = OPTION
        elif options.max_queue_delay_us is not None:
            sources["dynamic_batching"] = OPTION  # a queue delay given turns batching on
    return sources


def _apply(data: dict[str, Any], options: ServerSettings) -> dict[str, Any]:
    """The config mapping with the options given written over it."""
    if options.max_batch_size is not None:
        if (options.max_batch_size > 0) != (data["max_batch_size"] > 0):
            # dims with and without the batch dimension differ: read them from the graph
            data["input"], data["output"] = [], []
        data["max_batch_size"] = options.max_batch_size
    if options.dynamic_batching is False or (
        options.max_batch_size == 0 and options.dynamic_batching is None
    ):
        data.pop("dynamic_batching", None)  # max_batch_size 0 given: nothing left to batch
    elif options.dynamic_batching or options.max_queue_delay_us is not None:
        dyn = dict(data.get("dynamic_batching") or {})
        if options.max_queue_delay_us is not None:
            dyn["max_queue_delay_microseconds"] = options.max_queue_delay_us
        data["dynamic_batching"] = dyn
    opt = data["optimization"]
    if options.intra_op_threads is not None:
        opt["intra_op_threads"] = options.intra_op_threads
    if options.inter_op_threads is not None:
        opt["inter_op_threads"] = options.inter_op_threads
    if options.provider is not None:
        order = list(PROVIDER_NAMES)  # fastest first: the given one, then those after it
        opt["execution_providers"] = order[order.index(options.provider) :]
        kind = "KIND_CPU" if options.provider == "cpu" else "KIND_GPU"
        data["instance_group"] = [
            {**g, "kind": kind, "gpus": [] if kind == "KIND_CPU" else g.get("gpus", [])}
            for g in data["instance_group"]
        ]
    if options.intra_op_spinning is not None:
        data["parameters"] = {
            **data.get("parameters", {}),
            SPINNING_KEY: "1" if options.intra_op_spinning else "0",
        }
    return data
