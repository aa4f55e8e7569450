"""Reconcile: compare the node's desired state with what runs on it and take one
idempotent step, Kubernetes-style (level-triggered: a missed event or a restart costs
nothing, the next pass sees the difference again).

The steps, in the order a pass looks for work: stop pipelines no longer desired, unload
models no longer desired, remove their files, download a missing artifact (its sha256
checked), write a model's config.yaml, start (or restart, with back-off) the inference
server, load a model version through the server's repository API, write a pipeline file,
start (or restart, with back-off) its ``edgetier pipeline run``. Each step sets a
condition with a reason on the workloads it concerns::

    reconciler = Reconciler(settings, store, "edge-1", download=..., record=...)
    while await reconciler.step(desired):
        pass                      # converged, or waiting for a back-off or a start
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from edgetier.agent._children import Backoff, Child, kill_stale, start_time
from edgetier.agent._errors import ControllerError, ControllerUnreachableError
from edgetier.agent._files import (
    copy_sidecar,
    file_has_digest,
    fsync_dir,
    read_text,
    write_atomic,
)
from edgetier.agent._health import parse_pipeline_metrics, parse_server_metrics
from edgetier.agent._render import model_config_text, model_filename, render_pipeline
from edgetier.agent._server_api import ServerApi, is_loaded
from edgetier.agent._settings import AgentSettings, edgetier_command
from edgetier.agent._store import AgentStore, Artifact
from edgetier.agent._workloads import Recorder, WorkloadStatus, node_degraded, node_ready
from edgetier.control import (
    Assignment,
    Condition,
    DesiredState,
    Metadata,
    ModelVersionInfo,
    WorkloadState,
)
from edgetier.errors import ConfigError

__all__ = ["Reconciler"]

log = logging.getLogger("edgetier.agent")

Downloader = Callable[[str, Path], Awaitable[int]]
"""``download(digest, target)``: fetch an artifact into ``target``, sha256 checked; its size."""

SERVER = "serve"
_BUSY_S = 0.25


@dataclass
class _Want:
    """The desired state, arranged for the steps."""

    served: dict[str, list[Assignment]] = field(default_factory=dict)  # model -> assignments
    pipelines: dict[str, Assignment] = field(default_factory=dict)  # deployment -> assignment
    files: dict[tuple[str, int], tuple[ModelVersionInfo, str]] = field(default_factory=dict)
    """(model, version) -> its info and file name, for every model a workload needs."""
    configs: dict[str, str] = field(default_factory=dict)
    """model -> the text of the config.yaml it is served with."""
    signatures: dict[str, str] = field(default_factory=dict)
    """model -> what it should be loaded as: a hash of its config and its versions' digests."""

    @classmethod
    def of(cls, desired: DesiredState | None) -> _Want:
        want = cls()
        for a in sorted(desired.assignments if desired else [], key=lambda a: a.deployment):
            if _invalid(a) is not None:
                continue  # reported on its workload; nothing of it runs
            if a.kind == "model" and a.model is not None:
                want.served.setdefault(a.model.model, []).append(a)
                name = model_filename(a.model.platform, a.config)
                want.files.setdefault((a.model.model, a.model.version), (a.model, name))
            elif a.kind == "pipeline" and a.pipeline is not None:
                want.pipelines[a.deployment] = a
                if a.model is not None:
                    name = model_filename(a.model.platform, {})
                    want.files.setdefault((a.model.model, a.model.version), (a.model, name))
        for model, assignments in want.served.items():
            versions = [_version(a) for a in assignments]
            text = model_config_text(model, assignments[0].config, versions=versions)
            digests = sorted({a.model.digest for a in assignments if a.model is not None})
            want.configs[model] = text
            signature = hashlib.sha256((text + "\n".join(digests)).encode()).hexdigest()[:16]
            want.signatures[model] = signature
        return want

    def users(self, model: str, version: int) -> list[Assignment]:
        """The assignments that need this model version's file."""
        found = [a for a in self.served.get(model, []) if _version(a) == version]
        found += [
            a
            for a in self.pipelines.values()
            if a.model is not None and (a.model.model, a.model.version) == (model, version)
        ]
        return found


