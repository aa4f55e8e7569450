"""Helpers of the agent's tests: settings with short intervals, a free block of ports, an
agent running in the test's event loop, and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from edgetier.agent import Agent, AgentSettings
from edgetier.testing import free_tcp_block

TOKEN = "enrol-token-0123456789abcdef"
PROFILE = "jetson-xavier-nx"


def settings_for(url: str, store: Path, name: str = "edge-1", **extra: Any) -> AgentSettings:
    """Agent settings for tests: every interval short, two pipeline slots."""
    values: dict[str, Any] = {
        "controller": url,
        "name": name,
        "token": TOKEN,
        "profile": PROFILE,
        "store": store,
        "port_base": free_tcp_block(30),
        "heartbeat_s": 0.2,
        "wait_s": 1.0,
        "request_timeout_s": 2.0,
        "retry_initial_s": 0.05,
        "retry_max_s": 0.3,
        "restart_initial_s": 0.2,
        "restart_max_s": 1.0,
        "restart_failures": 3,
        "healthy_after_s": 30.0,
        "resync_s": 0.3,
        "start_settle_s": 1.0,
        "stop_timeout_s": 10.0,
        "max_pipelines": 2,
    }
    values.update(extra)
    return AgentSettings(**values)


@asynccontextmanager
async def running_agent(settings: AgentSettings) -> AsyncIterator[Agent]:
    """The agent in a task of the test's loop; stopped (children drained) on exit."""
    agent = Agent(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def eventually(
    check: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something true; its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)
