"""What the controller does, apart from HTTP: every operation of the API and the agent
protocol, and the passes of the background loop (heartbeat timeouts, reconcile,
telemetry retention).

The API module only authenticates, parses and maps errors; everything else is here, so it
can be tested without a server. Every change is one database transaction
(:meth:`ControlService._change`), an event in the log (source ``controller``) and, where
placements or desired states move, a reconcile pass in the same transaction whose
changed nodes are woken after commit. What decides lives beside it: placement in
``_reconcile``, conditions and views in ``_views``, tokens in ``_auth``, records in
``_events``; when the background passes run, in ``_loop``::

    service = ControlService(ControllerSettings(data_dir=Path("var/controller")))
    service.start()                          # migrations, operator token
    reply = service.heartbeat("edge-1", Heartbeat(...))
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import InstrumentedAttribute, Session

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
    RolloutRow,
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
from edgetier.control._gate import NodeGate
from edgetier.control._leader import Leadership
from edgetier.control._loop import Pending
from edgetier.control._metrics import ControllerMetrics
from edgetier.control._modelfacts import onnx_facts, parse_config, platform_of, throughput
from edgetier.control._mqtt_notices import MqttBroker, NoticePublisher
from edgetier.control._nodelist import NodeListCache
from edgetier.control._notify import DesiredNotifier
from edgetier.control._pgnotify import PgNotices
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
from edgetier.control._reconcile import (
    mark_offline,
    placements_by_node,
    reconcile,
    resolve_model,
    silent_nodes,
    unsatisfied,
    users_of_model,
    users_of_pipeline,
)
from edgetier.control._resources import NAME_PATTERN, Deployment, ModelRef
from edgetier.control._rollouts import (
    STATES,
    Verb,
    active_rollouts,
    drive,
    operate,
    rollout_view,
)
from edgetier.control._scheduler import PlacementPolicy
from edgetier.control._settings import ControllerSettings
from edgetier.control._telemetry import compact, history
from edgetier.control._views import (
    condition_true,
    deployment_resource,
    node_view,
    reported_conditions,
    set_condition,
    version_view,
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

_T = TypeVar("_T")


@dataclass
class PushedVersion:
    info: dict[str, Any]
    created: bool


@dataclass
class _Change:
    """One write transaction: its session, its time, and the nodes whose desired state
    its reconcile passes changed (woken once it commits)."""

    session: Session
    now: datetime
    policy: PlacementPolicy | None
    changed: dict[str, int] = field(default_factory=dict)

    def reconcile(self, deployments: Iterable[str] | None) -> None:
        """Place ``deployments`` (all when None) anew where needed, in this transaction."""
        self.session.flush()
        result = reconcile(self.session, self.now, deployments=deployments, policy=self.policy)
        self.changed.update(result.changed_nodes)


class ControlService:
    def __init__(
        self,
        settings: ControllerSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        policy: PlacementPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.policy = policy
        self.notices: NoticePublisher | None = None  # MQTT change notices (mqtt_url)
        if settings.mqtt_url is not None:  # before anything is created: paho may be missing
            self.notices = NoticePublisher(MqttBroker.parse(settings.mqtt_url))
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.url)
        self.artifacts = ArtifactStore(settings.data_dir / "artifacts")
        self.notifier = DesiredNotifier()
        self.metrics = ControllerMetrics(self)
        self.pending = Pending()
        self.node_list = NodeListCache()
        self.node_gate = NodeGate(
            concurrency=settings.node_concurrency, max_waiting=settings.node_max_waiting
        )
        # replicas on one PostgreSQL: who leads the background passes, and the notices
        # that carry changes between replicas (None on SQLite: one replica)
        self.replica = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.leadership = Leadership(self.db, self.replica)
        self.pg_notices: PgNotices | None = None
        if self.db.is_postgresql:
            self.pg_notices = PgNotices(
                self.db,
                self.replica,
                on_desired=self.notifier.publish,
                on_pending=self._asked,
                on_listening=self._catch_up,
            )
        self.operator_token: str | None = None
        # exact on SQLite (every revocation is made here and clears it); on PostgreSQL a
        # token another replica revoked is refused here within a second
        self.principals = _auth.PrincipalCache(ttl_s=1.0 if self.db.is_postgresql else 60.0)
        # a controller that was down heard no heartbeat meanwhile: nodes get one full
        # timeout after its start before they count as lost (as Kubernetes' grace period)
        self.started_at = clock()

    @contextmanager
    def _change(self, now: datetime | None = None) -> Iterator[_Change]:
        """A write transaction; the nodes its reconcile passes changed are woken after
        it commits (not when it fails)."""
        now = now or self.clock()
        with self.db.write(serial=True) as session:
            change = _Change(session, now, self.policy)
            yield change
            if self.pg_notices is not None and change.changed:  # other replicas, at commit
                self.pg_notices.send_desired(session, change.changed)
        self.notifier.publish(change.changed)
        if self.notices is not None:
            self.notices.publish(change.changed)

    @property
    def is_leader(self) -> bool:
        """True while this replica runs the background passes (always on SQLite)."""
        return self.leadership.is_leader

    def _want_reconcile(self, names: Iterable[str] | None) -> None:
        """Hand deployments to the loop that runs the passes: this replica's when it
        leads, else the leader's (through a notice)."""
        names = None if names is None else list(names)
        self.pending.add(names)
        if self.pg_notices is not None and not self.is_leader:
            self.pg_notices.send_pending(names)

    def _catch_up(self) -> None:
        """Wake the long polls parked here whose node's desired state changed while no
        notice could reach this replica."""
        nodes = self.notifier.parked()
        if nodes:
            with self.db.read() as session:
                rows = session.execute(
                    select(NodeRow.name, NodeRow.desired_generation).where(NodeRow.name.in_(nodes))
                ).all()
            self.notifier.publish({name: generation for name, generation in rows})

    def _asked(self, names: set[str] | None) -> None:
        """Another replica asked for a reconcile pass: the leader's loop takes it."""
        if self.is_leader:
            self.pending.add(names)

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        """Migrate the schema; make sure ``<data dir>/operator-token`` holds a valid
        operator token (created on the first start, or when the file was removed); on
        PostgreSQL, listen for the other replicas' notices; connect to the MQTT broker in
        the background when ``mqtt_url`` is set."""
        self.db.migrate()
        if self.pg_notices is not None:
            self.pg_notices.start()
        if self.notices is not None:
            self.notices.start()
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
        if self.notices is not None:
            self.notices.close()
        if self.pg_notices is not None:
            self.pg_notices.stop()
        self.leadership.release()
        self.db.close()

    # -- access --------------------------------------------------------------------

    def principal(self, authorization: str | None) -> _auth.Principal:
        now = self.clock()
        cached = self.principals.get(authorization, now)
        if cached is not None:
            return cached
        generation = self.principals.generation
        with self.db.read() as session:
            principal, expires_at = _auth.authenticate_until(session, authorization, now)
        self.principals.put(authorization or "", principal, expires_at, now, generation)
        return principal

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
            info = _auth.token_info(row, now)
        self.principals.clear()  # after the commit: see PrincipalCache
        return info

    # -- nodes: the agent protocol ---------------------------------------------------

    def enrol(self, request: EnrolRequest) -> EnrolResponse:
        from edgetier.hardware import get_profile

        try:
            get_profile(request.profile)
        except EdgeTierError as exc:
            raise ConfigError(f"profile: {exc.message}") from None
        with self._change() as change:
            session, now = change.session, change.now
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
            credential, row = self._issue_credential(session, request.name, now)
            append(
                session,
                CONTROLLER,
                now,
                "NodeReenrolled" if existing is not None else "NodeEnrolled",
                subject=request.name,
                data={"tier": request.tier, "profile": request.profile, "token": token.id},
            )
            session.flush()
            change.reconcile(unsatisfied(session))
        if existing is not None:
            self.principals.clear()  # its earlier credentials were revoked
        assert row.expires_at is not None
        return EnrolResponse(node=request.name, credential=credential, expires_at=row.expires_at)

    def _issue_credential(self, session: Session, node: str, now: datetime) -> tuple[str, TokenRow]:
        return _auth.issue(
            session,
            "node",
            now,
            expires_in_s=self.settings.node_credential_ttl_s,
            node=node,
            description=f"credential of node {node}",
        )

    def renew_credential(self, principal: _auth.Principal, node: str) -> EnrolResponse:
        """A fresh credential for a node, the one presented revoked (agents renew before
        expiry)."""
        principal.require_node(node)
        now = self.clock()
        with self.db.write() as session:
            _node_value(session, node, NodeRow.name)
            credential, row = self._issue_credential(session, node, now)
            if principal.kind == "node":
                _auth.revoke(session, principal.token_id, now)
            append(
                session, CONTROLLER, now, "CredentialRenewed", subject=node, data={"token": row.id}
            )
        self.principals.clear()
        assert row.expires_at is not None
        return EnrolResponse(node=node, credential=credential, expires_at=row.expires_at)

    def heartbeat(self, node: str, beat: Heartbeat) -> HeartbeatReply:
        """Record what the node reports; a node back, newly throttled or cooled down has
        its deployments handed to the reconcile loop (a heartbeat itself stays cheap)."""
        now = self.clock()
        # two columns read and one UPDATE: no ORM object (a node's desired state can be
        # large, and a heartbeat changes none of it)
        telemetry = beat.telemetry.model_copy(update={"time": beat.telemetry.time or now})
        values: dict[str, Any] = {
            "last_heartbeat": now,
            # the summary only: the history comes from the node's outbox (telemetry
            # records), so that a sample is stored once, also after an outage
            "telemetry": telemetry.model_dump(mode="json"),
            "workloads": [w.model_dump(mode="json") for w in beat.workloads],
            "reported_generation": beat.desired_generation,
            "outbox_pending": beat.outbox_pending,
        }
        with self.db.write() as session:
            found = session.execute(_BEAT_READ, {"node": node}).first()
            if found is None:
                raise NotFoundError(f"no node named {node!r}")
            old, desired_generation = found
            was_offline = condition_true(old, "Offline")
            was_throttled = condition_true(old, "Throttled")
            conditions = reported_conditions(old, beat.conditions, now)
            if conditions != old:
                values["conditions"] = conditions
            session.execute(_BEAT_WRITE, {**values, "node": node})
            throttled = condition_true(conditions, "Throttled")
            if was_offline:
                append(session, CONTROLLER, now, "NodeOnline", subject=node, data={})
            if throttled != was_throttled:
                kind = "NodeThrottled" if throttled else "NodeThrottleCleared"
                append(session, CONTROLLER, now, kind, subject=node, data={})
            reply = HeartbeatReply(
                desired_generation=desired_generation,
                heartbeat_interval_s=self.settings.interval_s,
            )
        if throttled and not was_throttled:
            with self.db.read() as session:
                self._want_reconcile(placements_by_node(session).get(node, []))
        elif was_offline or (was_throttled and not throttled):
            with self.db.read() as session:
                self._want_reconcile(unsatisfied(session))
        return reply

    def desired_generation(self, node: str) -> int:
        """What a long poll compares (one column, read on every poll and every wake)."""
        with self.db.read() as session:
            found = session.execute(_DESIRED_GENERATION, {"node": node}).first()
            if found is None:
                raise NotFoundError(f"no node named {node!r}")
            return int(found[0])

    def desired(self, node: str) -> DesiredState:
        with self.db.read() as session:
            row = _named(session, NodeRow, node)
            return DesiredState(
                node=node,
                generation=row.desired_generation,
                assignments=[Assignment.model_validate(a) for a in row.desired],
            )

    def ingest(self, node: str, batch: RecordBatch) -> RecordAck:
        with self.db.write() as session:
            if session.execute(_DESIRED_GENERATION, {"node": node}).first() is None:
                raise NotFoundError(f"no node named {node!r}")
            result = ingest(session, node, batch, self.clock())
        self.metrics.records_ingested.inc(len(batch.records) - result.ack.duplicates)
        self.metrics.records_duplicate.inc(result.ack.duplicates)
        return result.ack

    def artifact(self, principal: _auth.Principal, digest: str) -> Path:
        """The artifact's file, for an operator or a node it is assigned to."""
        self.artifacts.path(digest)  # checks the digest's form first
        if principal.kind == "node":
            with self.db.read() as session:
                desired = _node_value(session, principal.node or "", NodeRow.desired)
            if digest not in {(a.get("model") or {}).get("digest") for a in desired}:
                raise PermissionDeniedError(
                    f"artifact {digest} is not assigned to node '{principal.node}'"
                )
        else:
            principal.require_operator()
        return self.artifacts.open(digest)

    # -- nodes: operators ------------------------------------------------------------

    def list_nodes(self) -> list[dict[str, Any]]:
        return list(json.loads(self.list_nodes_json()[0]))

    def list_nodes_json(
        self, *, limit: int | None = None, after: str | None = None
    ) -> tuple[bytes, str | None]:
        """Every node's view (after the name ``after``, at most ``limit``), in name order,
        as a JSON list; and the name to continue after when more remain."""
        with self.db.read() as session:
            return self.node_list.page(session, limit=limit, after=after)

    def get_node(self, name: str, *, history_s: float = 3600.0) -> dict[str, Any]:
        with self.db.read() as session:
            row = _named(session, NodeRow, name)
            view = node_view(row, placements_by_node(session).get(name, []))
            # how far the node's records (events and telemetry) are stored, without a gap
            view["status"]["records_acked_through"] = acked_through(session, name)
            since = self.clock() - timedelta(seconds=history_s)
            view["telemetry_history"] = history(session, name, since=since)
            view["desired"] = row.desired
            return view

    def set_unschedulable(self, name: str, unschedulable: bool) -> dict[str, Any]:
        """Drain (True) or uncordon (False) a node and re-place what that moves."""
        with self._change() as change:
            session = change.session
            row = _named(session, NodeRow, name)
            if row.unschedulable != unschedulable:
                row.unschedulable = unschedulable
                kind = "NodeDrained" if unschedulable else "NodeUncordoned"
                append(session, CONTROLLER, change.now, kind, subject=name, data={})
                session.flush()
                change.reconcile(
                    placements_by_node(session).get(name, [])
                    if unschedulable
                    else unsatisfied(session)
                )
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
        with self._change() as change:
            session, now = change.session, change.now
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
                return PushedVersion(version_view(existing), created=False)
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
            change.reconcile(users_of_model(session, name))
            view = version_view(row)
        return PushedVersion(view, created=True)

    def list_models(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(
                select(ModelVersionRow).order_by(ModelVersionRow.model, ModelVersionRow.version)
            )
            models: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                models.setdefault(row.model, []).append(version_view(row))
            return [{"name": name, "versions": versions} for name, versions in models.items()]

    def put_pipeline(self, name: str, content: dict[str, Any], file: str = "") -> dict[str, Any]:
        """Hold a pipeline file (a mapping) under ``name``; deployments name it."""
        _check_name("pipeline", name)
        if not isinstance(content, dict) or not content:
            raise ConfigError("content: the pipeline file must be a non-empty mapping")
        with self._change() as change:
            session, now = change.session, change.now
            row = session.get(PipelineRow, name)
            changed_content = row is None or row.content != content
            if row is None:
                row = PipelineRow(name=name, file=file, content=content, updated_at=now)
                session.add(row)
            elif changed_content:
                row.content, row.file, row.updated_at = content, file or row.file, now
            if changed_content:
                append(
                    session, CONTROLLER, now, "PipelineStored", subject=name, data={"file": file}
                )
                session.flush()
                change.reconcile(users_of_pipeline(session, name))
            view = _pipeline_view(row)
        return view

    def list_pipelines(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(PipelineRow).order_by(PipelineRow.name))
            return [_pipeline_view(row) for row in rows]

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
        with self._change() as change:
            session, now = change.session, change.now
            _check_references(session, deployment)
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
                return self._deployment_view(session, row), False
            append(
                session,
                CONTROLLER,
                now,
                "DeploymentApplied",
                subject=name,
                data={"generation": row.generation, "created": created},
            )
            session.flush()
            change.reconcile([name])
            view = self._deployment_view(session, row)
        return view, created

    def delete_deployment(self, name: str) -> None:
        with self._change() as change:
            session = change.session
            session.delete(_named(session, DeploymentRow, name))
            append(session, CONTROLLER, change.now, "DeploymentDeleted", subject=name, data={})
            session.flush()
            change.reconcile([])

    def list_deployments(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(DeploymentRow).order_by(DeploymentRow.name))
            return [self._deployment_view(session, row) for row in rows]

    def get_deployment(self, name: str) -> dict[str, Any]:
        with self.db.read() as session:
            return self._deployment_view(session, _named(session, DeploymentRow, name))

    def explain(self, name: str) -> dict[str, Any]:
        """The scheduler's decision that placed the deployment, with its text."""
        with self.db.read() as session:
            row = _named(session, DeploymentRow, name)
            return {
                **(row.decision or {"deployment": name, "placements": [], "nodes": []}),
                "generation": row.observed_generation,
                "decided_at": row.updated_at.isoformat(),
                "explanation": row.explanation,
            }

    def _deployment_view(self, session: Session, row: DeploymentRow) -> dict[str, Any]:
        names = {p["node"] for p in row.placements}
        nodes = {n.name: n for n in session.scalars(select(NodeRow).where(NodeRow.name.in_(names)))}
        now = self.clock()
        view = deployment_resource(row, nodes, now).model_dump(mode="json", by_alias=True)
        rollout = session.get(RolloutRow, row.name)
        if rollout is not None and rollout.state in ("Progressing", "Paused", "RolledBack"):
            # a rollout on its way, or one that holds the nodes back on the previous version
            kind, reason = (
                ("Degraded", "RolledBack")
                if rollout.state == "RolledBack"
                else ("Progressing", f"Rollout{rollout.state}")
            )
            view["status"]["conditions"] = set_condition(
                view["status"]["conditions"], kind, "True", reason, rollout.message, now
            )
        return view

    # -- rollouts --------------------------------------------------------------------

    def list_rollouts(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(RolloutRow).order_by(RolloutRow.deployment))
            return [rollout_view(r, session.get(DeploymentRow, r.deployment)) for r in list(rows)]

    def get_rollout(self, name: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = _named(session, DeploymentRow, name)
            rollout = session.get(RolloutRow, name)
            if rollout is None:
                raise NotFoundError(f"deployment {name!r} has had no rollout")
            return rollout_view(rollout, row)

    def rollout_action(self, name: str, verb: Verb) -> dict[str, Any]:
        """Pause, resume or undo a deployment's rollout; the nodes' desired states follow
        in the same transaction."""
        with self._change() as change:
            rollout = operate(change.session, name, verb, change.now)
            change.reconcile([])
            view = rollout_view(rollout, change.session.get(DeploymentRow, name))
        return view

    def drive_rollouts(self) -> list[str]:
        """The loop's rollout pass: gates checked, batches moved on, failed rollouts rolled
        back (the nodes' desired states written in the same transaction). Without a
        progressing rollout it only reads."""
        with self.db.read() as session:
            if not active_rollouts(session):
                return []
        with self._change() as change:
            moved = drive(change.session, change.now)
            if moved:
                change.reconcile([])
        return moved

    # -- events ----------------------------------------------------------------------

    def events(
        self,
        *,
        source: str | None = None,
        after: int = 0,
        kind: str | None = None,
        limit: int = 500,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = list_events(
                session, source=source, after=after, kind=kind, limit=limit, newest=newest
            )
            return [event_dict(row) for row in rows]

    # -- the background loop's passes (edgetier.control._loop runs them) ---------------

    def reconcile(self, deployments: Iterable[str] | None = None) -> dict[str, int]:
        """One reconcile pass (all deployments when None); wakes the changed nodes."""
        with self._change() as change:
            change.reconcile(deployments)
        self.metrics.reconcile_passes.inc()
        return change.changed

    def check_timeouts(self) -> list[str]:
        """Mark nodes without a heartbeat for ``node_timeout_s`` Offline and re-place
        their deployments. Runs on every tick: without a node to mark, it only reads."""
        now = self.clock()
        timeout_s = self.settings.node_timeout_s
        if self.started_at > now - timedelta(seconds=timeout_s):
            return []  # still within the grace period after this controller started
        with self.db.read() as session:
            if not silent_nodes(session, now, timeout_s):
                return []
        with self._change(now) as change:
            gone = mark_offline(change.session, now, timeout_s)
            if gone:
                on = placements_by_node(change.session)
                change.reconcile({d for node in gone for d in on.get(node, [])})
        return gone

    def compact_telemetry(self) -> None:
        with self.db.write() as session:
            compact(session, self.clock(), self.settings.retention)

    def counts(self) -> dict[str, Any]:
        """Figures for the metrics: nodes by condition, deployments by satisfaction (the
        columns they need only: a scrape reads every row)."""
        with self.db.read() as session:
            nodes = session.execute(select(NodeRow.conditions, NodeRow.unschedulable)).all()
            satisfied = session.scalars(select(DeploymentRow.satisfied)).all()
            states = session.scalars(select(RolloutRow.state)).all()
        by_condition = {
            kind: sum(condition_true(conditions, kind) for conditions, _ in nodes)
            for kind in ("Ready", "Offline", "Throttled", "Degraded")
        }
        return {
            "nodes": len(nodes),
            "nodes_by_condition": by_condition,
            "nodes_unschedulable": sum(drained for _, drained in nodes),
            "deployments_satisfied": sum(satisfied),
            "deployments_unsatisfied": sum(not s for s in satisfied),
            "rollouts_by_state": {state: states.count(state) for state in STATES},
        }


_WHAT: dict[type, str] = {NodeRow: "node", DeploymentRow: "deployment"}

# the statements of every heartbeat and long poll, built once (on SQLite, building one
# costs more than running it); Core on the table: no ORM objects
_NODES = cast(Table, NodeRow.__table__)
_BEAT_READ = select(_NODES.c.conditions, _NODES.c.desired_generation).where(
    _NODES.c.name == bindparam("node")
)
_BEAT_WRITE = _NODES.update().where(_NODES.c.name == bindparam("node"))
_DESIRED_GENERATION = select(_NODES.c.desired_generation).where(_NODES.c.name == bindparam("node"))


def _named(session: Session, table: type[_T], name: str) -> _T:
    """The node or deployment ``name``; NotFoundError when there is none."""
    row = session.get(table, name)
    if row is None:
        raise NotFoundError(f"no {_WHAT[table]} named {name!r}")
    return row


def _node_value(session: Session, node: str, column: InstrumentedAttribute[_T]) -> _T:
    """One column of a node's row, without loading the rest (its desired state can be
    large); NotFoundError when there is no such node."""
    found = session.execute(select(column).where(NodeRow.name == node)).first()
    if found is None:
        raise NotFoundError(f"no node named {node!r}")
    value: _T = found[0]
    return value


def _check_references(session: Session, deployment: Deployment) -> None:
    """The models and pipeline a deployment names must be held already; every missing
    one at once."""
    spec = deployment.spec
    problems = []
    if spec.model is not None and resolve_model(session, spec.model) is None:
        problems.append(
            f"spec.model: no version {_ref_text(spec.model)} has been pushed (edgetier model push)"
        )
    if spec.pipeline is not None and session.get(PipelineRow, spec.pipeline.name) is None:
        problems.append(
            f"spec.pipeline.name: the controller holds no pipeline '{spec.pipeline.name}' "
            "(edgetier deploy apply -f uploads the file spec.pipeline.file names)"
        )
    detector = spec.pipeline.model if spec.pipeline is not None else None
    if (
        detector is not None
        and detector.version is not None
        and resolve_model(session, detector) is None
    ):
        problems.append(f"spec.pipeline.model: no version {_ref_text(detector)} has been pushed")
    if problems:
        source = f"deployment {deployment.name}"
        if len(problems) == 1:
            raise ConfigError(f"{source}: {problems[0]}")
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} errors in the deployment\n{lines}")


def _pipeline_view(row: PipelineRow) -> dict[str, Any]:
    return {"name": row.name, "file": row.file, "updated_at": row.updated_at.isoformat()}


def _check_name(what: str, name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise ConfigError(f"{what} name: must match {NAME_PATTERN}, got {name!r}")


def _ref_text(ref: ModelRef) -> str:
    return f"{ref.name}/{ref.version}" if ref.version is not None else f"of '{ref.name}'"