def _version(a: Assignment) -> int:
    return a.model.version if a.model is not None else 0


class Reconciler:
    """Brings this node to its desired state, one step per :meth:`step`."""

    def __init__(
        self,
        settings: AgentSettings,
        store: AgentStore,
        node: str,
        *,
        download: Downloader,
        record: Recorder,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.node = node
        self._download = download
        self._record = record
        self._wake = wake or (lambda: None)
        root = store.directory
        self.models_dir = root / "models"
        self.pipelines_dir = root / "pipelines"
        self.logs_dir = root / "logs"
        self.tmp_dir = root / "tmp"
        for folder in (self.models_dir, self.pipelines_dir, self.logs_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._edgetier = edgetier_command(settings)
        self.server: Child | None = None
        self._server_live = False
        self._loaded: dict[str, str] = {}  # model -> what the running server loaded (a hash)
        self.pipelines: dict[str, Child] = {}
        self.workloads: dict[str, WorkloadStatus] = {}
        self._leaving: dict[str, WorkloadStatus] = {}
        self._retry: dict[str, Backoff] = {}
        self._next_s: float | None = None
        self._index: dict[str, dict[str, str]] | None = None
        self._api = ServerApi(settings.http_port, timeout_s=settings.request_timeout_s)
        self._metrics = httpx.AsyncClient()
        self._pipeline_metrics: dict[str, str] = {}  # deployment -> its Prometheus sink
        self._closed = False
        host = settings.host if settings.host not in ("0.0.0.0", "::") else socket.gethostname()
        self.advertised_host = host

    # -- the public face -----------------------------------------------------------------

    async def step(self, desired: DesiredState | None) -> bool:
        """Take the next step towards ``desired``; False when there is none to take now
        (converged, or waiting: see :meth:`next_pass_s`)."""
        self._next_s = None
        self._index = None
        want = _Want.of(desired)
        self._track(desired)
        actions = (
            self._stop_unwanted_pipelines,
            self._unload_unwanted_models,
            self._remove_unwanted_files,
            self._fetch_artifacts,
            self._write_model_configs,
            self._run_server,
            self._load_models,
            self._run_pipelines,
        )
        for action in actions:
            if await action(want):
                return True
        for dep in list(self._leaving):
            self._leaving.pop(dep).to_phase("Stopped", "Removed", "no longer desired")
        return False

    def next_pass_s(self, default_s: float) -> float:
        """How long the agent may wait before the next pass when no step was taken."""
        return default_s if self._next_s is None else min(default_s, self._next_s)

    def workload_states(self) -> list[WorkloadState]:
        shown = {**self._leaving, **self.workloads}
        return [shown[d].state() for d in sorted(shown)]

    def conditions(self) -> list[Condition]:
        return [node_ready(self.workloads.values())]

    def degraded(self) -> Condition | None:
        """Degraded True naming the first degraded workload; None when none is."""
        return node_degraded(self.workloads.values())

    async def sample_health(self) -> None:
        """Read each running workload's figures (a model's from the server's metrics, a
        pipeline's from its Prometheus sink, where it has one) and judge them by its
        limits."""
        served = None
        if self._server_live and self.server is not None and self.server.running:
            text = await self._scrape(f"127.0.0.1:{self.settings.metrics_port}")
            served = parse_server_metrics(text) if text is not None else None
        for dep, status in self.workloads.items():
            model, kind = status.assignment.model, status.assignment.kind
            if status.phase != "Running":
                continue
            if kind == "model" and model is not None and served is not None:
                health = served.get((model.model, str(model.version)))
            elif kind == "pipeline" and dep in self._pipeline_metrics and dep in self.pipelines:
                text = await self._scrape(self._pipeline_metrics[dep])
                health = parse_pipeline_metrics(text) if text is not None else None
            else:
                continue
            if health is not None:
                status.judge(health)

    async def _scrape(self, where: str) -> str | None:
        """The Prometheus text at ``http://<where>/metrics``; None when it did not answer
        (a child starting or gone: the next heartbeat tries again)."""
        try:
            response = await self._metrics.get(f"http://{where}/metrics", timeout=2.0)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.debug("metrics at %s not read: %s", where, exc)
            return None
        return response.text

    async def verify_artifacts(self) -> list[str]:
        """Hash the files of the artifact index again (after a crash or a reboot a file
        may be torn or gone); the broken ones are forgotten, so they are fetched again."""
        broken: list[str] = []
        for artifact in self.store.artifacts():
            ok = await asyncio.to_thread(file_has_digest, artifact.path, artifact.digest)
            if not ok:
                broken.append(artifact.digest)
                self.store.forget_artifact(artifact.digest)
                artifact.path.unlink(missing_ok=True)
                log.warning(
                    "artifact %s (%s version %d) is missing or damaged: fetching it again",
                    artifact.digest,
                    artifact.model,
                    artifact.version,
                )
        return broken

    def stop_stale_children(self) -> list[str]:
        """Stop children an earlier run of this agent left running (it was killed)."""
        stopped = []
        for name, (pid, started) in self.store.children().items():
            if kill_stale(pid, started, timeout_s=self.settings.stop_timeout_s):
                stopped.append(name)
                log.info("stopped %s (pid %d) left by an earlier run", name, pid)
            self.store.forget_child(name)
        return stopped

    async def close(self) -> None:
        """Stop every child: the pipelines, then the server (which drains); idempotent."""
        if self._closed:
            return
        for dep in sorted(self.pipelines):
            await self._stop_child(self.pipelines.pop(dep), f"pipeline-{dep}")
        if self.server is not None:
            await self._stop_child(self.server, SERVER)
            self.server = None
        await self._api.aclose()
        await self._metrics.aclose()
        self._closed = True

    # -- bookkeeping ---------------------------------------------------------------------

    def _track(self, desired: DesiredState | None) -> None:
        assignments = {a.deployment: a for a in (desired.assignments if desired else [])}
        for dep in [d for d in self.workloads if d not in assignments]:
            leaving = self.workloads.pop(dep)
            leaving.progress("Stopping", "no longer desired")
            self._leaving[dep] = leaving
        for dep, assignment in assignments.items():
            self._leaving.pop(dep, None)
            status = self.workloads.get(dep)
            if status is None:
                status = WorkloadStatus(assignment, record=self._record)
                self.workloads[dep] = status
                status.progress("Accepted", f"generation {assignment.generation}")
            elif status.update(assignment):
                # Running means running *this* generation: until it is, the workload starts
                status.progress("Updated", f"generation {assignment.generation}")
                if status.phase in ("Running", "Failed"):
                    status.to_phase("Starting", "Updated", f"generation {assignment.generation}")
                self._retry.pop(f"child:pipeline-{dep}", None)
            problem = _invalid(assignment)
            if problem is not None:
                status.degrade("InvalidAssignment", problem)
                status.to_phase("Failed", "InvalidAssignment", problem)

    def _statuses(self, assignments: list[Assignment]) -> list[WorkloadStatus]:
        return [self.workloads[a.deployment] for a in assignments if a.deployment in self.workloads]

    def _backoff(self, key: str, *, restart: bool = False) -> Backoff:
        if key not in self._retry:
            s = self.settings
            self._retry[key] = (
                Backoff(s.restart_initial_s, s.restart_max_s)
                if restart
                else Backoff(s.retry_initial_s, s.retry_max_s)
            )
        return self._retry[key]

    def _later(self, delay_s: float) -> None:
        """Ask for another pass within ``delay_s``."""
        self._next_s = delay_s if self._next_s is None else min(self._next_s, delay_s)

    def _waiting(self, backoff: Backoff) -> bool:
        if backoff.ready():
            return False
        self._later(backoff.wait_s() + 0.01)
        return True

    def _failed(
        self,
        statuses: list[WorkloadStatus],
        backoff: Backoff,
        reason: str,
        message: str,
    ) -> float:
        """Count a failed try: Degraded with the reason, Failed after enough in a row;
        returns the delay before the next try."""
        delay = backoff.failed()
        self._later(delay + 0.01)
        text = f"{message}; try {backoff.failures}, next in {delay:.1f} s"
        log.warning("%s: %s", ", ".join(s.deployment for s in statuses) or self.node, text)
        for status in statuses:
            status.degrade(reason, text)
            if backoff.failures >= self.settings.restart_failures:
                status.to_phase("Failed", reason, text)
        return delay

    # -- steps ---------------------------------------------------------------------------

    async def _stop_unwanted_pipelines(self, want: _Want) -> bool:
        for dep in sorted(self.pipelines):
            if dep not in want.pipelines:
                await self._stop_child(self.pipelines.pop(dep), f"pipeline-{dep}")
                self._pipeline_metrics.pop(dep, None)
                self.store.release_slot(dep)
                (self.pipelines_dir / dep / "pipeline.yaml").unlink(missing_ok=True)
                self._retry.pop(f"child:pipeline-{dep}", None)
                self._record("pipeline.stopped", dep, {"reason": "no longer desired"})
                return True
        for dep in self.store.slots():
            if dep not in want.pipelines:  # stopped before a restart of the agent
                self.store.release_slot(dep)
                (self.pipelines_dir / dep / "pipeline.yaml").unlink(missing_ok=True)
        return False

    async def _unload_unwanted_models(self, want: _Want) -> bool:
        index = await self._server_index()
        if index is None:
            return False
        for model in sorted(index):
            if model not in want.served and is_loaded(index[model]):
                backoff = self._backoff(f"unload:{model}")
                if self._waiting(backoff):
                    continue
                try:
                    error = await self._api.unload(model)
                except httpx.HTTPError as exc:
                    self._server_lost(f"unloading {model}: {exc}")
                    return True
                self._loaded.pop(model, None)
                self._index = None
                if error is None:
                    backoff.succeeded()
                    self._record("model.unloaded", model, {})
                else:
                    self._later(backoff.failed())
                    self._record("model.unload_failed", model, {"error": error})
                return True
        return False

    async def _remove_unwanted_files(self, want: _Want) -> bool:
        index = await self._server_index()
        removed = False
        for model_dir in sorted(p for p in self.models_dir.iterdir() if p.is_dir()):
            model = model_dir.name
            served_now = index is not None and is_loaded(index.get(model, {}))
            settled = not served_now or self._loaded.get(model) == want.signatures.get(model, "")
            for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                if not version_dir.name.isdigit():
                    continue
                if (model, int(version_dir.name)) in want.files or not settled:
                    continue
                try:
                    await asyncio.to_thread(shutil.rmtree, version_dir)
                except OSError as exc:
                    log.warning("cannot remove %s: %s", version_dir, exc)
                    continue
                removed = True
            if model not in want.served and not served_now:
                (model_dir / "config.yaml").unlink(missing_ok=True)
            if not any(model_dir.iterdir()):
                with contextlib.suppress(OSError):
                    model_dir.rmdir()
        wanted = {info.digest for info, _ in want.files.values()}
        for artifact in self.store.artifacts():
            if artifact.digest not in wanted and not artifact.path.exists():
                self.store.forget_artifact(artifact.digest)
        if removed:
            self._record("files.removed", self.node, {})
        return removed

    async def _fetch_artifacts(self, want: _Want) -> bool:
        for (model, version), (info, filename) in want.files.items():
            if self._artifact_ready(info) is not None:
                continue
            statuses = self._statuses(want.users(model, version))
            backoff = self._backoff(f"download:{info.digest}")
            if self._waiting(backoff):
                continue
            for status in statuses:
                if status.phase != "Failed":
                    status.to_phase("Downloading", "Downloading", f"{model} version {version}")
                status.progress("Downloading", f"{model} version {version} ({info.digest})")
            target = self.models_dir / model / str(version) / filename
            try:
                size = await self._fetch(info, target)
            except ControllerUnreachableError as exc:
                self._failed(statuses, backoff, "ControllerUnreachable", f"download: {exc}")
                return True
            except ControllerError as exc:
                reason = "DigestMismatch" if "hash to" in exc.message else "DownloadFailed"
                self._failed(statuses, backoff, reason, exc.message)
                return True
            except OSError as exc:
                self._failed(statuses, backoff, "DownloadFailed", f"writing {target}: {exc}")
                return True
            backoff.succeeded()
            for status in statuses:
                status.recover()
                status.progress(
                    "Downloaded", f"{model} version {version}: {size} bytes, sha256 verified"
                )
                if status.phase in ("Downloading", "Pending"):
                    status.to_phase("Starting", "Downloaded")
            return True
        return False

    async def _fetch(self, info: ModelVersionInfo, target: Path) -> int:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{info.digest.removeprefix('sha256:')}.part"
        size = await self._download(info.digest, tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)
        self.store.add_artifact(Artifact(info.digest, info.model, info.version, target, size))
        self._record(
            "artifact.verified",
            info.model,
            {"version": info.version, "digest": info.digest, "size_bytes": size},
        )
        return size

    def _artifact_ready(self, info: ModelVersionInfo) -> Path | None:
        artifact = self.store.artifact(info.digest)
        if artifact is None or not artifact.path.is_file():
            return None
        if artifact.path.stat().st_size != artifact.size_bytes:
            return None
        return artifact.path

    def _files_ready(self, assignments: list[Assignment]) -> bool:
        return all(a.model is not None and self._artifact_ready(a.model) for a in assignments)

    async def _write_model_configs(self, want: _Want) -> bool:
        for model, assignments in want.served.items():
            if not self._files_ready(assignments):
                continue
            path = self.models_dir / model / "config.yaml"
            text = want.configs[model]
            if read_text(path) == text:
                continue
            write_atomic(path, text)
            for status in self._statuses(assignments):
                status.progress("Installed", f"{path} written")
            return True
        return False

    async def _run_server(self, want: _Want) -> bool:
        needed = bool(want.served)
        server = self.server
        statuses = [s for m in want.served.values() for s in self._statuses(m)]
        if server is not None and server.running and not needed:
            await self._stop_child(server, SERVER)
            self.server, self._server_live, self._loaded = None, False, {}
            return True
        if not needed:
            return False
        backoff = self._backoff(f"child:{SERVER}", restart=True)
        if server is not None and self._ended(
            server, statuses, backoff, "ServerExited", "edgetier serve exited"
        ):
            self._server_live, self._loaded = False, {}
            return True
        if server is None or not server.running:
            if self._waiting(backoff):
                return False
            await self._start_server()
            for status in statuses:
                status.progress("ServerStarting", f"edgetier serve on {self._endpoint()}")
                if status.phase in ("Pending", "Downloading"):
                    status.to_phase("Starting", "ServerStarting")
            return True
        if not self._server_live:
            if not await self._api.live():
                self._later(_BUSY_S)
                return False
            self._server_live = True
            for status in statuses:
                status.progress("ServerReady", f"edgetier serve live on {self._endpoint()}")
            return True
        if server.uptime_s() >= self.settings.healthy_after_s and backoff.failures:
            backoff.succeeded()
        return False

    async def _start_server(self) -> None:
        s = self.settings
        argv = [
            *self._edgetier,
            "serve",
            "--model-repository",
            str(self.models_dir.resolve()),
            "--model-control-mode",
            "explicit",
            "--host",
            s.host,
            "--http-port",
            str(s.http_port),
            "--grpc-port",
            str(s.grpc_port),
            "--metrics-port",
            str(s.metrics_port),
            "--drain-timeout-s",
            f"{max(s.stop_timeout_s - 2.0, 0.0):g}",
        ]
        self.server = await self._start_child(SERVER, argv, cwd=None, fingerprint="")
        self._server_live, self._loaded = False, {}

    async def _load_models(self, want: _Want) -> bool:
        if not self._server_live:
            return False
        index = await self._server_index()
        if index is None:
            return False
        for model, assignments in want.served.items():
            if not self._files_ready(assignments):
                continue
            statuses = self._statuses(assignments)
            signature = want.signatures[model]
            wanted = {str(_version(a)) for a in assignments}
            ready = {v for v, state in index.get(model, {}).items() if state == "READY"}
            if self._loaded.get(model) == signature and wanted <= ready:
                for status in statuses:
                    status.endpoint = self._endpoint()
                    if status.phase != "Running":
                        versions = ", ".join(sorted(wanted))
                        status.to_phase("Running", "Loaded", f"{model} version {versions} ready")
                continue
            backoff = self._backoff(f"load:{model}")
            if self._waiting(backoff):
                continue
            for status in statuses:
                status.progress("Loading", f"{model} versions {', '.join(sorted(wanted))}")
            error = await self._load(model, wanted)
            self._index = None
            if error is None:
                backoff.succeeded()
                self._loaded[model] = signature
                for status in statuses:
                    status.endpoint = self._endpoint()
                    status.to_phase("Running", "Loaded", f"{model} version(s) ready")
                self._record("model.loaded", model, {"versions": sorted(wanted)})
            else:
                self._failed(statuses, backoff, "LoadFailed", error)
            return True
        return False

    async def _load(self, model: str, versions: set[str]) -> str | None:
        try:
            return await self._api.load(model, versions)
        except httpx.HTTPError as exc:
            self._server_lost(f"loading {model}: {exc}")
            return f"load {model}: the server did not answer ({type(exc).__name__})"

    async def _run_pipelines(self, want: _Want) -> bool:
        for dep, assignment in want.pipelines.items():
            status = self.workloads.get(dep)
            if status is not None and await self._run_pipeline(dep, assignment, status):
                return True
        return False

    async def _run_pipeline(self, dep: str, a: Assignment, status: WorkloadStatus) -> bool:
        models: dict[str, Path] = {}
        if a.model is not None:
            path = self._artifact_ready(a.model)
            if path is None:
                return False  # the download step reports on it
            models[a.model.model] = path
        slot = self.store.slot(dep, limit=self.settings.max_pipelines)
        if slot is None:
            message = f"every one of the {self.settings.max_pipelines} pipeline port slots is taken"
            status.degrade("NoPortSlot", message)
            status.to_phase("Failed", "NoPortSlot", message)
            return False
        workdir = (self.pipelines_dir / dep).resolve()
        assert a.pipeline is not None
        try:
            data, endpoints = render_pipeline(
                a.pipeline,
                node=self.node,
                streams=a.streams,
                workdir=workdir,
                ports=self.settings.slot_ports(slot),
                models=models,
            )
        except ConfigError as exc:
            status.degrade("InvalidPipeline", exc.message)
            status.to_phase("Failed", "InvalidPipeline", exc.message)
            return False
        if a.model is not None:
            copy_sidecar(a.pipeline, a.model.model, models[a.model.model])
        sinks = [s for s in data.get("sinks") or [] if isinstance(s, dict)]
        sink = next((s for s in sinks if s.get("kind") == "prometheus"), None)
        if sink is not None:
            self._pipeline_metrics[dep] = f"127.0.0.1:{sink['port']}"
        text = yaml.safe_dump(data, sort_keys=False)
        path = workdir / "pipeline.yaml"
        fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
        if read_text(path) != text:
            write_atomic(path, text)
            status.progress("Configured", f"{path} written ({a.streams} stream(s))")
            return True
        name = f"pipeline-{dep}"
        child = self.pipelines.get(dep)
        backoff = self._backoff(f"child:{name}", restart=True)
        if child is not None and child.running and child.fingerprint != fingerprint:
            await self._stop_child(child, name)
            del self.pipelines[dep]
            backoff.succeeded()
            status.progress("Restarting", "the pipeline file changed")
            return True
        if child is not None and self._ended(child, [status], backoff, "ChildExited", "exited"):
            return True
        if child is None or not child.running:
            if self._waiting(backoff):
                return False
            argv = [
                *self._edgetier,
                "pipeline",
                "run",
                str(path),
                "--state-dir",
                str(workdir / "state"),
                "--progress-interval-s",
                "30",
            ]
            self.pipelines[dep] = await self._start_child(
                name, argv, cwd=workdir, fingerprint=fingerprint
            )
            status.endpoint = next(iter(endpoints.values()), None)
            status.progress("Started", f"edgetier pipeline run {path}")
            if status.phase != "Failed":
                status.to_phase("Starting", "Started")
            return True
        settled = child.uptime_s() >= self.settings.start_settle_s
        if settled and status.phase != "Running":
            status.to_phase("Running", "Running", f"pid {child.pid}, {a.streams} stream(s)")
        if child.uptime_s() >= self.settings.healthy_after_s and backoff.failures:
            backoff.succeeded()
        if not settled:
            self._later(self.settings.start_settle_s - child.uptime_s() + 0.01)
        return False

    # -- children and the server ---------------------------------------------------------

    async def _start_child(
        self, name: str, argv: list[str], *, cwd: Path | None, fingerprint: str
    ) -> Child:
        if cwd is not None:
            cwd.mkdir(parents=True, exist_ok=True)
        child = Child(
            name,
            argv,
            log_path=self.logs_dir / f"{name}.log",
            cwd=cwd,
            on_exit=self._wake,
            fingerprint=fingerprint,
        )
        await child.start()
        assert child.pid is not None
        self.store.save_child(name, child.pid, start_time(child.pid))
        self._record("child.started", name, {"pid": child.pid, "argv": argv[len(self._edgetier) :]})
        log.info("started %s (pid %d)", name, child.pid)
        return child

    def _ended(
        self,
        child: Child,
        statuses: list[WorkloadStatus],
        backoff: Backoff,
        reason: str,
        what: str,
    ) -> bool:
        """Whether ``child`` ended by itself (reported once): a failed try of its workloads,
        counted afresh when it had run ``healthy_after_s``; they are Starting again."""
        code = child.exited()
        if code is None:
            return False
        if child.uptime_s() >= self.settings.healthy_after_s:
            backoff.succeeded()
        tail = child.log_tail()
        delay = self._failed(statuses, backoff, reason, f"{what} with {code}: {tail}")
        self._record(
            "child.exited",
            child.name,
            {"exit_code": code, "log": tail, "try": backoff.failures, "next_s": delay},
        )
        for status in statuses:
            if status.phase == "Running":
                status.to_phase("Starting", reason)
        return True

    async def _stop_child(self, child: Child, name: str) -> None:
        code = await child.stop(timeout_s=self.settings.stop_timeout_s)
        self.store.forget_child(name)
        if code is not None:
            self._record("child.stopped", name, {"exit_code": code})
            log.info("stopped %s (exit %s)", name, code)

    async def _server_index(self) -> dict[str, dict[str, str]] | None:
        """``{model: {version: state}}`` from the server's repository index (once a pass)."""
        if not self._server_live or self.server is None or not self.server.running:
            return None
        if self._index is None:
            try:
                self._index = await self._api.index()
            except httpx.HTTPError as exc:
                self._server_lost(f"repository index: {exc}")
                return None
        return self._index

    def _server_lost(self, why: str) -> None:
        log.warning("the inference server stopped answering (%s)", why)
        self._server_live, self._loaded, self._index = False, {}, None
        self._later(_BUSY_S)

    def _endpoint(self) -> str:
        return f"{self.advertised_host}:{self.settings.http_port}"


# -- helpers -------------------------------------------------------------------------------


def _invalid(a: Assignment) -> str | None:
    try:
        Metadata(name=a.deployment)  # a resource name: it names a folder of the store here
    except ValueError:
        return f"deployment name {a.deployment!r} is not a DNS label"
    if a.kind == "model" and a.model is None:
        return "a model assignment without its model version"
    if a.kind == "pipeline" and a.pipeline is None:
        return "a pipeline assignment without its pipeline file"
    return None
