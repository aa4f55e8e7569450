"""A real controller, a real agent and a real Mosquitto: the agent converges through the
controller's MQTT change notice while its long poll is parked where no wakeup reaches it
(as on a replica that did not make the change) and its heartbeats are a minute apart;
when the broker dies, the long poll alone still brings every change and both sides say
so; when the broker returns, notices work again."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_helpers import eventually, running_agent, settings_for

from edgetier.control import Controller, ControllerSettings, ControlService
from edgetier.testing import Mosquitto, free_port, make_random_classifier

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed (make system-deps)",
    ),
]

LONG_S = 60.0
"""The agent's long poll and the controller's heartbeat interval: what could bring a
change without a notice comes only after this."""
NOTICE_S = 20.0
"""How long a test waits for a change to arrive: well below LONG_S."""


@contextmanager
def _controller(root: Path, mqtt_url: str) -> Iterator[tuple[Controller, httpx.Client]]:
    settings = ControllerSettings(
        data_dir=root,
        port=free_port(),
        node_timeout_s=600.0,
        heartbeat_interval_s=LONG_S,
        mqtt_url=mqtt_url,
    )
    with Controller(settings).running() as controller:
        operator = {"Authorization": f"Bearer {controller.service.operator_token}"}
        with httpx.Client(base_url=controller.url, headers=operator, timeout=30) as client:
            yield controller, client


class LongPolls:
    """The controller's parked long polls, watched and held: ``parked_at(g)`` says whether
    a poll that has seen generation ``g`` is parked (polls that their agent gave up stay
    parked until their timeout, so counting them would not do); inside ``not_woken()``
    changes wake none of them, as for a poll parked on another replica than the one that
    made the change."""

    def __init__(self, service: ControlService) -> None:
        self.notifier = notifier = service.notifier
        self._seen: list[int] = []
        original = notifier.wait

        async def wait(node: str, seen_generation: int, timeout_s: float) -> bool:
            self._seen.append(seen_generation)
            try:
                return await original(node, seen_generation, timeout_s)
            finally:
                self._seen.remove(seen_generation)

        notifier.wait = wait  # type: ignore[method-assign]

    def parked_at(self, generation: int) -> bool:
        return generation in list(self._seen)

    @contextmanager
    def not_woken(self) -> Iterator[None]:
        self.notifier.publish = lambda generations: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.notifier.publish  # the class's own again


def _deployment(client: httpx.Client, replicas: int | None) -> None:
    """Apply the deployment of model "classifier" (``replicas``), or delete it (None)."""
    if replicas is None:
        answer = client.delete("/v1/deployments/m")
    else:
        body = {
            "apiVersion": "edgetier/v1",
            "kind": "Deployment",
            "metadata": {"name": "m"},
            "spec": {"model": {"name": "classifier"}, "replicas": replicas},
        }
        answer = client.put("/v1/deployments/m", json=body)
    assert answer.status_code in (200, 201, 204), answer.text


def _events(client: httpx.Client, kind: str) -> list[dict[str, Any]]:
    answer = client.get("/v1/events", params={"source": "edge-1", "kind": kind})
    return list(answer.json())


async def test_the_agent_converges_through_notices_and_without_the_broker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgetier")
    with Mosquitto() as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        with _controller(tmp_path / "controller", url) as (controller, client):
            service = controller.service
            polls = LongPolls(service)
            model = make_random_classifier(tmp_path / "classifier.onnx")
            pushed = client.post(
                "/v1/models/classifier/versions", files={"file": ("m.onnx", model.read_bytes())}
            )
            assert pushed.status_code == 201, pushed.text
            token = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
            settings = settings_for(
                controller.url,
                tmp_path / "store",
                token=token,
                profile="jetson-agx-orin-64gb",
                wait_s=LONG_S,
                mqtt_url=url,
            )
            async with running_agent(settings) as agent:
                assert agent.notices is not None
                await eventually(lambda: agent.notices.connected, what="the agent's broker")
                await eventually(lambda: polls.parked_at(0), what="a parked poll")

                def holds(generation: int) -> bool:
                    held = agent.desired.generation if agent.desired is not None else 0
                    return held == generation == service.desired_generation("edge-1")

                # 1. the long poll is parked and not woken; the notice brings the change
                with polls.not_woken():
                    _deployment(client, replicas=1)
                    await eventually(lambda: holds(1), timeout_s=NOTICE_S, what="gen 1")
                assert agent.desired is not None and len(agent.desired.assignments) == 1
                assert "edgetier_controller_notice_broker_up 1.0" in client.get("/metrics").text

                # 2. the broker dies: both sides say so, the long poll brings the change
                broker.kill()
                await eventually(
                    lambda: not agent.notices.connected and not service.notices.connected,
                    what="both sides seeing the broker gone",
                )
                assert "edgetier_controller_notice_broker_up 0.0" in client.get("/metrics").text
                await eventually(lambda: polls.parked_at(1), what="a parked poll")
                _deployment(client, replicas=None)
                await eventually(lambda: holds(2), timeout_s=NOTICE_S, what="gen 2 by long poll")
                assert agent.desired is not None and agent.desired.assignments == []
                gone = f"MQTT broker {url} unreachable (connection lost)"
                agent_line = f"{gone}: no change notices until it is back; desired state "
                agent_line += "still comes through the long poll (at most 60 s after a change)"
                assert agent_line in caplog.text
                assert (
                    f"{gone}: change notices wait for it; agents get desired state through "
                    "their long poll meanwhile"
                ) in caplog.text
                await eventually(
                    lambda: _events(client, "notices.unreachable"),
                    what="the agent's event in the controller's log",
                )

                # 3. the broker returns: notices work again (the agent subscribed anew)
                broker.start()
                await eventually(
                    lambda: agent.notices.connected and service.notices.connected,
                    timeout_s=40,
                    what="both sides back on the broker",
                )
                await eventually(lambda: polls.parked_at(2), what="a parked poll")
                with polls.not_woken():
                    _deployment(client, replicas=1)
                    await eventually(lambda: holds(3), timeout_s=NOTICE_S, what="gen 3")
                await eventually(
                    lambda: _events(client, "notices.reachable"), what="the agent's event"
                )
