"""MQTT change notices against a real Mosquitto: the controller's publisher (QoS 1,
retained, the newest generation held while the broker is away) and the agent's listener
(its own topic only, malformed notices ignored, resubscribed after the broker restarts),
with the log lines that say what a missing broker means."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgetier.agent._notices import NoticeListener
from edgetier.control import MqttBroker
from edgetier.control._mqtt_notices import NoticePublisher
from edgetier.testing import Mosquitto

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed (make system-deps)",
    ),
]


def _eventually(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)
    return found


class Watcher:
    """A plain subscriber to every node's notices: (topic, payload, retained, qos)."""

    def __init__(self, port: int, name: str = "notice-watcher") -> None:
        self.seen: list[tuple[str, dict[str, Any], bool, int]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edgetier/v1/nodes/+/desired", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.seen.append((msg.topic, json.loads(msg.payload), bool(msg.retain), msg.qos))

    def messages(self) -> list[tuple[str, dict[str, Any], bool, int]]:
        with self._lock:
            return list(self.seen)

    def generations(self) -> set[tuple[str, int]]:
        return {(topic, payload["generation"]) for topic, payload, _, _ in self.messages()}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher(port: int) -> NoticePublisher:
    publisher = NoticePublisher(MqttBroker.parse(f"mqtt://127.0.0.1:{port}"))
    publisher.start()
    return publisher


def test_notices_are_retained_so_a_late_subscriber_finds_the_newest() -> None:
    edge_1, edge_2 = "edgetier/v1/nodes/edge-1/desired", "edgetier/v1/nodes/edge-2/desired"
    with Mosquitto() as broker:
        publisher = _publisher(broker.port)
        early = Watcher(broker.port, "early-watcher")
        try:
            _eventually(lambda: publisher.connected, "the publisher's connection")
            publisher.publish({"edge-1": 1})
            publisher.publish({"edge-1": 2, "edge-2": 1})
            _eventually(lambda: {(edge_1, 2), (edge_2, 1)} <= early.generations(), "delivery")
            late = Watcher(broker.port, "late-watcher")  # subscribes once the broker has both
            try:
                _eventually(lambda: len(late.messages()) >= 2, "the retained notices")
                time.sleep(0.3)  # anything more would come now
                assert sorted(late.messages(), key=lambda m: m[0]) == [
                    (edge_1, {"generation": 2}, True, 1),
                    (edge_2, {"generation": 1}, True, 1),
                ]
            finally:
                late.close()
        finally:
            early.close()
            publisher.close()


def test_a_broker_away_gets_the_newest_generation_when_it_comes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgetier.control")
    broker = Mosquitto()  # its port is chosen; nothing listens there yet
    publisher = _publisher(broker.port)
    try:
        _eventually(lambda: "unreachable" in caplog.text, "the warning")
        assert (
            f"MQTT broker mqtt://127.0.0.1:{broker.port} unreachable (cannot connect: [Errno "
            "111] Connection refused): change notices wait for it; agents get desired state "
            "through their long poll meanwhile"
        ) in caplog.text
        publisher.publish({"edge-1": 3})  # nothing is raised, nothing blocks
        publisher.publish({"edge-1": 4})
        assert not publisher.connected
        with broker:
            _eventually(lambda: publisher.connected, "the connection once the broker is up")
            assert "reachable again after" in caplog.text
            watcher = Watcher(broker.port)
            try:
                _eventually(watcher.messages, "the notice")
                time.sleep(0.3)
                # the newest only (retained, or live if the watcher was quicker than it)
                assert watcher.generations() == {("edgetier/v1/nodes/edge-1/desired", 4)}
                assert len(watcher.messages()) == 1
            finally:
                watcher.close()
            assert caplog.text.count("unreachable") == 1  # once per outage, not per retry
    finally:
        publisher.close()


def test_the_listener_hears_its_own_node_and_comes_back_with_the_broker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgetier.agent")
    notices: list[int] = []
    links: list[tuple[bool, str]] = []
    with Mosquitto() as broker:
        url = f"mqtt://127.0.0.1:{broker.port}"
        publisher = _publisher(broker.port)
        listener = NoticeListener(
            MqttBroker.parse(url),
            "edge-1",
            on_notice=notices.append,
            on_link=lambda up, why: links.append((up, why)),
            wait_s=30,
        )
        try:
            _eventually(lambda: publisher.connected, "the publisher's connection")
            publisher.publish({"edge-1": 5, "edge-2": 9})
            listener.start()
            _eventually(lambda: notices == [5], "the retained notice of edge-1")
            # another node's notice never arrives; a malformed one is logged and ignored
            publisher.client.publish(listener.topic, b'{"generation": "six"}', qos=1)
            publisher.client.publish(listener.topic, b"not json", qos=1)
            publisher.publish({"edge-1": 6, "edge-2": 10})
            _eventually(lambda: notices == [5, 6], "generation 6")
            assert caplog.text.count("ignoring a malformed change notice") == 1
            assert "edgetier/v1/nodes/edge-1/desired" in caplog.text

            broker.kill()
            _eventually(lambda: links[:1] == [(False, "connection lost")], "the link down")
            assert (
                f"MQTT broker {url} unreachable (connection lost): no change notices until it "
                "is back; desired state still comes through the long poll (at most 30 s after "
                "a change)"
            ) in caplog.text
            broker.start()
            _eventually(lambda: listener.connected and publisher.connected, "both back")
            assert links[1:] == [(True, "")]
            publisher.publish({"edge-1": 7})  # heard: the listener subscribed again
            _eventually(lambda: notices == [5, 6, 7], "generation 7 after the restart")
        finally:
            listener.close()
            publisher.close()


def _documented_acl() -> str:
    """The ACL file docs/agent.md advises, as the reader copies it."""
    text = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    start = text.index("```\n# /etc/mosquitto/acl\n") + len("```\n")
    return text[start : text.index("```", start)]


def test_the_documented_acl_lets_each_node_read_its_own_notices_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = {"edgetier-controller": "c-secret", "edge-1": "e1-secret", "edge-2": "e2-secret"}
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(passwd), user, password], check=True)
    acl.write_text(_documented_acl())
    broker = Mosquitto()
    broker.config.write_text(  # user root: a broker started as root keeps reading tmp_path
        f"listener {broker.port} 127.0.0.1\nallow_anonymous false\nuser root\n"
        f"password_file {passwd}\nacl_file {acl}\n"
    )

    def url(user: str | None) -> MqttBroker:
        login = f"{user}:{users[user]}@" if user else ""
        return MqttBroker.parse(f"mqtt://{login}127.0.0.1:{broker.port}")

    heard: dict[str, list[int]] = {"edge-1": [], "edge-2": [], "anonymous": []}
    with broker:
        publisher = NoticePublisher(url("edgetier-controller"))
        listeners = [
            NoticeListener(url(node), node, on_notice=heard[node].append, wait_s=30)
            for node in ("edge-1", "edge-2")
        ]
        anonymous = NoticeListener(
            url(None), "edge-1", on_notice=heard["anonymous"].append, wait_s=30
        )
        try:
            for link in (publisher, *listeners, anonymous):
                link.start()
            _eventually(lambda: all(link.connected for link in (publisher, *listeners)), "logins")
            publisher.publish({"edge-1": 1, "edge-2": 1})
            _eventually(lambda: heard["edge-1"] == [1] == heard["edge-2"], "both notices")
            # edge-1 may neither forge edge-2's notices nor read them
            spy = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-1-spy")
            spied: list[str] = []
            spy.on_message = lambda _c, _u, msg: spied.append(msg.topic)
            spy.username_pw_set("edge-1", users["edge-1"])
            spy.connect("127.0.0.1", broker.port)
            spy.loop_start()
            try:
                spy.subscribe("edgetier/v1/nodes/+/desired", qos=1)
                spy.publish("edgetier/v1/nodes/edge-2/desired", b'{"generation": 99}', qos=1)
                publisher.publish({"edge-2": 2})
                _eventually(lambda: heard["edge-2"] == [1, 2], "edge-2's next notice")
                _eventually(lambda: spied, "edge-1's own retained notice")
                time.sleep(0.5)  # a forged or foreign notice would have arrived by now
                assert heard["edge-2"] == [1, 2]
                assert spied == ["edgetier/v1/nodes/edge-1/desired"]
            finally:
                spy.disconnect()
                spy.loop_stop()
            # without a login the broker refuses, and the agent says so (once)
            _eventually(lambda: "connection refused: Not authorized" in caplog.text, "refusal")
            assert not anonymous.connected and heard["anonymous"] == []
        finally:
            for link in (publisher, *listeners, anonymous):
                link.close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a broker certificate for ``localhost`` it signed (openssl)."""
    ca_key, ca, key, csr, cert, ext = (
        directory / name
        for name in ("ca.key", "ca.crt", "broker.key", "broker.csr", "broker.crt", "ext")
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext.write_text("subjectAltName=DNS:localhost\n")
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
# paho leaves the socket of a failed TLS handshake to the garbage collector (collected below)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtts_checks_the_broker_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _tls_files(tmp_path)
    broker = Mosquitto()
    broker.config.write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    )
    with broker:
        tls = MqttBroker.parse(f"mqtts://localhost:{broker.port}")
        # the system's CAs do not know this broker's: refused, and the log says why
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.crt"))
        untrusted = NoticePublisher(tls)
        untrusted.start()
        try:
            _eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, "the TLS refusal")
            assert not untrusted.connected
        finally:
            untrusted.close()
            gc.collect()  # here, not in a later test
        # trusting the private CA (SSL_CERT_FILE, as OpenSSL reads it): notices flow
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        heard: list[int] = []
        publisher = NoticePublisher(tls)
        listener = NoticeListener(tls, "edge-1", on_notice=heard.append, wait_s=30)
        try:
            publisher.start()
            listener.start()
            _eventually(lambda: publisher.connected and listener.connected, "TLS connections")
            publisher.publish({"edge-1": 1})
            _eventually(lambda: heard == [1], "the notice over TLS")
        finally:
            listener.close()
            publisher.close()
