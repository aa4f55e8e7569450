"""The model manager: which model versions are loaded, their state, engines and batchers.

Each loaded version has the engines ``edgetier.runtime.load_engines`` gives for its
instance groups, one per worker of one DynamicBatcher. Loading,
reloading and unloading never drop requests in flight: the new version's batcher starts
and is swapped in before the old one drains and stops. A model that fails to load is
UNAVAILABLE with its reason while the others go on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from edgetier.batching import DynamicBatcher
from edgetier.errors import (
    EdgeTierError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    UnsupportedError,
)
from edgetier.runtime import (
    DynamicBatchingConfig,
    Engine,
    ModelConfig,
    ModelRepository,
    load_engines,
)
from edgetier.server._signature import Signature
from edgetier.server._stats import VersionStats

log = logging.getLogger("edgetier.server")

INLINE_EXECUTE_US = 200
"""A single-instance model whose batches take less than this (on average) runs requests
that find it idle on the event loop thread: the thread hand-off would cost more."""

ControlMode = Literal["none", "poll", "explicit"]


class ModelState(enum.StrEnum):
    """Where a model version stands, as the repository index shows it."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


class ModelVersion:
    """One loaded model version: engines, batcher, signature, counters, precomputed metadata."""

    def __init__(
        self,
        name: str,
        version: int,
        config: ModelConfig,
        engines: list[Engine],
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.engines = engines
        # where the instances run, in instance order ("CUDAExecutionProvider" for most)
        self.provider = ", ".join(dict.fromkeys(e.provider for e in engines)) or "none"
        # what runs differently from the config (a provider that failed, graphs off)
        self.notes = list(dict.fromkeys(n for e in engines for n in e.notes))
        self.stats = VersionStats()
        self.signature = Signature(
            name,
            [(t.name, t.datatype, config.full_shape(t)) for t in config.input],
            [(t.name, t.datatype, config.full_shape(t)) for t in config.output],
            max_batch_size=config.max_batch_size,
        )
        self.batched = config.max_batch_size > 0
        dyn = config.dynamic_batching
        self.batcher = DynamicBatcher(
            [engine.run for engine in engines],  # one engine per worker thread
            max_batch_size=config.max_batch_size,
            dynamic=dyn is not None,
            max_queue_delay_us=dyn.max_queue_delay_microseconds if dyn else 0,
            preferred_batch_sizes=tuple(dyn.preferred_batch_size) if dyn else (),
            max_queue_size=dyn.max_queue_size if dyn else 0,
            priority_levels=dyn.priority_levels if dyn else 0,
            default_priority_level=dyn.default_priority_level if dyn else 0,
            default_timeout_us=dyn.default_timeout_microseconds if dyn else 0,
            max_queue_wait_us=(dyn or DynamicBatchingConfig()).max_queue_wait_microseconds,
            instance_count=max(1, len(engines)),
            inline_execute_us=INLINE_EXECUTE_US,
            name=f"{name}/{version}",
        )

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """KServe v2 model metadata, with the execution provider in ``parameters``."""
        return {
            "name": self.name,
            "versions": versions,
            "platform": self.config.platform,
            "inputs": [e.metadata() for e in self.signature.inputs.values()],
            "outputs": [e.metadata() for e in self.signature.outputs.values()],
            "parameters": self._parameters(),
        }

    def _parameters(self) -> dict[str, str]:
        params = {"execution_provider": self.provider}
        if self.notes:
            params["engine_notes"] = "; ".join(self.notes)
        return params

    def config_json(self) -> dict[str, Any]:
        """Triton's model-config JSON, plus the provider actually running it."""
        data = self.config.to_triton_json()
        params = dict(data.get("parameters") or {})
        params.update({k: {"string_value": v} for k, v in self._parameters().items()})
        data["parameters"] = params
        return data

    def close(self) -> None:
        for engine in self.engines:
            with contextlib.suppress(Exception):
                engine.close()


@dataclass
class _ModelEntry:
    """A model of the repository: its state and the versions it serves."""

    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = "not loaded"
    fingerprint: str = ""
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    latest: ModelVersion | None = None
    version_strs: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wanted: bool = True
    """Whether the model should be loaded (readiness waits for it): not once unloaded."""


class ModelManager:
    """Loads the models of a repository and resolves requests to loaded versions."""

    def __init__(
        self,
        repository: ModelRepository,
        *,
        mode: ControlMode = "none",
        startup_models: list[str] | None = None,
        poll_interval_s: float = 15.0,
    ) -> None:
        self.repository = repository
        self.mode: ControlMode = mode
        self._startup_models = startup_models or []
        self._poll_interval_s = poll_interval_s
        self._models: dict[str, _ModelEntry] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the models the control mode asks for; failures leave a model UNAVAILABLE."""
        names = self._scan()
        if self.mode == "explicit":
            wanted = self._startup_models
            if "*" in wanted:
                wanted = names
            unknown = [n for n in wanted if n not in names]
            if unknown:
                log.warning(
                    "--load-model names models the repository does not hold: %s",
                    ", ".join(unknown),
                )
            targets = [n for n in wanted if n in names]
        else:
            targets = names
        for name in targets:
            await self._load(name)
        if self.mode == "poll":
            self._poll_task = asyncio.create_task(self._poll(), name="edgetier-repository-poll")

    async def stop(self) -> None:
        """Drain every batcher, then close the engines."""
        self._closing = True
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        for entry in list(self._models.values()):
            old = list(entry.versions.values())
            entry.versions, entry.latest, entry.version_strs = {}, None, []
            entry.state, entry.reason = ModelState.UNAVAILABLE, "server stopped"
            await self._retire(old)

    # --------------------------------------------------------------------- lookup

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The loaded version a request names ("" = the latest); hot path."""
        entry = self._models.get(name)
        if entry is None:
            if not self._exists(name):
                raise ModelNotFoundError(f"model {name!r} is not in the repository")
            raise ModelNotReadyError(f"model {name!r} is not loaded")
        if not version:
            found = entry.latest
            if found is None:
                raise ModelNotReadyError(f"model {name!r} is {entry.state.value}: {entry.reason}")
            return found
        if not (version.isascii() and version.isdigit()):  # int() would take " 1" and "+1"
            raise InvalidInputError(f"model version must be a positive integer, got {version!r}")
        number = int(version)
        found = entry.versions.get(number)
        if found is None:
            if entry.state is ModelState.READY:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {number} loaded; loaded: "
                    f"{', '.join(entry.version_strs) or 'none'}"
                )
            raise ModelNotReadyError(f"model {name!r} is {entry.state.value}: {entry.reason}")
        return found

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except EdgeTierError:
            return False
        return True

    def all_ready(self) -> bool:
        """Whether every model that should be loaded serves (Triton's strict readiness)."""
        return all(e.latest is not None for e in self._models.values() if e.wanted)

    def versions_of(self, name: str) -> list[str]:
        entry = self._models.get(name)
        return list(entry.version_strs) if entry else []

    def loaded(self) -> list[ModelVersion]:
        return [v for e in self._models.values() for v in e.versions.values()]

    def index(self, *, ready_only: bool = False) -> list[dict[str, str]]:
        """The repository index: every model, its versions and state (with a reason)."""
        rows: list[dict[str, str]] = []
        for name in sorted(set(self._scan(quiet=True)) | set(self._models)):
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append({"name": name, "state": "UNAVAILABLE", "reason": "not loaded"})
                continue
            if entry.versions:
                rows.extend(
                    {
                        "name": name,
                        "version": v.version_str,
                        "state": entry.state.value,
                        "reason": entry.reason,
                    }
                    for v in entry.versions.values()
                )
            elif not ready_only:
                rows.append({"name": name, "state": entry.state.value, "reason": entry.reason})
        if ready_only:
            rows = [r for r in rows if r["state"] == "READY"]
        return rows

    # -------------------------------------------------------------- model control

    async def load(self, name: str) -> None:
        """Load or reload a model (repository extension; explicit mode)."""
        self._check_control("load")
        if not self._exists(name):
            raise ModelNotFoundError(f"model {name!r} is not in the repository")
        await self._load(name)
        entry = self._models[name]
        if entry.state is not ModelState.READY:
            raise ModelNotReadyError(f"failed to load model {name!r}: {entry.reason}")

    async def unload(self, name: str) -> None:
        """Unload a model after the requests it holds are answered."""
        self._check_control("unload")
        entry = self._models.get(name)
        if entry is None:
            if not self._exists(name):
                raise ModelNotFoundError(f"model {name!r} is not in the repository")
            return
        await self._unload(entry, "unloaded")

    def _check_control(self, verb: str) -> None:
        if self.mode != "explicit":
            raise UnsupportedError(
                f"cannot {verb} models: model control mode is {self.mode!r}; start the "
                f"server with --model-control-mode explicit"
            )

    # ------------------------------------------------------------------ internals

    def _scan(self, *, quiet: bool = False) -> list[str]:
        try:
            return self.repository.models()
        except Exception as exc:
            if not quiet:
                log.error("cannot list the model repository: %s", exc)
            return []

    def _exists(self, name: str) -> bool:
        return name in self._scan(quiet=True)

    async def _load(self, name: str) -> bool:
        """Load or reload a model's versions; False (logged, state kept) when it fails."""
        entry = self._models.setdefault(name, _ModelEntry(name))
        entry.wanted = True
        async with entry.lock:
            previous_state = entry.state
            if not entry.versions:
                entry.state, entry.reason = ModelState.LOADING, "loading"
            try:
                fingerprint = await asyncio.to_thread(self.repository.fingerprint, name)
                new = await asyncio.to_thread(self._build, name)
                for version in new:
                    await version.batcher.start()
            except Exception as exc:
                reason = (
                    exc.message
                    if isinstance(exc, EdgeTierError)
                    else f"{type(exc).__name__}: {exc}"
                )
                log.error("model %s failed to load: %s", name, reason)
                if entry.versions:
                    # A failed reload keeps the versions that serve.
                    entry.state = previous_state
                    entry.reason = f"reload failed: {reason}"
                else:
                    entry.state, entry.reason = ModelState.UNAVAILABLE, reason
                return False
            old = list(entry.versions.values())
            entry.versions = {v.version: v for v in new}
            entry.latest = new[-1] if new else None
            entry.version_strs = [v.version_str for v in new]
            entry.fingerprint = fingerprint
            entry.state, entry.reason = ModelState.READY, ""
            for version in new:
                log.info(
                    "model %s version %d ready on %s (%d instance%s)",
                    name,
                    version.version,
                    version.provider,
                    len(version.engines),
                    "" if len(version.engines) == 1 else "s",
                )
            await self._retire(old)
            return True

    def _build(self, name: str) -> list[ModelVersion]:
        """Load every version the policy selects (blocking: runs in a thread)."""
        config = self.repository.config(name)
        numbers = sorted(self.repository.versions_to_load(name))
        if not numbers:
            raise EdgeTierError(f"model {name!r} has no version to load under its version_policy")
        built: list[ModelVersion] = []
        try:
            for number in numbers:
                engines = load_engines(self.repository.model_path(name, number), config)
                built.append(ModelVersion(name, number, config, engines))
        except BaseException:
            for version in built:
                version.close()
            raise
        return built

    async def _unload(self, entry: _ModelEntry, reason: str) -> None:
        entry.wanted = False
        async with entry.lock:
            old = list(entry.versions.values())
            entry.state, entry.reason = ModelState.UNLOADING, "unloading"
            entry.versions, entry.latest, entry.version_strs = {}, None, []
            await self._retire(old)
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
            entry.fingerprint = ""
            log.info("model %s unloaded", entry.name)

    async def _retire(self, versions: list[ModelVersion]) -> None:
        """Drain and stop old versions' batchers, then close their engines."""
        for version in versions:
            try:
                await version.batcher.stop(drain=True)
            finally:
                await asyncio.to_thread(version.close)

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.rescan()
            except Exception:
                log.exception("repository poll failed")

    async def rescan(self) -> None:
        """Load new models, reload changed ones, unload removed ones (poll mode)."""
        names = set(self._scan())
        for name in sorted(names):
            entry = self._models.get(name)
            try:
                fingerprint = await asyncio.to_thread(self.repository.fingerprint, name)
            except Exception as exc:
                fingerprint = f"error: {exc}"
            if entry is None or entry.fingerprint != fingerprint:
                log.info("model %s %s", name, "found" if entry is None else "changed: reloading")
                if not await self._load(name):
                    # Remember the fingerprint that failed (a failed reload too, whose old
                    # versions go on serving): it is retried, and logged, once per change.
                    self._models[name].fingerprint = fingerprint
        for name in list(self._models):
            if name not in names and self._models[name].versions:
                await self._unload(self._models[name], "removed from the repository")
