"""A fleet of simulated nodes against a real controller, for a bounded time.

    settings = SimulationSettings(controllers=["http://127.0.0.1:8080"], operator_token=T,
                                  nodes=1000, duration_s=300, heartbeat_s=10)
    report = asyncio.run(FleetSimulation(settings).run(progress=print))

The operator token creates one enrolment token per node; nodes enrol a few at a time,
then each keeps its heartbeat (phases spread over the interval), its long poll and its
outbox going until the duration is up. Which nodes overheat, lose their link for a while
or flap is drawn from ``seed``, so two runs with one seed meet the same faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field, field_validator

from edgetier.config import ConfigModel
from edgetier.errors import AuthenticationError, ConfigError, StartupError
from edgetier.simulate._device import DEFAULT_MIX, TIERS, SimDevice, draw_profiles
from edgetier.simulate._node import LinkDown, LinkPlan, NodeCounters, SimNode, Wire

__all__ = ["FleetSimulation", "Progress", "SimulationSettings"]

FLUSH_S = 5.0
"""At the end, how long the nodes may take to deliver what their outboxes hold."""


class SimulationSettings(ConfigModel):
    """``edgetier fleet simulate``'s options (every error at once, the field named)."""

    controllers: list[str] = Field(min_length=1, description="controller URLs (replicas)")
    operator_token: str = Field(min_length=1, description="creates the enrolment tokens")
    nodes: int = Field(default=10, ge=1, le=100_000)
    duration_s: float = Field(default=60.0, gt=0, le=7 * 86_400.0)
    heartbeat_s: float | None = Field(
        default=None, gt=0, description="None: the interval the controller's replies give"
    )
    wait_s: float = Field(default=30.0, ge=0, le=60, description="desired-state long poll")
    prefix: str = Field(default="sim", pattern=r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX))
    overheating: float = Field(default=0.02, ge=0, le=1, description="share of nodes")
    dropped_links: float = Field(default=0.02, ge=0, le=1, description="share of nodes")
    flapping: float = Field(default=0.01, ge=0, le=1, description="share of nodes")
    link_down_s: tuple[float, float] = Field(
        default=(20.0, 60.0), description="a dropped link's outage, uniform in this range"
    )
    flap_s: float = Field(default=20.0, gt=0, description="a flapping link: down, up, ...")
    thermal_tau_s: float = Field(default=30.0, gt=0, description="thermal time constant")
    enrol_concurrency: int = Field(default=16, ge=1, le=1000)
    download: bool = Field(default=True, description="download and check assigned artifacts")
    seed: int = 0

    @field_validator("mix")
    @classmethod
    def _mix(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(TIERS))
        if unknown:
            raise ValueError(f"unknown tier(s) {unknown}; tiers are {list(TIERS)}")
        if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError(f"shares must be >= 0 and not all 0, got {mix}")
        return mix

    @field_validator("link_down_s")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"expected 0 < min <= max, got {list(value)}")
        return value


