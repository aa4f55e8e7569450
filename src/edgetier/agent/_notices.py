"""The agent's side of MQTT change notices: it subscribes to its own node's topic,
``edgetier/v1/nodes/<node>/desired`` (QoS 1), and hands each notice's generation to the
agent, which fetches its desired state at once when it differs from what it holds.

Retained notices mean that on every (re)connection the broker sends the newest one, so a
change made while the agent or the broker was away is seen as soon as they meet again.
Notices only hurry the long poll; without a broker the long poll carries everything::

    listener = NoticeListener(broker, "edge-1", on_notice=print)
    listener.start()                   # paho's thread; on_notice(7) for {"generation": 7}
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from edgetier.control import DesiredNotice, MqttBroker, MqttLink, notice_topic

__all__ = ["NoticeListener"]

log = logging.getLogger("edgetier.agent")


class NoticeListener(MqttLink):
    """Change notices of one node. ``on_notice(generation)`` and ``on_link(up, why)`` are
    called in paho's thread (the agent moves them onto its event loop). A malformed
    notice is logged (once until a good one comes) and ignored."""

    def __init__(
        self,
        broker: MqttBroker,
        node: str,
        *,
        on_notice: Callable[[int], None],
        on_link: Callable[[bool, str], None] | None = None,
        wait_s: float,
    ) -> None:
        super().__init__(
            broker,
            client_id=f"edgetier-agent-{node}",
            logger=log,
            consequence="no change notices until it is back; desired state still comes "
            f"through the long poll (at most {wait_s:g} s after a change)",
            resumed=f"change notices on {notice_topic(node)}",
        )
        self.topic = notice_topic(node)
        self._on_notice = on_notice
        self._on_link = on_link
        self._malformed_logged = False
        self.client.on_message = self._on_message

    def on_connected(self, client: Any) -> None:
        client.subscribe(self.topic, qos=1)  # again on each connection: clean sessions

    def on_link(self, up: bool, why: str) -> None:
        if self._on_link is not None:
            self._on_link(up, why)

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        try:
            notice = DesiredNotice.model_validate_json(message.payload)
        except ValidationError as exc:
            if not self._malformed_logged:
                self._malformed_logged = True
                log.warning(
                    "ignoring a malformed change notice on %s (%s): %r",
                    message.topic,
                    exc.errors(include_url=False)[0]["msg"],
                    bytes(message.payload[:200]),
                )
            return
        self._malformed_logged = False
        self._on_notice(notice.generation)
