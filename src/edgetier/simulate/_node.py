"""One simulated node: the agent protocol as a real agent speaks it, without the work.

It enrols with a one-time token, heartbeats with its device model's telemetry, keeps a
desired-state long poll parked (``If-None-Match``), downloads and checks the artifacts
it is assigned, reports each assignment Starting and then Running, and delivers its
outbox (telemetry samples and events, numbered from 1) in order, at least once. Its
faults are a plan fixed at the start: a link that drops for a while, a link that flaps,
a fan that fails. While its link is down it sends nothing and keeps its records; when the
link returns it delivers them in order, as an agent running from its store does.

Every node of a simulation shares one :class:`Wire` (two httpx connection pools, one for
long polls and one for the rest), so a thousand nodes are a thousand small state
machines in one event loop, not a thousand clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from edgetier.control import (
    DesiredState,
    EnrolRequest,
    EnrolResponse,
    Heartbeat,
    HeartbeatReply,
    Record,
    RecordAck,
    RecordBatch,
    WorkloadState,
)
from edgetier.errors import ConfigError, StartupError
from edgetier.simulate._device import THERMAL_LIMIT_C, SimDevice

__all__ = ["LinkPlan", "NodeCounters", "SimNode", "Wire"]

Phase = Literal["Starting", "Running", "Failed"]

MAX_BATCH = 500
"""Records per delivery (the protocol's limit)."""
SHARD_NODES = 25
"""Nodes per connection pool (see :class:`Wire`)."""
START_S = (0.5, 2.0)
"""How long a simulated workload takes from assigned to Running (uniform)."""


class LinkDown(Exception):
    """Raised when the node's simulated link is down, or the controller is unreachable."""


class CredentialRejected(Exception):
    """Raised when the controller refuses the node's credential (401)."""


@dataclass
class NodeCounters:
    """What every node of a simulation did, added up (one event loop: no locks)."""

    enrolled: int = 0
    heartbeats: int = 0
    heartbeat_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=50_000))
    records_sent: int = 0
    records_acked: int = 0
    record_batches: int = 0
    polls: int = 0
    polls_changed: int = 0
    downloads: int = 0
    download_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


@dataclass(frozen=True)
class LinkPlan:
    """When a node's link is down: ``outages`` as (start_s, end_s) from the simulation's
    start; a flapping node has many."""

    outages: tuple[tuple[float, float], ...] = ()

    def up(self, at_s: float) -> bool:
        return not any(start <= at_s < end for start, end in self.outages)

    def next_change_s(self, at_s: float) -> float | None:
        edges = [t for outage in self.outages for t in outage if t > at_s]
        return min(edges) if edges else None


