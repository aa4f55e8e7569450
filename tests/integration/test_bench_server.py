"""`edgetier bench server` against a live EdgeTier server (small demo model, few requests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgetier.bench import BenchReport, ServerBenchConfig, run_server_bench

pytestmark = [
    pytest.mark.integration,
    # The server runs in this process here, so the client's CPU figure includes it.
    pytest.mark.filterwarnings("ignore::edgetier.bench.ClientBottleneckWarning"),
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    from edgetier.server import InferenceServer, ServerSettings
    from edgetier.synthetic import build_demo_repository

    repo = tmp_path_factory.mktemp("repo")
    build_demo_repository(repo, models=["small"])
    settings = ServerSettings(
        model_repository=repo, http_port=0, grpc_port=0, metrics_port=None, log_level="warning"
    )
    ready = threading.Event()
    ports: dict[str, int] = {}
    loop = asyncio.new_event_loop()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with InferenceServer(settings) as server:
            ports.update(http=server.http_port, grpc=server.grpc_port)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(60), "server did not start"
    try:
        yield ports["http"], ports["grpc"]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.mark.parametrize(
    ("protocol", "tensors"),
    [("grpc", "binary"), ("grpc", "shm"), ("http", "binary"), ("http", "json"), ("http", "shm")],
)
def test_closed_loop_against_live_server(
    live_server: tuple[int, int], protocol: str, tensors: str
) -> None:
    http_port, grpc_port = live_server
    port = grpc_port if protocol == "grpc" else http_port
    cfg = ServerBenchConfig(
        url=f"{protocol}://127.0.0.1:{port}",
        model="small",
        batch_size=2,
        concurrency=[1, 2],
        tensors=tensors,  # type: ignore[arg-type]
        duration_s=None,
        count=15,
        warmup_s=0.05,
        energy=False,
        progress=False,
    )
    report = run_server_bench(cfg)
    assert isinstance(report, BenchReport) and report.kind == "server"
    assert [r.concurrency for r in report.results] == [1, 2]
    for r in report.results:
        assert r.errors == 0 and r.requests >= 15
        assert r.protocol == protocol and r.tensors == tensors and r.batch_size == 2
        assert r.client_cpu_percent is not None


def test_open_loop_against_live_server(live_server: tuple[int, int], tmp_path: Path) -> None:
    _, grpc_port = live_server
    cfg = ServerBenchConfig(
        url=f"grpc://127.0.0.1:{grpc_port}",
        model="small",
        concurrency=[],
        rates=[40.0],
        duration_s=0.5,
        warmup_s=0.1,
        energy=False,
        progress=False,
    )
    report = run_server_bench(cfg)
    (row,) = report.results
    assert row.offered_rate_per_s == 40.0 and row.concurrency is None
    assert row.errors == 0 and row.requests > 0


def test_unknown_model_is_a_clear_error(live_server: tuple[int, int]) -> None:
    from edgetier.errors import EdgeTierError

    _, grpc_port = live_server
    cfg = ServerBenchConfig(
        url=f"grpc://127.0.0.1:{grpc_port}",
        model="nope",
        concurrency=[1],
        count=1,
        duration_s=None,
        energy=False,
        progress=False,
    )
    with pytest.raises(EdgeTierError, match="nope"):
        run_server_bench(cfg)
