"""MQTT change notices: the controller tells a node "your desired state changed" through
a broker, so that the agent fetches at once instead of waiting for its long poll to wake.

The long poll stays the path that always works: a long poll parked on a replica that did
not make the change wakes only at its timeout, and a broker can be away; a notice never
carries desired state itself, only ``{"generation": N}`` on
``edgetier/v1/nodes/<node>/desired`` (QoS 1, retained, so that a node that reconnects
finds the newest). :class:`MqttLink` is the paho client both sides share (connect in the
background, reconnect with back-off, one log line when the broker goes and one when it is
back); :class:`NoticePublisher` is the controller's side::

    publisher = NoticePublisher(MqttBroker.parse("mqtt://broker:1883"))
    publisher.start()                       # returns at once; connects in paho's thread
    publisher.publish({"edge-1": 5})        # from any thread; held while the broker is away
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from edgetier.control._protocol import DesiredNotice, notice_topic
from edgetier.errors import MissingExtraError

__all__ = [
    "KEEPALIVE_S",
    "MqttBroker",
    "MqttLink",
    "NoticePublisher",
    "check_mqtt_url",
]

log = logging.getLogger("edgetier.control")

KEEPALIVE_S = 30
"""MQTT keep-alive: a broker lost without a goodbye is noticed within 1.5 times this."""
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 16
"""paho's reconnect back-off (doubling from the first to the second)."""
_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}


@dataclass(frozen=True)
class MqttBroker:
    """Where the broker is, from ``mqtt://[user[:password]@]host[:port]`` (TCP, port 1883
    by default) or ``mqtts://...`` (TLS, port 8883: the certificate and host name checked
    against the system's CA certificates, or the file ``SSL_CERT_FILE`` names)."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> MqttBroker:
        """The broker of ``url``; ValueError saying what is wrong with it (the URL shown
        without its password)."""
        allowed = "mqtt://[user[:password]@]host[:port] or mqtts://[...]"
        parts = urlsplit(url.strip())
        shown = _without_password(url.strip())
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"must start with mqtt:// or mqtts://, got {shown!r}")
        if not parts.hostname:
            raise ValueError(f"names no broker host: expected {allowed}, got {shown!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"must have no path, query or fragment (the topics are fixed), got {shown!r}"
            )
        try:
            port = parts.port
        except ValueError:  # not a number, or over 65535
            port = 0
        if port == 0 or (port is None and parts.netloc.endswith(":")):
            raise ValueError(f"port must be a number in 1..65535, got {shown!r}")
        default_port, tls = _SCHEMES[parts.scheme]
        return cls(
            host=parts.hostname,
            port=port or default_port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def __str__(self) -> str:
        """The URL without its password (for logs)."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def _without_password(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"


def check_mqtt_url(value: str | None) -> str | None:
    """A settings validator: the URL when :meth:`MqttBroker.parse` takes it."""
    if value is not None:
        MqttBroker.parse(value)
    return value


class MqttLink:
    """A paho client for one broker, run in paho's own thread: :meth:`start` returns at
    once, the connection is made (and made again, with back-off) in the background, and
    the broker going away or coming back is logged once each with what it means
    (``consequence``, ``resumed``). Subclasses act in :meth:`on_connected` (paho's thread).

    Raises MissingExtraError (the ``mqtt`` extra) when paho-mqtt is not installed.
    """

    def __init__(
        self,
        broker: MqttBroker,
        *,
        client_id: str,
        logger: logging.Logger,
        consequence: str,
        resumed: str,
    ) -> None:
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ModuleNotFoundError as exc:
            raise MissingExtraError("paho-mqtt", "mqtt") from exc
        self.broker = broker
        self.log = logger
        self.consequence = consequence
        self.resumed = resumed
        self._connected = False
        self._closing = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._lock = threading.Lock()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set()  # the system's CA certificates; the host name is checked
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self.client: Any = client

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        """Connect in the background (a broker that is down now is retried)."""
        self._closing = False
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
        self._connected = False

    def on_connected(self, client: Any) -> None:
        """Called in paho's thread on every (re)connection, before :attr:`connected` is
        True again."""

    def on_link(self, up: bool, why: str) -> None:
        """Called in paho's thread when the broker goes away (once) or is back."""

    # -- paho's callbacks (its thread) ----------------------------------------------------

    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._down(f"connection refused: {reason}")
            return
        with self._lock:
            first, self._ever_connected = not self._ever_connected, True
            down_since, self._down_since = self._down_since, None
        self.on_connected(client)
        with self._lock:
            self._connected = True
        if down_since is not None:
            away_s = time.monotonic() - down_since
            self.log.info(
                "MQTT broker %s reachable again after %.1f s: %s", self.broker, away_s, self.resumed
            )
            self.on_link(True, "")
        elif first:
            self.log.info("MQTT broker %s connected: %s", self.broker, self.resumed)

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        error = sys.exc_info()[1]  # paho calls this while it handles the connection's OSError
        self._down(f"cannot connect: {error}" if error is not None else "cannot connect")

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            self._connected = False
        if not self._closing:
            self._down("connection lost" if reason.is_failure else f"disconnected: {reason}")

    def _down(self, why: str) -> None:
        """Log the broker's absence once per outage."""
        with self._lock:
            self._connected = False
            if self._down_since is not None or self._closing:
                return
            self._down_since = time.monotonic()
        self.log.warning(
            "MQTT broker %s unreachable (%s): %s; retrying every %d s at most",
            self.broker,
            why,
            self.consequence,
            RECONNECT_MAX_S,
        )
        self.on_link(False, why)


class NoticePublisher(MqttLink):
    """The controller's side: :meth:`publish` sends each node's newest generation (QoS 1,
    retained). While the broker is away, only the newest generation per node is held and
    sent on reconnection, so an outage costs one notice per changed node, not a queue of
    every change; paho sends again what was in flight when the connection broke."""

    def __init__(self, broker: MqttBroker) -> None:
        super().__init__(
            broker,
            client_id=f"edgetier-controller-{uuid.uuid4().hex[:12]}",
            logger=log,
            consequence="change notices wait for it; agents get desired state through "
            "their long poll meanwhile",
            resumed="publishing change notices on edgetier/v1/nodes/<node>/desired",
        )
        self._held: dict[str, int] = {}

    def publish(self, generations: Mapping[str, int]) -> None:
        """Nodes whose desired generation is now the given one; callable from any thread,
        never blocks on the network."""
        if not generations:
            return
        with self._lock:
            if not self._connected:
                for node, generation in generations.items():
                    self._held[node] = max(generation, self._held.get(node, generation))
                return
        for node, generation in generations.items():
            self._send(node, generation)

    def on_connected(self, client: Any) -> None:
        """Send what was held, until nothing is, before ``publish`` sends directly again
        (so that a held, older generation is never sent after a newer one)."""
        while True:
            with self._lock:
                held, self._held = self._held, {}
                if not held:
                    self._connected = True
                    return
            for node, generation in held.items():
                self._send(node, generation)

    def _send(self, node: str, generation: int) -> None:
        payload = DesiredNotice(generation=generation).payload()
        self.client.publish(notice_topic(node), payload, qos=1, retain=True)
