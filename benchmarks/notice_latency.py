"""How long a desired-state change takes to reach a real agent, with and without MQTT
change notices: a real controller (in a thread), a real Mosquitto, a real agent (in this
process), a model deployment applied and deleted in turns.

Three ways, side by side in one run, each with a fresh controller and agent:

- ``long poll``: no broker; the long poll parked on the controller that made the change
  is woken at once (one controller: the best case for the long poll).
- ``notice, poll not woken``: the controller does not wake the parked long poll (as a poll
  parked on another replica than the one that made the change); only the notice can bring
  the change before the poll's timeout (``--wait-s``).
- ``both``: notices and a woken long poll, as on one controller with a broker.

A round's time runs from just before the operator's PUT/DELETE to the agent holding the
new generation; each round starts with the agent's long poll parked on the generation it
holds. Medians and the largest of ``--rounds`` rounds; prints a table, writes JSON.

    python benchmarks/notice_latency.py --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from edgetier.agent import Agent, AgentSettings
from edgetier.control import Controller, ControllerSettings
from edgetier.testing import Mosquitto, free_port, free_tcp_block, make_random_classifier

RESULTS = Path(__file__).parent / "results"
MODES = ("long poll", "notice, poll not woken", "both")


async def _until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.002)


async def run_mode(mode: str, rounds: int, wait_s: float, broker: Mosquitto) -> list[float]:
    mqtt_url = None if mode == "long poll" else f"mqtt://127.0.0.1:{broker.port}"
    with tempfile.TemporaryDirectory(prefix="edgetier-notice-bench-") as tmp:
        root = Path(tmp)
        settings = ControllerSettings(
            data_dir=root / "controller",
            port=free_port(),
            node_timeout_s=600,
            heartbeat_interval_s=600,  # no heartbeat reply hurries a fetch
            mqtt_url=mqtt_url,
        )
        with Controller(settings).running() as controller:
            service = controller.service
            parked: list[int] = []
            original_wait = service.notifier.wait

            async def wait(node: str, seen_generation: int, timeout_s: float) -> bool:
                parked.append(seen_generation)
                try:
                    return await original_wait(node, seen_generation, timeout_s)
                finally:
                    parked.remove(seen_generation)

            service.notifier.wait = wait  # type: ignore[method-assign]
            if mode == "notice, poll not woken":
                service.notifier.publish = lambda generations: None  # type: ignore[method-assign]
            operator = {"Authorization": f"Bearer {service.operator_token}"}
            client = httpx.Client(base_url=controller.url, headers=operator, timeout=30)
            model = make_random_classifier(root / "classifier.onnx")
            client.post(
                "/v1/models/classifier/versions", files={"file": ("m.onnx", model.read_bytes())}
            ).raise_for_status()
            token = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
            agent = Agent(
                AgentSettings(
                    controller=controller.url,
                    name="edge-1",
                    token=token,
                    profile="jetson-agx-orin-64gb",
                    store=root / "agent",
                    port_base=free_tcp_block(30),
                    wait_s=wait_s,
                    mqtt_url=mqtt_url,
                )
            )
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            times: list[float] = []
            try:
                for i in range(rounds):
                    held = agent.desired.generation if agent.desired else 0
                    await _until(lambda g=held: g in parked, 60, "a parked long poll")
                    if agent.notices is not None:
                        await _until(lambda: agent.notices.connected, 60, "the broker")
                    body = {
                        "apiVersion": "edgetier/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "m"},
                        "spec": {"model": {"name": "classifier"}, "replicas": 1},
                    }
                    start = time.perf_counter()
                    if i % 2 == 0:
                        call = asyncio.to_thread(client.put, "/v1/deployments/m", json=body)
                    else:
                        call = asyncio.to_thread(client.delete, "/v1/deployments/m")
                    (await call).raise_for_status()
                    await _until(
                        lambda g=held: agent.desired is not None and agent.desired.generation > g,
                        wait_s + 30,
                        "the new generation",
                    )
                    times.append(time.perf_counter() - start)
                    await asyncio.sleep(1.0)  # let the agent's reconcile step settle
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
                client.close()
    return times


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--wait-s", type=float, default=60.0, help="the agent's long poll")
    parser.add_argument("--out", type=Path, default=RESULTS / "notice_latency.json")
    args = parser.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    with Mosquitto() as broker:
        for mode in MODES:
            times = await run_mode(mode, args.rounds, args.wait_s, broker)
            rows[mode] = {
                "rounds": len(times),
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
                "times_ms": [round(t * 1000, 1) for t in times],
            }
    report = {
        "benchmark": "notice_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{_cpu()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": shlex.join(["python", "benchmarks/notice_latency.py", *sys.argv[1:]]),
        "wait_s": args.wait_s,
        "results": rows,
    }
    print("| way | rounds | median ms | max ms |\n|---|---|---|---|")
    for mode, row in rows.items():
        print(f"| {mode} | {row['rounds']} | {row['median_ms']} | {row['max_ms']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
