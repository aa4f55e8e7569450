"""The model repository: ``<root>/<model>/config.yaml`` and ``<version>/model.onnx`` (.tflite).

Usage::

    repo = ModelRepository(Path("models"))
    for name in repo.models():
        print(name, repo.versions_to_load(name), repo.config(name).max_batch_size)
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from edgetier.errors import ModelLoadError, ModelNotFoundError
from edgetier.runtime._autocomplete import complete_config
from edgetier.runtime._config import ModelConfig, load_config_file, parse_config
from edgetier.runtime._registry import engine_entry, known_platforms

__all__ = ["CONFIG_FILENAME", "ModelRepository"]

CONFIG_FILENAME = "config.yaml"
_VALID_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ModelRepository:
    """Reads models, versions and validated configs from a repository directory.

    Configs are cached and re-read when the model's :meth:`fingerprint` changes, so a
    server polling the repository pays for parsing only when something changed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[str, tuple[str, ModelConfig]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def models(self) -> list[str]:
        """Model names (the sub-directories of the root), sorted."""
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            raise ModelNotFoundError(f"model repository {self.root} does not exist") from None
        return sorted(
            e.name for e in entries if e.is_dir() and _VALID_NAME.match(e.name) is not None
        )

    def config(self, name: str) -> ModelConfig:
        """The model's config.yaml, validated and completed from the ONNX graph."""
        fingerprint = self.fingerprint(name)
        cached = self._cache.get(name)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        config = self._read_config(name)
        with self._lock:
            self._cache[name] = (fingerprint, config)
        return config

    def versions(self, name: str) -> list[int]:
        """Versions on disk (positive integer directory names), sorted."""
        model_dir = self._model_dir(name)
        return sorted(
            int(e.name)
            for e in os.scandir(model_dir)
            if e.is_dir() and e.name.isdigit() and int(e.name) > 0
        )

    def versions_to_load(self, name: str) -> list[int]:
        """The versions that the model's version_policy selects, sorted."""
        return self._select(name, self._raw_config(name))

    def model_path(self, name: str, version: int) -> Path:
        """Path of the model file of one version (it may not exist: the engine says so)."""
        versions = self.versions(name)
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; versions on disk: {versions}"
            )
        filename = self._raw_config(name).default_model_filename
        return self.root / name / str(version) / filename

    def fingerprint(self, name: str) -> str:
        """A digest of the model's files (path, size, mtime): changes on any edit.

        Covers the files at the top of the model directory and the version directories;
        other directories (a TensorRT engine cache the engines write) are left out, so
        that writing a cache does not look like a new model.
        """
        model_dir = self._model_dir(name)
        digest = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(model_dir):
            if dirpath == str(model_dir):
                dirnames[:] = [d for d in dirnames if d.isdigit()]
            dirnames.sort()
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                try:
                    stat = os.stat(full)
                except FileNotFoundError:
                    continue  # removed while walking: the next poll sees the change
                rel = os.path.relpath(full, model_dir)
                digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    # -- internals --------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        if not _VALID_NAME.match(name) or not (self.root / name).is_dir():
            raise ModelNotFoundError(
                f"model {name!r} is not in the repository {self.root}; "
                f"models: {', '.join(self.models()) or 'none'}"
            )
        return self.root / name

    def _raw_config(self, name: str) -> ModelConfig:
        """config.yaml as written (or the defaults), not completed from the graph.

        A config that names no platform, backend or file gets the platform of the file
        the newest version holds (``model.onnx``, ``model.tflite``), as Triton does.
        """
        path = self._model_dir(name) / CONFIG_FILENAME
        if path.is_file():
            config = load_config_file(path, name=name)
        else:
            config = parse_config({}, source=str(path), name=name)
        if {"platform", "backend", "default_model_filename"} & config.model_fields_set:
            return config
        versions = self.versions(name)
        if (
            not versions
            or (self.root / name / str(versions[-1]) / config.default_model_filename).is_file()
        ):
            return config
        for platform in known_platforms():
            entry = engine_entry(platform)
            if (self.root / name / str(versions[-1]) / entry.filename).is_file():
                return config.model_copy(
                    update={
                        "platform": platform,
                        "backend": entry.backend,
                        "default_model_filename": entry.filename,
                    }
                )
        return config

    def _select(self, name: str, config: ModelConfig) -> list[int]:
        on_disk = self.versions(name)
        if not on_disk:
            raise ModelLoadError(
                f"model {name!r} has no version: expected a directory such as "
                f"{self.root / name / '1' / config.default_model_filename}"
            )
        policy = config.version_policy
        if policy.latest is not None:
            return on_disk[-policy.latest.num_versions :]
        if policy.specific is not None:
            missing = [v for v in policy.specific.versions if v not in on_disk]
            if missing:
                raise ModelLoadError(
                    f"model {name!r}: version_policy.specific.versions asks for {missing}, "
                    f"which are not on disk; versions on disk: {on_disk}"
                )
            return sorted(set(policy.specific.versions))
        return on_disk

    def _read_config(self, name: str) -> ModelConfig:
        raw = self._raw_config(name)
        version = self._select(name, raw)[-1]
        model_file = self.root / name / str(version) / raw.default_model_filename
        if not model_file.is_file():
            raise ModelLoadError(f"model {name!r}: {model_file} does not exist")
        return complete_config(raw, model_file, source=str(self.root / name / CONFIG_FILENAME))
