"""What the controller does, apart from HTTP: every operation of the API and the agent
protocol, and the background work (heartbeat timeouts, reconcile, telemetry retention).

The API module only authenticates, parses and maps errors; everything else is here, so it
can be tested without a server. Every change is one database transaction (``db.write``),
an event in the log (source ``controller``) and, where placements or desired states move,
a reconcile pass in the same transaction whose changed nodes are woken after commit::

    service = ControlService(ControllerSettings(data_dir=Path("var/controller")))
    service.start()                          # migrations, operator token
    reply = service.heartbeat("edge-1", Heartbeat(...))
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from edgetier.config import validate
from edgetier.control import _auth
from edgetier.control._artifacts import ArtifactStore
from edgetier.control._db import (
    Database,
    DeploymentRow,
    ModelRow,
    ModelVersionRow,
    NodeRow,
    PipelineRow,
    TokenRow,
    utcnow,
)
from edgetier.control._events import (
    CONTROLLER,
    acked_through,
    append,
    event_dict,
    ingest,
    list_events,
)
from edgetier.control._metrics import ControllerMetrics
from edgetier.control._modelfacts import onnx_facts, parse_config, platform_of, throughput
from edgetier.control._notify import DesiredNotifier
from edgetier.control._protocol import (
    Assignment,
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    RecordAck,
    RecordBatch,
)
from edgetier.control._reconcile import mark_offline, model_of, reconcile, resolve_model
from edgetier.control._resources import NAME_PATTERN, Deployment, ModelRef
from edgetier.control._scheduler import PlacementPolicy
from edgetier.control._settings import ControllerSettings
from edgetier.control._telemetry import compact, history
from edgetier.control._views import (
    condition_true,
    deployment_resource,
    model_info,
    node_resource,
    set_condition,
)
from edgetier.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    EdgeTierError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = ["ControlService"]

log = logging.getLogger("edgetier.control")

OPERATOR_TOKEN_FILE = "operator-token"


@dataclass
class PushedVersion:
    info: dict[str, Any]
    created: bool


class _Pending:
    """Deployments waiting for the reconcile loop (None: all of them); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: set[str] | None = set()
        self.wake: Callable[[], None] = lambda: None

    def add(self, names: Iterable[str] | None) -> None:
        with self._lock:
            if names is None or self._names is None:
                self._names = None
            else:
                self._names.update(names)
        self.wake()

    def take(self) -> set[str] | None:
        with self._lock:
            names, self._names = self._names, set()
        return names