class Wire:
    """The HTTP connections the nodes of one simulation share, to one controller or
    several (replicas: each node starts at its own and moves on when one is unreachable).

    Connections are pooled in shards of ``SHARD_NODES`` nodes: httpx's pool looks over
    every connection and waiting request on each request it assigns, which at a thousand
    parked long polls in one pool costs more than the protocol itself."""

    def __init__(self, urls: list[str], nodes: int, *, wait_s: float, timeout_s: float = 15.0):
        self.urls = [u.rstrip("/") for u in urls]
        self.wait_s = wait_s
        shards = max(1, -(-nodes // SHARD_NODES))
        api_limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
        poll_limits = httpx.Limits(
            max_connections=SHARD_NODES + 2, max_keepalive_connections=SHARD_NODES + 2
        )
        self._api = [
            httpx.AsyncClient(timeout=timeout_s, limits=api_limits, headers=_AGENT)
            for _ in range(shards)
        ]
        self._polls = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(timeout_s + wait_s), limits=poll_limits, headers=_AGENT
            )
            for _ in range(shards)
        ]

    def api(self, index: int) -> httpx.AsyncClient:
        """The pool for node ``index``'s short requests (heartbeats, records, downloads)."""
        return self._api[(index // SHARD_NODES) % len(self._api)]

    def polls(self, index: int) -> httpx.AsyncClient:
        """The pool for node ``index``'s long polls (one connection each)."""
        return self._polls[(index // SHARD_NODES) % len(self._polls)]

    async def aclose(self) -> None:
        for client in [*self._api, *self._polls]:
            await client.aclose()


_AGENT = {"User-Agent": "edgetier-fleet-simulate"}
_JSON = {"Content-Type": "application/json"}


class SimNode:
    """A node of the simulation: its identity, device, faults and protocol state."""

    def __init__(
        self,
        name: str,
        tier: str,
        device: SimDevice,
        wire: Wire,
        counters: NodeCounters,
        *,
        index: int,
        link: LinkPlan,
        clock: Callable[[], float],
        rng: random.Random,
        heartbeat_s: float | None,
        download: bool,
    ) -> None:
        self.name, self.tier, self.device = name, tier, device
        self.wire, self.counters, self.link, self.clock, self.rng = wire, counters, link, clock, rng
        self.fixed_heartbeat_s = heartbeat_s
        self.heartbeat_s = heartbeat_s or 5.0
        self.download = download
        self.index = index
        self._url_index = index % len(wire.urls)
        self.credential: str | None = None
        self.desired: DesiredState | None = None
        # name -> generation, revision, kind, ready_s
        self.workloads: dict[str, tuple[int, str, str, float]] = {}
        self.reported_running: set[tuple[str, int]] = set()
        self.digests: set[str] = set()
        self.outbox: list[Record] = []
        self.next_sequence = 1
        self.link_was_up = True
        self.stopped: str | None = None
        self._changed = asyncio.Event()

    # -- the protocol -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.wire.urls[self._url_index]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    async def call(
        self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One request of this node; LinkDown while its link is down or the controller
        cannot be reached (the next controller address is tried next time)."""
        if not self.link_up():
            raise LinkDown("link down (simulated)")
        try:
            response = await client.request(method, self.url + path, **kwargs)
        except httpx.TransportError as exc:
            self._url_index = (self._url_index + 1) % len(self.wire.urls)
            raise LinkDown(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            self._url_index = (self._url_index + 1) % len(self.wire.urls)
            raise LinkDown(f"HTTP {response.status_code}")
        if response.status_code == 401 and self.credential is not None:
            raise CredentialRejected(response.text)
        return response

    def link_up(self) -> bool:
        return self.link.up(self.clock())

    async def enrol(self, token: str) -> None:
        request = EnrolRequest(
            token=token,
            name=self.name,
            tier=self.tier,  # type: ignore[arg-type]  # one of the four tiers
            profile=self.device.device.id,
            labels={"simulated": "true"},
            capacity={
                "memory_gb": float(self.device.device.memory_gb or 4.0),
                "thermal_limit_c": THERMAL_LIMIT_C,
            },
        )
        response = await self.call(
            self.wire.api(self.index),
            "POST",
            "/v1/enrol",
            content=request.model_dump_json(),
            headers=_JSON,
        )
        if response.status_code != 201:
            error = ConfigError if 400 <= response.status_code < 500 else StartupError
            raise error(f"enrolling {self.name}: HTTP {response.status_code}: {response.text}")
        self.credential = EnrolResponse.model_validate_json(response.content).credential
        self.counters.enrolled += 1
        self.record("agent.started", {"profile": self.device.device.id, "tier": self.tier})

    def record(self, kind: str, data: dict[str, Any]) -> None:
        self.outbox.append(
            Record(
                sequence=self.next_sequence,
                time=datetime.now(UTC),
                kind=kind,
                subject=self.name,
                data=data,
            )
        )
        self.next_sequence += 1

    def load(self) -> float:
        """The device's load from what it runs: a served model a quarter, a pipeline a
        twentieth per stream, over a small idle load."""
        load = 0.05
        for deployment, (_, _, kind, _) in self.workloads.items():
            assignment = self._assignment(deployment)
            if kind == "pipeline" and assignment is not None:
                load += 0.05 * max(assignment.streams, 1)
            else:
                load += 0.25
        return min(load, 1.0)

    def _assignment(self, deployment: str) -> Any:
        if self.desired is None:
            return None
        return next((a for a in self.desired.assignments if a.deployment == deployment), None)

    def workload_states(self, now_s: float) -> list[WorkloadState]:
        states = []
        for deployment, (generation, revision, _, ready_s) in self.workloads.items():
            running = now_s >= ready_s
            phase: Phase = (
                "Failed" if math.isnan(ready_s) else ("Running" if running else "Starting")
            )
            states.append(
                WorkloadState(
                    deployment=deployment,
                    generation=generation,
                    revision=revision,
                    phase=phase,
                    endpoint=f"{self.name}:8000" if running else None,
                )
            )
            if running and (deployment, generation) not in self.reported_running:
                self.reported_running.add((deployment, generation))
                self.record(
                    "workload.running", {"deployment": deployment, "generation": generation}
                )
        return states

    async def heartbeat(self) -> None:
        now_s = self.clock()
        was_throttled = self.device.throttled
        summary = self.device.sample(now_s, self.load())
        if self.device.throttled != was_throttled:
            self.record(
                "thermal.throttled" if self.device.throttled else "thermal.cleared",
                {"temperature_c": summary.temperature_c},
            )
        self.record("telemetry", summary.model_dump(mode="json", exclude_none=True))
        beat = Heartbeat(
            telemetry=summary,
            conditions=self.device.conditions(),
            workloads=self.workload_states(now_s),
            desired_generation=self.desired.generation if self.desired else 0,
            outbox_pending=len(self.outbox),
        )
        started = time.perf_counter()
        response = await self.call(
            self.wire.api(self.index),
            "POST",
            f"/v1/nodes/{self.name}/heartbeat",
            content=beat.model_dump_json(),
            headers={**self._headers(), **_JSON},
        )
        if response.status_code != 200:
            self.counters.error(f"heartbeat HTTP {response.status_code}")
            return
        self.counters.heartbeat_latency_s.append(time.perf_counter() - started)
        self.counters.heartbeats += 1
        reply = HeartbeatReply.model_validate_json(response.content)
        if self.fixed_heartbeat_s is None:
            self.heartbeat_s = reply.heartbeat_interval_s
        held = self.desired.generation if self.desired else 0
        if reply.desired_generation != held:
            self._changed.set()

    async def deliver(self) -> None:
        """Send the outbox in order, a batch at a time, until it is empty."""
        while self.outbox:
            batch = self.outbox[:MAX_BATCH]
            response = await self.call(
                self.wire.api(self.index),
                "POST",
                f"/v1/nodes/{self.name}/records",
                content=RecordBatch(records=batch).model_dump_json(),
                headers={**self._headers(), **_JSON},
            )
            self.counters.record_batches += 1
            self.counters.records_sent += len(batch)
            if response.status_code == 409:
                self._renumber(int(response.json().get("expected_sequence", 1)))
                self.counters.error("records gap")
                continue
            if response.status_code != 200:
                self.counters.error(f"records HTTP {response.status_code}")
                return
            ack = RecordAck.model_validate_json(response.content)
            if ack.acked_through >= self.next_sequence:
                # the controller holds records of an earlier run of this node name: number
                # on after them, these included
                self._renumber(ack.acked_through + 1)
                continue
            kept = [r for r in self.outbox if r.sequence > ack.acked_through]
            self.counters.records_acked += len(self.outbox) - len(kept)
            self.outbox = kept

    def _renumber(self, first: int) -> None:
        self.outbox = [
            r.model_copy(update={"sequence": first + i}) for i, r in enumerate(self.outbox)
        ]
        self.next_sequence = first + len(self.outbox)

    async def poll(self) -> None:
        """One desired-state long poll; acts on a new desired state."""
        etag = f'"{self.desired.generation}"' if self.desired is not None else None
        headers = self._headers()
        if etag is not None:
            headers["If-None-Match"] = etag
        response = await self.call(
            self.wire.polls(self.index),
            "GET",
            f"/v1/nodes/{self.name}/desired",
            params={"wait_s": self.wire.wait_s if etag is not None else 0},
            headers=headers,
        )
        self.counters.polls += 1
        if response.status_code == 304:
            return
        if response.status_code != 200:
            self.counters.error(f"desired HTTP {response.status_code}")
            await asyncio.sleep(1.0)
            return
        desired = DesiredState.model_validate_json(response.content)
        if self.desired is not None and desired.generation == self.desired.generation:
            return
        self.counters.polls_changed += 1
        await self._apply(desired)

    async def _apply(self, desired: DesiredState) -> None:
        """Take a new desired state: fetch what it needs first, so that a download that
        fails leaves the old one held and the next poll brings the new one again."""
        now_s = self.clock()
        wanted = {}
        for assignment in desired.assignments:
            held = self.workloads.get(assignment.deployment)
            if held is not None and held[:2] == (assignment.generation, assignment.revision):
                wanted[assignment.deployment] = held
                continue
            ready_s = now_s + self.rng.uniform(*START_S)
            model = assignment.model
            if self.download and model is not None and not await self._fetch(model.digest):
                ready_s = math.nan  # reported Failed
            wanted[assignment.deployment] = (
                assignment.generation,
                assignment.revision,
                assignment.kind,
                ready_s,
            )
        self.desired, self.workloads = desired, wanted
        self.record(
            "desired.received",
            {"generation": desired.generation, "assignments": len(desired.assignments)},
        )

    async def _fetch(self, digest: str) -> bool:
        """Download an assigned artifact and check its sha256, once per digest; whether
        the node holds it. LinkDown when the controller cannot be reached."""
        if digest in self.digests:
            return True
        response = await self.call(
            self.wire.api(self.index), "GET", f"/v1/artifacts/{digest}", headers=self._headers()
        )
        if response.status_code != 200:
            self.counters.error(f"artifact HTTP {response.status_code}")
            return False
        actual = "sha256:" + hashlib.sha256(response.content).hexdigest()
        if actual != digest:
            self.counters.error("artifact digest mismatch")
            return False
        self.digests.add(digest)
        self.counters.downloads += 1
        self.counters.download_bytes += len(response.content)
        return True

    # -- the node's loops ---------------------------------------------------------------

    def _unreachable(self, what: str) -> None:
        """Count a request that failed with the simulated link up: the controller did not
        answer (refused, timed out, 5xx)."""
        if self.link_up():
            self.counters.error(f"{what}: controller unreachable")

    def _note_link(self, up: bool, why: str = "") -> None:
        if up != self.link_was_up:
            self.link_was_up = up
            if up:
                self.record("controller.reachable", {})
            else:
                self.record("controller.unreachable", {"error": why[:200]})

    async def beat_loop(self) -> None:
        """Heartbeat, then deliver the outbox; every ``heartbeat_s``. The first beat goes
        at once (it learns the interval), the second at a random phase within the
        interval, so that a fleet enrolled together does not beat in step."""
        first = True
        while True:
            try:
                await self.heartbeat()
                await self.deliver()
                self._note_link(True)
            except LinkDown as exc:
                self._note_link(False, str(exc))
                self._unreachable("heartbeat")
                # the beat that was not heard still sampled the device (telemetry kept)
            except CredentialRejected as exc:
                self.stopped = f"credential rejected: {exc}"
                self.counters.error("credential rejected")
                return
            except Exception as exc:  # a simulated node counts what went wrong, goes on
                self.counters.error(f"heartbeat: {type(exc).__name__}")
            await asyncio.sleep(
                self.rng.uniform(0, self.heartbeat_s) if first else self.heartbeat_s
            )
            first = False

    async def poll_loop(self) -> None:
        """Keep a long poll parked; while the link is down wait for it to return."""
        while True:
            try:
                await self.poll()
            except LinkDown:
                self._unreachable("desired")
                change = self.link.next_change_s(self.clock())
                wait_s = self.heartbeat_s if change is None else change - self.clock()
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(wait_s, 0.05))
            except CredentialRejected:
                return
            except Exception as exc:
                self.counters.error(f"desired: {type(exc).__name__}")
                await asyncio.sleep(1.0)
