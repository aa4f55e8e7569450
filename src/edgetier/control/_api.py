"""The controller's HTTP API (FastAPI; the schema at ``/openapi.json``, pages at ``/docs``).

Thin on purpose: each route authenticates, parses and hands over to
:class:`~edgetier.control._service.ControlService`. Errors are JSON ``{"error": ...}``
with the status of their class in ``edgetier.errors`` (401 unauthenticated, 403 not
allowed, 404 unknown, 409 conflict, 422 an invalid body or file with every field path).
Operators' routes that touch the database are plain functions (FastAPI runs them in its
thread pool); the nodes' routes (heartbeat, records, the desired state) run their database
work through the service's :class:`~edgetier.control._gate.NodeGate`, a few threads of
their own with a bounded line (503 with ``Retry-After`` beyond it), so that a large fleet
never takes every thread from the operators. The desired-state long poll is a coroutine
parked on the node's condition, so an unchanged fleet holds no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body, Depends, FastAPI, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgetier import __version__
from edgetier.config import validate
from edgetier.control import _loop
from edgetier.control._auth import Principal
from edgetier.control._dashboard import mount_dashboard
from edgetier.control._events import SequenceGapError
from edgetier.control._metrics import MetricsMiddleware
from edgetier.control._protocol import (
    MAX_WAIT_S,
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    RecordAck,
    RecordBatch,
)
from edgetier.control._service import ControlService
from edgetier.errors import AuthenticationError, ConfigError, EdgeTierError, QueueFullError

__all__ = ["create_app"]

_T = TypeVar("_T")
_OVERLOAD: dict[int | str, dict[str, Any]] = {
    503: {"description": "overloaded: too many node requests waiting; retry after Retry-After"}
}

_bearer = HTTPBearer(auto_error=False, description="an operator token or a node credential")


class TokenRequest(BaseModel):
    """An enrolment token (for agents) or another operator token."""

    kind: str = Field(default="enrol", pattern="^(enrol|operator)$")
    expires_in_s: float | None = Field(
        default=None, gt=0, description="default: enrol 1 day; operator never"
    )
    description: str = Field(default="", max_length=200)


class PipelineFile(BaseModel):
    """A pipeline file the controller holds for deployments that name it."""

    file: str = Field(default="", max_length=255, description="where it was read from")
    content: dict[str, Any]


async def _principal(request: Request, _: Any = Depends(_bearer)) -> Principal:
    # coroutines, not plain functions: FastAPI would send each to a thread of its pool,
    # and a principal is mostly known already (no database read, no thread)
    service: ControlService = request.app.state.service
    authorization = request.headers.get("authorization")
    known = service.principals.get(authorization, service.clock())
    if known is not None:
        return known
    return await run_in_threadpool(service.principal, authorization)


async def _operator(who: Principal = Depends(_principal)) -> Principal:
    who.require_operator()
    return who


Operator = Annotated[Principal, Depends(_operator)]
"""An operator's request (401 without a valid token, 403 for a node's)."""
Anyone = Annotated[Principal, Depends(_principal)]
"""A request with a valid operator token or node credential."""


def create_app(service: ControlService, *, run_loop: bool = True) -> FastAPI:
    """The API over ``service`` (started already). ``run_loop`` runs the reconcile loop
    in the app's lifespan (tests of single requests turn it off)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.notifier.bind(asyncio.get_running_loop())
        service.node_gate.reset()  # its limiter belongs to this event loop
        stop = asyncio.Event()
        task = asyncio.create_task(_loop.run_loop(service, stop)) if run_loop else None
        try:
            yield
        finally:
            stop.set()
            service.notifier.close()
            if task is not None:
                await task

    app = FastAPI(
        title="EdgeTier controller",
        version=__version__,
        summary="The fleet's registry, scheduler and desired state; the agent protocol.",
        lifespan=lifespan,
    )
    app.state.service = service
    _errors(app)

    # -- agent protocol ----------------------------------------------------------------

    @app.post("/v1/enrol", status_code=201, tags=["agents"])
    def enrol(request: EnrolRequest) -> EnrolResponse:
        """Enrol a node with a one-time token; the answer holds its credential (shown once)."""
        return service.enrol(request)

    gate = service.node_gate

    def as_node(authorization: str | None, node: str, act: Callable[..., _T], *args: Any) -> _T:
        """Authenticate a node's request and act, in one trip to a thread of the gate."""
        service.principal(authorization).require_node(node)
        return act(node, *args)

    @app.post(
        "/v1/nodes/{node}/heartbeat",
        tags=["agents"],
        response_model=HeartbeatReply,
        responses=_OVERLOAD,
    )
    async def heartbeat(
        node: str, beat: Heartbeat, request: Request, _: Any = Depends(_bearer)
    ) -> Response:
        """Telemetry, conditions and workloads of a node; the answer gives the desired
        generation (fetch the desired state when it differs from what runs)."""
        authorization = request.headers.get("authorization")
        reply = await gate.run(as_node, authorization, node, service.heartbeat, beat)
        return _json(reply)

    @app.post("/v1/nodes/{node}/credential", tags=["agents"])
    def renew(node: str, who: Anyone) -> EnrolResponse:
        """A fresh node credential; the one presented is revoked."""
        return service.renew_credential(who, node)

    @app.get(
        "/v1/nodes/{node}/desired",
        tags=["agents"],
        responses={304: {"description": "unchanged within wait_s"}, **_OVERLOAD},
    )
    async def desired(
        node: str,
        request: Request,
        response: Response,
        wait_s: float = Query(0.0, ge=0, le=MAX_WAIT_S, description="long poll, seconds"),
        if_none_match: str | None = Header(None),
        _: Any = Depends(_bearer),
    ) -> Any:
        """The node's desired state, ``ETag: "<generation>"``. With ``If-None-Match`` equal
        to the current generation the call waits up to ``wait_s`` for a change and answers
        304 when none came."""
        authorization = request.headers.get("authorization")
        generation = await gate.run(as_node, authorization, node, service.desired_generation)
        seen = _etag_generation(if_none_match)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while seen == generation and (remaining := deadline - loop.time()) > 0:
            if service.notifier.closed:
                break  # shutting down: answer with what there is
            await service.notifier.wait(node, generation, remaining)
            generation = await gate.run(service.desired_generation, node, refuse=False)
        if seen == generation:
            return Response(status_code=304, headers={"ETag": f'"{generation}"'})
        state: DesiredState = await gate.run(service.desired, node, refuse=False)
        response.headers["ETag"] = f'"{state.generation}"'
        return state.model_dump(mode="json")

    @app.post(
        "/v1/nodes/{node}/records", tags=["agents"], response_model=RecordAck, responses=_OVERLOAD
    )
    async def records(
        node: str, batch: RecordBatch, request: Request, _: Any = Depends(_bearer)
    ) -> Response:
        """Outbox records of a node, numbered from 1: duplicates are counted and ignored; a
        gap is refused with 409 and ``expected_sequence``."""
        authorization = request.headers.get("authorization")
        return _json(await gate.run(as_node, authorization, node, service.ingest, batch))

    @app.get(
        "/v1/artifacts/{digest}",
        tags=["agents"],
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def artifact(digest: str, who: Anyone) -> FileResponse:
        """A model file by its digest (``sha256:<hex>``), for an operator or a node it is
        assigned to; ``Digest: sha-256=<base64>`` (RFC 3230) lets the client check it."""
        import base64

        path = service.artifact(who, digest)
        raw = bytes.fromhex(digest.removeprefix("sha256:"))
        return FileResponse(
            path,
            media_type="application/octet-stream",
            headers={
                "Digest": f"sha-256={base64.b64encode(raw).decode()}",
                "ETag": f'"{digest}"',
            },
        )

    # -- operators: tokens, nodes ------------------------------------------------------

    @app.post("/v1/tokens", status_code=201, tags=["access"])
    def create_token(body: TokenRequest, _: Operator) -> dict[str, Any]:
        """A new enrolment (or operator) token; its text is in ``token``, shown once."""
        return service.create_token(
            body.kind, expires_in_s=body.expires_in_s, description=body.description
        )

    @app.get("/v1/tokens", tags=["access"])
    def list_tokens(_: Operator) -> list[dict[str, Any]]:
        """Every token (never its secret) with its state: valid, used, expired, revoked."""
        return service.list_tokens()

    @app.delete("/v1/tokens/{token_id}", tags=["access"])
    def revoke_token(token_id: str, _: Operator) -> dict[str, Any]:
        """Revoke any token: operator, enrolment or node credential."""
        return service.revoke_token(token_id)

    @app.get(
        "/v1/nodes",
        tags=["nodes"],
        response_class=Response,
        responses={
            200: {
                "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
                "description": "the nodes in name order; with `limit`, the header "
                "`X-Continue` holds the `continue` value of the next page when more remain",
            }
        },
    )
    def list_nodes(
        _: Operator,
        limit: int | None = Query(None, ge=1, le=10_000, description="at most this many"),
        after: str | None = Query(
            None, alias="continue", description="the X-Continue of the page before"
        ),
    ) -> Response:
        """Every node (by default), or one page of them."""
        body, more = service.list_nodes_json(limit=limit, after=after)
        headers = {"X-Continue": more} if more is not None else None
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/v1/nodes/{node}", tags=["nodes"])
    def get_node(
        node: str,
        _: Operator,
        history_s: float = Query(3600.0, ge=0, description="telemetry history to include"),
    ) -> dict[str, Any]:
        return service.get_node(node, history_s=history_s)

    @app.post("/v1/nodes/{node}/drain", tags=["nodes"])
    def drain(node: str, _: Operator) -> dict[str, Any]:
        """Mark the node unschedulable; its deployments are placed elsewhere."""
        return service.set_unschedulable(node, True)

    @app.post("/v1/nodes/{node}/uncordon", tags=["nodes"])
    def uncordon(node: str, _: Operator) -> dict[str, Any]:
        """Make the node schedulable again (deployments not fully placed may move there)."""
        return service.set_unschedulable(node, False)

    # -- operators: models, pipelines, deployments, events -----------------------------

    @app.post("/v1/models/{model}/versions", tags=["models"])
    def push_model(
        model: str,
        response: Response,
        _: Operator,
        file: UploadFile = File(..., description="the model file (model.onnx, .plan, ...)"),
        config: UploadFile | None = File(None, description="its config.yaml"),
        bench: UploadFile | None = File(None, description="an edgetier bench JSON"),
        version: int | None = Form(None, description="default: the next number"),
        precision: str | None = Form(None, description="default: read from the graph"),
    ) -> dict[str, Any]:
        """Push a model version: stored by digest, its cost computed, its measured
        throughput per profile read from the bench JSON. 201 when new, 200 when the same
        file is already that version."""
        pushed = service.push_model(
            model,
            file.file,
            file.filename or "model.onnx",
            version=version,
            precision=precision,
            config_text=config.file.read().decode("utf-8", "replace") if config else None,
            bench_text=bench.file.read().decode("utf-8", "replace") if bench else None,
        )
        response.status_code = 201 if pushed.created else 200
        return pushed.info

    @app.get("/v1/models", tags=["models"])
    def list_models(_: Operator) -> list[dict[str, Any]]:
        return service.list_models()

    @app.put("/v1/pipelines/{name}", tags=["pipelines"])
    def put_pipeline(name: str, body: PipelineFile, _: Operator) -> dict[str, Any]:
        return service.put_pipeline(name, body.content, body.file)

    @app.get("/v1/pipelines", tags=["pipelines"])
    def list_pipelines(_: Operator) -> list[dict[str, Any]]:
        return service.list_pipelines()

    @app.put("/v1/deployments/{name}", tags=["deployments"])
    def apply(
        name: str,
        response: Response,
        _: Operator,
        body: dict[str, Any] = Body(..., description="a Deployment resource (edgetier/v1)"),
    ) -> dict[str, Any]:
        """Create or change a deployment (201 when new); the answer holds its placements.
        An invalid body is refused with every field path at once."""
        view, created = service.apply(name, body)
        response.status_code = 201 if created else 200
        return view

    @app.get("/v1/deployments", tags=["deployments"])
    def list_deployments(_: Operator) -> list[dict[str, Any]]:
        return service.list_deployments()

    @app.get("/v1/deployments/{name}", tags=["deployments"])
    def get_deployment(name: str, _: Operator) -> dict[str, Any]:
        return service.get_deployment(name)

    @app.get("/v1/deployments/{name}/explain", tags=["deployments"])
    def explain(name: str, _: Operator) -> dict[str, Any]:
        """The scheduler's decision behind the placements: every node considered, why each
        was rejected or how it ranked; ``explanation`` is the text."""
        return service.explain(name)

    @app.delete("/v1/deployments/{name}", tags=["deployments"])
    def delete(name: str, _: Operator) -> dict[str, Any]:
        service.delete_deployment(name)
        return {"deleted": name}

    @app.get("/v1/rollouts", tags=["rollouts"])
    def list_rollouts(_: Operator) -> list[dict[str, Any]]:
        """Every deployment's newest rollout: state, batch, nodes updated, message."""
        return service.list_rollouts()

    @app.get("/v1/deployments/{name}/rollout", tags=["rollouts"])
    def get_rollout(name: str, _: Operator) -> dict[str, Any]:
        """The deployment's newest rollout (404 when it has had none)."""
        return service.get_rollout(name)

    @app.post("/v1/deployments/{name}/rollout/{verb}", tags=["rollouts"])
    def rollout_action(
        name: str, verb: Literal["pause", "resume", "undo"], _: Operator
    ) -> dict[str, Any]:
        """Pause or resume a rollout, or undo it (every node back on the previous
        revision); 409 when its state does not allow it."""
        return service.rollout_action(name, verb)

    @app.get("/v1/events", tags=["events"])
    def events(
        _: Operator,
        source: str | None = Query(None, description="a node, or 'controller'"),
        after: int = Query(0, ge=0, description="with source: its sequence; without: the id"),
        kind: str | None = Query(None),
        limit: int = Query(500, ge=1, le=5000),
        newest: bool = Query(False, description="the last `limit` events instead of the first"),
    ) -> list[dict[str, Any]]:
        """The append-only event log, oldest first."""
        return service.events(source=source, after=after, kind=kind, limit=limit, newest=newest)

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics of the controller itself."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Alive; ``role``: this replica leads the background passes (``leader``) or
        serves the API only (``follower``); ``replica``: its id."""
        return {
            "status": "ok",
            "version": __version__,
            "role": service.leadership.role,
            "replica": service.replica,
        }

    mount_dashboard(app)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics, routes=app.routes)
    return app


def _json(message: BaseModel) -> Response:
    """A message as the answer, dumped once (FastAPI would validate it again first)."""
    return Response(message.model_dump_json(), media_type="application/json")


def _etag_generation(header: str | None) -> int | None:
    if not header:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else None


def _errors(app: FastAPI) -> None:
    @app.exception_handler(EdgeTierError)
    async def edgetier_error(_: Request, exc: EdgeTierError) -> JSONResponse:
        status = 422 if isinstance(exc, ConfigError) else exc.http_status
        body: dict[str, Any] = {"error": exc.message}
        headers = {}
        if isinstance(exc, SequenceGapError):
            body["expected_sequence"] = exc.expected
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, QueueFullError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = next(str((e.get("ctx") or {}).get("error", "")) for e in errors)
            return JSONResponse({"error": f"request body: invalid JSON: {reason}"}, 400)
        return JSONResponse({"error": _describe(request, exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)


def _describe(request: Request, exc: RequestValidationError) -> str:
    """Every error of a request, each with its field path: the body's in the house format
    of ``edgetier.config`` (as files), the query's and path's by name."""
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    body = getattr(exc, "body", None)
    lines = []
    if isinstance(model, type) and issubclass(model, BaseModel) and isinstance(body, dict):
        try:
            validate(model, body, source="request body", what=model.__name__)
        except ConfigError as invalid:
            lines.append(invalid.message)
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] == "body" and lines:
            continue  # reported above
        where = {"query": "query parameter", "path": "path", "header": "header"}.get(
            loc[0] if loc else "", "request body"
        )
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where} {'.'.join(loc[1:]) or ''}: {message}, got {error.get('input')!r}")
    return "\n".join(lines) if lines else "invalid request"