class ControlService:
    def __init__(
        self,
        settings: ControllerSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        policy: PlacementPolicy | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.policy = policy
        if database is None and settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = database or Database(settings.url)
        self.artifacts = ArtifactStore(settings.data_dir / "artifacts")
        self.notifier = DesiredNotifier()
        self.metrics = ControllerMetrics(self)
        self.pending = _Pending()
        self.operator_token: str | None = None
        # a controller that was down heard no heartbeat meanwhile: nodes get one full
        # timeout after its start before they count as lost (as Kubernetes' grace period)
        self.started_at = clock()

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the schema; make sure ``<data dir>/operator-token`` holds a valid
        operator token (created on the first start, or when the file was removed)."""
        self.db.migrate()
        path = self.settings.data_dir / OPERATOR_TOKEN_FILE
        now = self.clock()
        if path.is_file():
            text = path.read_text(encoding="utf-8").strip()
            try:
                with self.db.read() as session:
                    _auth.check_token(session, text, now, kind="operator")
                self.operator_token = text
                return
            except AuthenticationError as exc:
                log.warning("%s: %s; writing a new operator token", path, exc.message)
        with self.db.write() as session:
            text, row = _auth.issue(
                session, "operator", now, expires_in_s=None, description="created at start"
            )
            append(
                session, CONTROLLER, now, "TokenCreated", subject=row.id, data={"kind": "operator"}
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.chmod(path, 0o600)
        self.operator_token = text

    def close(self) -> None:
        self.db.close()

    # -- access --------------------------------------------------------------------

    def principal(self, authorization: str | None) -> _auth.Principal:
        with self.db.read() as session:
            return _auth.authenticate(session, authorization, self.clock())

    def create_token(
        self, kind: str, *, expires_in_s: float | None, description: str = ""
    ) -> dict[str, Any]:
        if kind not in ("enrol", "operator"):
            raise ConfigError(f"kind: must be 'enrol' or 'operator', got {kind!r}")
        if expires_in_s is None and kind == "enrol":
            expires_in_s = self.settings.enrol_token_ttl_s
        now = self.clock()
        with self.db.write() as session:
            text, row = _auth.issue(
                session,
                kind,  # type: ignore[arg-type]
                now,
                expires_in_s=expires_in_s,
                description=description,
            )
            append(session, CONTROLLER, now, "TokenCreated", subject=row.id, data={"kind": kind})
            return {**_auth.token_info(row, now), "token": text}

    def list_tokens(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.db.read() as session:
            rows = session.scalars(select(TokenRow).order_by(TokenRow.created_at, TokenRow.id))
            return [_auth.token_info(row, now) for row in rows]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        now = self.clock()
        with self.db.write() as session:
            row = _auth.revoke(session, token_id, now)
            if row is None:
                raise NotFoundError(f"no token with id {token_id!r}")
            append(
                session, CONTROLLER, now, "TokenRevoked", subject=token_id, data={"kind": row.kind}
            )
            return _auth.token_info(row, now)

    # -- nodes: the agent protocol ---------------------------------------------------

    def enrol(self, request: EnrolRequest) -> EnrolResponse:
        from edgetier.hardware import get_profile

        try:
            get_profile(request.profile)
        except EdgeTierError as exc:
            raise ConfigError(f"profile: {exc.message}") from None
        now = self.clock()
        with self.db.write() as session:
            token = _auth.check_token(session, request.token, now, kind="enrol")
            token.used_at = now
            token.node = request.name
            existing = session.get(NodeRow, request.name)
            if existing is not None:
                # the same machine back with a new token (its credential expired or was
                # revoked, its store lost): it keeps its place and its records' numbering;
                # every earlier credential of the node is revoked
                for old in session.scalars(
                    select(TokenRow).where(TokenRow.kind == "node", TokenRow.node == request.name)
                ):
                    _auth.revoke(session, old.id, now)
                existing.tier, existing.profile = request.tier, request.profile
                existing.labels, existing.capacity = dict(request.labels), dict(request.capacity)
            else:
                conditions = set_condition([], "Offline", "False", "Enrolled", "", now)
                conditions = set_condition(conditions, "Ready", "True", "Enrolled", "", now)
                session.add(
                    NodeRow(
                        name=request.name,
                        tier=request.tier,
                        profile=request.profile,
                        labels=dict(request.labels),
                        capacity=dict(request.capacity),
                        unschedulable=False,
                        conditions=conditions,
                        enrolled_at=now,
                        last_heartbeat=now,
                        telemetry={},
                        workloads=[],
                        desired=[],
                    )
                )
            credential, row = _auth.issue(
                session,
                "node",
                now,
                expires_in_s=self.settings.node_credential_ttl_s,
                node=request.name,
                description=f"credential of node {request.name}",
            )
            append(
                session,
                CONTROLLER,
                now,
                "NodeReenrolled" if existing is not None else "NodeEnrolled",
                subject=request.name,
                data={"tier": request.tier, "profile": request.profile, "token": token.id},
            )
            session.flush()
            changed = reconcile(
                session, now, deployments=self._unsatisfied(session), policy=self.policy
            ).changed_nodes
        self.notifier.publish(changed)
        assert row.expires_at is not None
        return EnrolResponse(node=request.name, credential=credential, expires_at=row.expires_at)

    def renew_credential(self, principal: _auth.Principal, node: str) -> EnrolResponse:
        """A fresh credential for a node, the one presented revoked (agents renew before
        expiry)."""
        principal.require_node(node)
        now = self.clock()
        with self.db.write() as session:
            self._node(session, node)
            credential, row = _auth.issue(
                session,
                "node",
                now,
                expires_in_s=self.settings.node_credential_ttl_s,
                node=node,
                description=f"credential of node {node}",
            )
            if principal.kind == "node":
                _auth.revoke(session, principal.token_id, now)
            append(
                session, CONTROLLER, now, "CredentialRenewed", subject=node, data={"token": row.id}
            )
        assert row.expires_at is not None
        return EnrolResponse(node=node, credential=credential, expires_at=row.expires_at)

    def heartbeat(self, node: str, beat: Heartbeat) -> HeartbeatReply:
        now = self.clock()
        with self.db.write() as session:
            row = self._node(session, node)
            was_offline = condition_true(row.conditions, "Offline")
            was_throttled = condition_true(row.conditions, "Throttled")
            telemetry = beat.telemetry.model_copy(update={"time": beat.telemetry.time or now})
            row.last_heartbeat = now
            row.telemetry = telemetry.model_dump(mode="json")
            row.workloads = [w.model_dump(mode="json") for w in beat.workloads]
            row.reported_generation = beat.desired_generation
            row.outbox_pending = beat.outbox_pending
            # the summary only: the history comes from the node's outbox (telemetry records),
            # so that a sample is stored once, also after an outage
            row.conditions = self._merge_conditions(row.conditions, beat, now)
            throttled = condition_true(row.conditions, "Throttled")
            if was_offline:
                append(session, CONTROLLER, now, "NodeOnline", subject=node, data={})
            if throttled != was_throttled:
                kind = "NodeThrottled" if throttled else "NodeThrottleCleared"
                append(session, CONTROLLER, now, kind, subject=node, data={})
            reply = HeartbeatReply(
                desired_generation=row.desired_generation,
                heartbeat_interval_s=self.settings.interval_s,
            )
        if throttled and not was_throttled:
            self.pending.add(self._placed_on(node))
        elif was_offline or (was_throttled and not throttled):
            self.pending.add(self._unsatisfied_names())
        return reply

    @staticmethod
    def _merge_conditions(
        old: list[dict[str, Any]], beat: Heartbeat, now: datetime
    ) -> list[dict[str, Any]]:
        """The agent's conditions, with ``Offline`` the controller's own; ``Ready`` True
        unless the agent says otherwise; a condition the agent stopped sending is False."""
        conditions = [c for c in old if c.get("type") in ("Offline", "Ready", "Throttled")]
        reported = {c.type for c in beat.conditions}
        for condition in beat.conditions:
            if condition.type != "Offline":
                conditions = set_condition(
                    conditions,
                    condition.type,
                    condition.status,
                    condition.reason,
                    condition.message,
                    now,
                )
        if "Throttled" not in reported and condition_true(conditions, "Throttled"):
            conditions = set_condition(conditions, "Throttled", "False", "NotReported", "", now)
        conditions = set_condition(conditions, "Offline", "False", "HeartbeatReceived", "", now)
        if "Ready" not in reported:
            conditions = set_condition(conditions, "Ready", "True", "HeartbeatReceived", "", now)
        return conditions

    def desired_generation(self, node: str) -> int:
        with self.db.read() as session:
            return self._node(session, node).desired_generation

    def desired(self, node: str) -> DesiredState:
        with self.db.read() as session:
            row = self._node(session, node)
            return DesiredState(
                node=node,
                generation=row.desired_generation,
                assignments=[Assignment.model_validate(a) for a in row.desired],
            )

    def ingest(self, node: str, batch: RecordBatch) -> RecordAck:
        with self.db.write() as session:
            self._node(session, node)
            result = ingest(session, node, batch, self.clock())
        self.metrics.records_ingested.inc(len(batch.records) - result.ack.duplicates)
        self.metrics.records_duplicate.inc(result.ack.duplicates)
        return result.ack

    def artifact(self, principal: _auth.Principal, digest: str) -> Path:
        """The artifact's file, for an operator or a node it is assigned to."""
        self.artifacts.path(digest)  # checks the digest's form first
        if principal.kind == "node":
            with self.db.read() as session:
                row = self._node(session, principal.node or "")
                digests = {(a.get("model") or {}).get("digest") for a in row.desired}
            if digest not in digests:
                raise PermissionDeniedError(
                    f"artifact {digest} is not assigned to node '{principal.node}'"
                )
        else:
            principal.require_operator()
        return self.artifacts.open(digest)

    # -- nodes: operators ------------------------------------------------------------

    def list_nodes(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = list(session.scalars(select(NodeRow).order_by(NodeRow.name)))
            on = self._placements_by_node(session)
            return [self._node_view(row, on.get(row.name, [])) for row in rows]

    def get_node(self, name: str, *, history_s: float = 3600.0) -> dict[str, Any]:
        from datetime import timedelta

        with self.db.read() as session:
            row = self._node(session, name)
            view = self._node_view(row, self._placements_by_node(session).get(name, []))
            # how far the node's records (events and telemetry) are stored, without a gap
            view["status"]["records_acked_through"] = acked_through(session, name)
            since = self.clock() - timedelta(seconds=history_s)
            view["telemetry_history"] = history(session, name, since=since)
            view["desired"] = row.desired
            return view

    @staticmethod
    def _node_view(row: NodeRow, placements: list[str]) -> dict[str, Any]:
        node = node_resource(row, placements).model_dump(mode="json", by_alias=True)
        node["status"].update(
            {
                "desired_generation": row.desired_generation,
                "reported_generation": row.reported_generation,
                "workloads": row.workloads,
                "outbox_pending": row.outbox_pending,
                "enrolled_at": row.enrolled_at.isoformat(),
            }
        )
        return node

    def set_unschedulable(self, name: str, unschedulable: bool) -> dict[str, Any]:
        """Drain (True) or uncordon (False) a node and re-place what that moves."""
        now = self.clock()
        with self.db.write() as session:
            row = self._node(session, name)
            if row.unschedulable != unschedulable:
                row.unschedulable = unschedulable
                kind = "NodeDrained" if unschedulable else "NodeUncordoned"
                append(session, CONTROLLER, now, kind, subject=name, data={})
                session.flush()
                affected = (
                    self._placements_by_node(session).get(name, [])
                    if unschedulable
                    else self._unsatisfied(session)
                )
                changed = reconcile(
                    session, now, deployments=affected, policy=self.policy
                ).changed_nodes
            else:
                changed = {}
        self.notifier.publish(changed)
        return self.get_node(name)

    # -- models and pipelines --------------------------------------------------------

    def push_model(
        self,
        name: str,
        source: BinaryIO,
        filename: str,
        *,
        version: int | None = None,
        precision: str | None = None,
        config_text: str | None = None,
        bench_text: str | None = None,
    ) -> PushedVersion:
        """Store a model file (content-addressed) as a version of ``name``, with its cost
        (ONNX), precision, config and measured throughput (bench JSON)."""
        _check_name("model", name)
        if version is not None and version < 1:
            raise ConfigError(f"version: must be >= 1, got {version}")
        if precision not in (None, "fp32", "fp16", "int8"):
            raise ConfigError(f"precision: must be one of fp32, fp16, int8, got {precision!r}")
        config = parse_config(config_text)
        stored = self.artifacts.put(source)
        platform = str(config.get("platform") or platform_of(filename))
        cost, detected = onnx_facts(stored.path) if platform == "onnxruntime_onnx" else (None, None)
        precision = precision or detected or "fp32"
        measured = throughput(bench_text, stored.digest, precision)
        now = self.clock()
        with self.db.write() as session:
            if session.get(ModelRow, name) is None:
                session.add(ModelRow(name=name, created_at=now))
                session.flush()
            newest = session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.model == name)
                .order_by(ModelVersionRow.version.desc())
                .limit(1)
            ).first()
            existing = (
                session.get(ModelVersionRow, (name, version)) if version is not None else newest
            )
            if existing is not None and existing.digest == stored.digest:
                if measured:
                    existing.throughput = {**existing.throughput, **measured}
                return PushedVersion(self._version_view(existing), created=False)
            if version is not None and existing is not None:
                raise ConflictError(
                    f"version: {name} version {version} already holds {existing.digest}, "
                    f"not {stored.digest}; push a new version"
                )
            number = version if version is not None else (newest.version + 1 if newest else 1)
            row = ModelVersionRow(
                model=name,
                version=number,
                digest=stored.digest,
                size_bytes=stored.size_bytes,
                filename=Path(filename).name or "model",
                precision=precision,
                platform=platform,
                flops=cost.flops if cost else None,
                weight_bytes=cost.weight_bytes if cost else None,
                activation_bytes=cost.activation_bytes if cost else None,
                throughput=measured,
                config=config,
                created_at=now,
            )
            session.add(row)
            append(
                session,
                CONTROLLER,
                now,
                "ModelVersionPushed",
                subject=f"{name}/{number}",
                data={"digest": stored.digest, "size_bytes": stored.size_bytes},
            )
            session.flush()
            users = [
                d.name
                for d in session.scalars(select(DeploymentRow))
                if (ref := model_of(d.spec)) is not None and ref.name == name
            ]
            changed = reconcile(session, now, deployments=users, policy=self.policy).changed_nodes
            view = self._version_view(row)
        self.notifier.publish(changed)
        return PushedVersion(view, created=True)

    @staticmethod
    def _version_view(row: ModelVersionRow) -> dict[str, Any]:
        return {
            **model_info(row).model_dump(mode="json"),
            "filename": row.filename,
            "config": row.config,
            "created_at": row.created_at.isoformat(),
        }

    def list_models(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(
                select(ModelVersionRow).order_by(ModelVersionRow.model, ModelVersionRow.version)
            )
            models: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                models.setdefault(row.model, []).append(self._version_view(row))
            return [{"name": name, "versions": versions} for name, versions in models.items()]

    def put_pipeline(self, name: str, content: dict[str, Any], file: str = "") -> dict[str, Any]:
        """Hold a pipeline file (a mapping) under ``name``; deployments name it."""
        _check_name("pipeline", name)
        if not isinstance(content, dict) or not content:
            raise ConfigError("content: the pipeline file must be a non-empty mapping")
        now = self.clock()
        with self.db.write() as session:
            row = session.get(PipelineRow, name)
            changed_content = row is None or row.content != content
            if row is None:
                row = PipelineRow(name=name, file=file, content=content, updated_at=now)
                session.add(row)
            elif changed_content:
                row.content, row.file, row.updated_at = content, file or row.file, now
            changed: dict[str, int] = {}
            if changed_content:
                append(
                    session, CONTROLLER, now, "PipelineStored", subject=name, data={"file": file}
                )
                session.flush()
                users = [
                    d.name
                    for d in session.scalars(select(DeploymentRow))
                    if (d.spec.get("pipeline") or {}).get("name") == name
                ]
                changed = reconcile(
                    session, now, deployments=users, policy=self.policy
                ).changed_nodes
            view = {"name": name, "file": row.file, "updated_at": row.updated_at.isoformat()}
        self.notifier.publish(changed)
        return view

    def list_pipelines(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(PipelineRow).order_by(PipelineRow.name))
            return [
                {"name": r.name, "file": r.file, "updated_at": r.updated_at.isoformat()}
                for r in rows
            ]

    # -- deployments -----------------------------------------------------------------

    def apply(self, name: str, body: Any) -> tuple[dict[str, Any], bool]:
        """Create or update a deployment from its resource body; (the deployment, created).
        Every error in the body at once, each with its field path."""
        deployment = validate(Deployment, body, source=f"deployment {name}", what="deployment")
        if deployment.name != name:
            raise ConfigError(
                f"metadata.name: {deployment.name!r} differs from the name in the path {name!r}"
            )
        spec = deployment.spec.model_dump(mode="json")
        now = self.clock()
        with self.db.write() as session:
            self._check_references(session, deployment)
            row = session.get(DeploymentRow, name)
            created = row is None
            if row is None:
                row = DeploymentRow(
                    name=name,
                    labels=dict(deployment.metadata.labels),
                    generation=1,
                    spec=spec,
                    observed_generation=0,
                    placements=[],
                    satisfied=False,
                    conditions=[],
                    decision={},
                    explanation="",
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
            elif row.spec != spec or row.labels != deployment.metadata.labels:
                if row.spec != spec:
                    row.generation += 1
                row.spec, row.labels, row.updated_at = spec, dict(deployment.metadata.labels), now
            else:
                created = False
                return self._deployment_view(session, row), created
            append(
                session,
                CONTROLLER,
                now,
                "DeploymentApplied",
                subject=name,
                data={"generation": row.generation, "created": created},
            )
            session.flush()
            changed = reconcile(session, now, deployments=[name], policy=self.policy).changed_nodes
            view = self._deployment_view(session, row)
        self.notifier.publish(changed)
        return view, created

    def _check_references(self, session: Session, deployment: Deployment) -> None:
        spec = deployment.spec
        problems = []
        if spec.model is not None and resolve_model(session, spec.model) is None:
            problems.append(
                f"spec.model: no version {_ref_text(spec.model)} has been pushed "
                "(edgetier model push)"
            )
        if spec.pipeline is not None and session.get(PipelineRow, spec.pipeline.name) is None:
            problems.append(
                f"spec.pipeline.name: the controller holds no pipeline '{spec.pipeline.name}' "
                "(edgetier deploy apply -f uploads the file spec.pipeline.file names)"
            )
        if (
            spec.pipeline is not None
            and spec.pipeline.model is not None
            and (
                spec.pipeline.model.version is not None
                and resolve_model(session, spec.pipeline.model) is None
            )
        ):
            problems.append(
                f"spec.pipeline.model: no version {_ref_text(spec.pipeline.model)} has been pushed"
            )
        if problems:
            source = f"deployment {deployment.name}"
            if len(problems) == 1:
                raise ConfigError(f"{source}: {problems[0]}")
            lines = "\n".join(f"  {source}: {p}" for p in problems)
            raise ConfigError(f"{source}: {len(problems)} errors in the deployment\n{lines}")

    def delete_deployment(self, name: str) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = session.get(DeploymentRow, name)
            if row is None:
                raise NotFoundError(f"no deployment named {name!r}")
            session.delete(row)
            append(session, CONTROLLER, now, "DeploymentDeleted", subject=name, data={})
            session.flush()
            changed = reconcile(session, now, deployments=[], policy=self.policy).changed_nodes
        self.notifier.publish(changed)

    def list_deployments(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(DeploymentRow).order_by(DeploymentRow.name))
            return [self._deployment_view(session, row) for row in rows]

    def get_deployment(self, name: str) -> dict[str, Any]:
        with self.db.read() as session:
            return self._deployment_view(session, self._deployment(session, name))

    def explain(self, name: str) -> dict[str, Any]:
        """The scheduler's decision that placed the deployment, with its text."""
        with self.db.read() as session:
            row = self._deployment(session, name)
            return {
                **(row.decision or {"deployment": name, "placements": [], "nodes": []}),
                "generation": row.observed_generation,
                "decided_at": row.updated_at.isoformat(),
                "explanation": row.explanation,
            }

    def _deployment_view(self, session: Session, row: DeploymentRow) -> dict[str, Any]:
        names = {p["node"] for p in row.placements}
        nodes = {n.name: n for n in session.scalars(select(NodeRow).where(NodeRow.name.in_(names)))}
        resource = deployment_resource(row, nodes, self.clock())
        return resource.model_dump(mode="json", by_alias=True)

    # -- events ----------------------------------------------------------------------

    def events(
        self,
        *,
        source: str | None = None,
        after: int = 0,
        kind: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = list_events(session, source=source, after=after, kind=kind, limit=limit)
            return [event_dict(row) for row in rows]

    # -- background work -------------------------------------------------------------

    def reconcile(self, deployments: Iterable[str] | None = None) -> dict[str, int]:
        """One reconcile pass (all deployments when None); wakes the changed nodes."""
        now = self.clock()
        with self.db.write() as session:
            changed = reconcile(
                session, now, deployments=deployments, policy=self.policy
            ).changed_nodes
        self.metrics.reconcile_passes.inc()
        self.notifier.publish(changed)
        return changed

    def check_timeouts(self) -> list[str]:
        """Mark nodes without a heartbeat for ``node_timeout_s`` Offline and re-place
        their deployments."""
        now = self.clock()
        from datetime import timedelta

        cutoff = now - timedelta(seconds=self.settings.node_timeout_s)
        if self.started_at > cutoff:
            return []  # still within the grace period after this controller started
        with self.db.read() as session:
            stale = session.scalars(
                select(NodeRow.name).where(
                    or_(
                        NodeRow.last_heartbeat < cutoff,
                        and_(NodeRow.last_heartbeat.is_(None), NodeRow.enrolled_at < cutoff),
                    )
                )
            ).all()
            if not stale:
                return []
        with self.db.write() as session:
            gone = mark_offline(session, now, self.settings.node_timeout_s)
            if gone:
                session.flush()
                on = self._placements_by_node(session)
                affected = {d for node in gone for d in on.get(node, [])}
                changed = reconcile(
                    session, now, deployments=affected, policy=self.policy
                ).changed_nodes
            else:
                changed = {}
        self.notifier.publish(changed)
        return gone

    def compact_telemetry(self) -> None:
        with self.db.write() as session:
            compact(session, self.clock(), self.settings.retention)

    async def run_loop(self, stop: asyncio.Event) -> None:
        """The reconcile loop: pending deployments as soon as they are asked for, heartbeat
        timeouts, a full resync every ``resync_s``, telemetry compaction. An error in a
        pass is logged and the pass retried on the next tick (with back-off)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self.pending.wake = lambda: _call_soon(loop, wake.set)
        tick_s = max(0.05, min(1.0, self.settings.node_timeout_s / 4))
        next_resync = next_compact = loop.time()
        backoff_s = tick_s
        while not stop.is_set():
            try:
                now = loop.time()
                names = self.pending.take()
                if now >= next_resync:
                    names, next_resync = None, now + self.settings.resync_s
                await asyncio.to_thread(self.check_timeouts)
                if names is None or names:
                    await asyncio.to_thread(self.reconcile, names)
                if now >= next_compact:
                    await asyncio.to_thread(self.compact_telemetry)
                    next_compact = now + self.settings.compact_interval_s
                backoff_s = tick_s
            except Exception:
                log.exception("reconcile pass failed; retrying in %.1f s", backoff_s)
                self.pending.add(None)
                backoff_s = min(backoff_s * 2, 30.0)
            wake.clear()
            waiter = asyncio.ensure_future(wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=backoff_s, return_when="FIRST_COMPLETED")
            waiter.cancel()
            stopper.cancel()

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _node(session: Session, name: str) -> NodeRow:
        row = session.get(NodeRow, name)
        if row is None:
            raise NotFoundError(f"no node named {name!r}")
        return row

    @staticmethod
    def _deployment(session: Session, name: str) -> DeploymentRow:
        row = session.get(DeploymentRow, name)
        if row is None:
            raise NotFoundError(f"no deployment named {name!r}")
        return row

    @staticmethod
    def _placements_by_node(session: Session) -> dict[str, list[str]]:
        on: dict[str, list[str]] = {}
        for row in session.scalars(select(DeploymentRow)):
            for placement in row.placements:
                names = on.setdefault(placement["node"], [])
                if row.name not in names:
                    names.append(row.name)
        return on

    @staticmethod
    def _unsatisfied(session: Session) -> list[str]:
        return [
            row.name
            for row in session.scalars(select(DeploymentRow))
            if not row.satisfied or row.observed_generation != row.generation
        ]

    def _unsatisfied_names(self) -> list[str]:
        with self.db.read() as session:
            return self._unsatisfied(session)

    def _placed_on(self, node: str) -> list[str]:
        with self.db.read() as session:
            return self._placements_by_node(session).get(node, [])

    def counts(self) -> dict[str, Any]:
        """Figures for the metrics: nodes by condition, deployments by satisfaction."""
        with self.db.read() as session:
            nodes = list(session.scalars(select(NodeRow)))
            deployments = list(session.scalars(select(DeploymentRow)))
        by_condition = {
            kind: sum(condition_true(n.conditions, kind) for n in nodes)
            for kind in ("Ready", "Offline", "Throttled", "Degraded")
        }
        return {
            "nodes": len(nodes),
            "nodes_by_condition": by_condition,
            "nodes_unschedulable": sum(n.unschedulable for n in nodes),
            "deployments_satisfied": sum(d.satisfied for d in deployments),
            "deployments_unsatisfied": sum(not d.satisfied for d in deployments),
        }


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(callback)


def _check_name(what: str, name: str) -> None:
    import re

    if not re.match(NAME_PATTERN, name):
        raise ConfigError(f"{what} name: must match {NAME_PATTERN}, got {name!r}")


def _ref_text(ref: ModelRef) -> str:
    return f"{ref.name}/{ref.version}" if ref.version is not None else f"of '{ref.name}'"