@dataclass
class Progress:
    """A snapshot of the simulation; ``line()`` is what ``edgetier fleet simulate`` prints,
    ``as_dict()`` what its ``--report`` JSON holds at the end."""

    elapsed_s: float
    nodes: int
    enrolled: int
    link_down: int
    throttled: int
    running: int
    heartbeats: int
    heartbeats_per_s: float
    heartbeat_p50_ms: float | None
    heartbeat_p99_ms: float | None
    records_acked: int
    outbox_pending: int
    polls: int
    desired_changes: int
    downloads: int
    errors: dict[str, int]
    cpu_s: float
    cpu_pct: float
    stopped_nodes: int = 0

    def line(self) -> str:
        p99 = "-" if self.heartbeat_p99_ms is None else f"{self.heartbeat_p99_ms:.0f} ms"
        errors = sum(self.errors.values())
        return (
            f"{self.elapsed_s:6.0f} s  nodes {self.enrolled}/{self.nodes}  "
            f"link down {self.link_down}  throttled {self.throttled}  "
            f"running {self.running}  heartbeats {self.heartbeats} "
            f"({self.heartbeats_per_s:.1f}/s, p99 {p99})  records {self.records_acked} "
            f"(+{self.outbox_pending} queued)  desired {self.desired_changes}  "
            f"errors {errors}  cpu {self.cpu_pct:.0f} %"
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _cpu_s() -> float:
    """CPU seconds of this thread, the event loop's: the simulator's own, also when it
    shares its process with a controller (in tests)."""
    return time.thread_time()


def _percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q`` quantile in milliseconds, rounded to 0.1 ms; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(1000.0 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


class FleetSimulation:
    def __init__(self, settings: SimulationSettings) -> None:
        self.settings = settings
        self.counters = NodeCounters()
        self.nodes: list[SimNode] = []
        self._start = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def _plan(self, wire: Wire) -> list[SimNode]:
        """The nodes, their profiles and their faults, all drawn from the seed."""
        s = self.settings
        rng = random.Random(s.seed)
        drawn = draw_profiles(s.mix, s.nodes, rng)
        order = list(range(s.nodes))
        rng.shuffle(order)
        n_hot = round(s.overheating * s.nodes)
        n_drop = round(s.dropped_links * s.nodes)
        n_flap = round(s.flapping * s.nodes)
        hot = set(order[:n_hot])
        dropped = set(order[n_hot : n_hot + n_drop])
        flapping = set(order[n_hot + n_drop : n_hot + n_drop + n_flap])
        width = max(4, len(str(s.nodes)))
        nodes = []
        for i, (tier, profile) in enumerate(drawn):
            node_rng = random.Random(rng.random())
            outages: list[tuple[float, float]] = []
            if i in dropped:
                start = node_rng.uniform(0.2, 0.6) * s.duration_s
                outages.append((start, start + node_rng.uniform(*s.link_down_s)))
            if i in flapping:
                at = node_rng.uniform(0.1, 0.3) * s.duration_s
                while at < s.duration_s:
                    outages.append((at, at + s.flap_s))
                    at += 2 * s.flap_s
            device = SimDevice(
                profile,
                rng=node_rng,
                overheat_at_s=node_rng.uniform(0.1, 0.4) * s.duration_s if i in hot else None,
                overheat_for_s=node_rng.uniform(0.3, 0.5) * s.duration_s,
                thermal_tau_s=s.thermal_tau_s,
            )
            nodes.append(
                SimNode(
                    f"{s.prefix}-{tier}-{i:0{width}d}",
                    tier,
                    device,
                    wire,
                    self.counters,
                    index=i,
                    link=LinkPlan(tuple(outages)),
                    clock=self.elapsed_s,
                    rng=node_rng,
                    heartbeat_s=s.heartbeat_s,
                    download=s.download,
                )
            )
        return nodes

    def progress(self, *, since: tuple[float, int, float] | None = None) -> Progress:
        """Where the simulation stands; rates over the time since ``since`` (elapsed,
        heartbeats, cpu) or over the whole run."""
        elapsed, cpu = self.elapsed_s(), _cpu_s() - self._cpu0
        t0, beats0, cpu_0 = since or (0.0, 0, 0.0)
        dt = max(elapsed - t0, 1e-9)
        c = self.counters
        latencies = list(c.heartbeat_latency_s)
        now_s = self.elapsed_s()
        return Progress(
            elapsed_s=round(elapsed, 3),
            nodes=len(self.nodes),
            enrolled=c.enrolled,
            link_down=sum(1 for n in self.nodes if not n.link.up(now_s)),
            throttled=sum(1 for n in self.nodes if n.device.throttled),
            running=sum(1 for n in self.nodes if any(now_s >= w[3] for w in n.workloads.values())),
            heartbeats=c.heartbeats,
            heartbeats_per_s=round((c.heartbeats - beats0) / dt, 2),
            heartbeat_p50_ms=_percentile_ms(latencies, 0.50),
            heartbeat_p99_ms=_percentile_ms(latencies, 0.99),
            records_acked=c.records_acked,
            outbox_pending=sum(len(n.outbox) for n in self.nodes),
            polls=c.polls,
            desired_changes=c.polls_changed,
            downloads=c.downloads,
            errors=dict(c.errors),
            cpu_s=round(cpu, 3),
            cpu_pct=round(100.0 * (cpu - cpu_0) / dt, 1),
            stopped_nodes=sum(1 for n in self.nodes if n.stopped),
        )

    async def run(
        self,
        *,
        progress: Callable[[Progress], None] | None = None,
        progress_s: float = 5.0,
        stop: asyncio.Event | None = None,
    ) -> Progress:
        """Run until ``duration_s`` has passed (or ``stop`` is set); the final snapshot,
        with rates over the whole run."""
        s = self.settings
        stop = stop or asyncio.Event()
        self._start = time.monotonic()
        self._cpu0 = _cpu_s()
        wire = Wire(s.controllers, s.nodes, wait_s=s.wait_s)
        self.nodes = self._plan(wire)
        tasks: list[asyncio.Task[None]] = []
        reporter = asyncio.create_task(self._report(progress, progress_s))
        try:
            await self._check(wire)
            enrolling = asyncio.create_task(self._enrol_all(wire, tasks))
            stopping = asyncio.create_task(stop.wait())
            waiting = {enrolling, stopping}
            while stopping in waiting and (left_s := s.duration_s - self.elapsed_s()) > 0:
                done, waiting = await asyncio.wait(
                    waiting, timeout=left_s, return_when=asyncio.FIRST_COMPLETED
                )
                if enrolling in done:
                    enrolling.result()  # raises what stopped the enrolment
            for task in (enrolling, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._flush()
        finally:
            reporter.cancel()
            for task in tasks:
                task.cancel()
            await wire.aclose()
        return self.progress()

    async def _check(self, wire: Wire) -> None:
        """A controller answers and the operator token holds (a clear error, not a
        thousand failed enrolments); with several addresses, one answering is enough."""
        unreachable = []
        for url in wire.urls:
            try:
                answer = await wire.api(0).get(url + "/v1/tokens", headers=self._operator())
            except httpx.TransportError as exc:
                unreachable.append(f"{url}: {exc or type(exc).__name__}")
                continue
            if answer.status_code in (401, 403):
                raise AuthenticationError(
                    f"operator token: the controller at {url} refused it "
                    f"(HTTP {answer.status_code})"
                )
            if answer.status_code != 200:
                raise StartupError(f"{url}/v1/tokens: HTTP {answer.status_code}: {answer.text}")
            return
        raise StartupError(f"cannot reach the controller: {'; '.join(unreachable)}")

    def _operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.operator_token}"}

    async def _enrol_all(self, wire: Wire, tasks: list[asyncio.Task[None]]) -> None:
        s = self.settings
        gate = asyncio.Semaphore(s.enrol_concurrency)

        async def one(node: SimNode) -> None:
            async with gate:
                while node.credential is None:
                    try:
                        token = await self._token(wire, node)
                        await node.enrol(token)
                    except (LinkDown, httpx.HTTPError) as exc:
                        self.counters.error(f"enrol: {type(exc).__name__}")
                        await asyncio.sleep(1.0)
            tasks.append(asyncio.create_task(node.beat_loop()))
            tasks.append(asyncio.create_task(node.poll_loop()))

        await asyncio.gather(*(one(n) for n in self.nodes))

    async def _token(self, wire: Wire, node: SimNode) -> str:
        answer = await node.call(
            wire.api(node.index),
            "POST",
            "/v1/tokens",
            json={"kind": "enrol", "description": f"fleet simulate: {node.name}"},
            headers=self._operator(),
        )
        if answer.status_code != 201:
            raise ConfigError(
                f"creating an enrolment token: HTTP {answer.status_code}: {answer.text}"
            )
        return str(answer.json()["token"])

    async def _flush(self) -> None:
        """Deliver what the outboxes hold, for at most FLUSH_S."""
        gate = asyncio.Semaphore(32)

        async def one(node: SimNode) -> None:
            async with gate:
                with contextlib.suppress(Exception):  # the run is over: count, not raise
                    await node.deliver()

        ready = [n for n in self.nodes if n.credential and n.outbox and n.link_up()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(n) for n in ready)), FLUSH_S)

    async def _report(self, progress: Callable[[Progress], None] | None, every_s: float) -> None:
        if progress is None:
            return
        since = (0.0, 0, 0.0)
        while True:
            await asyncio.sleep(every_s)
            snapshot = self.progress(since=since)
            since = (snapshot.elapsed_s, snapshot.heartbeats, snapshot.cpu_s)
            progress(snapshot)
