"""MQTT change notices, the parts without a broker: the broker URL (every mistake named,
the password never shown), the topic and the payload, the settings field and the
`--mqtt` options of `edgetier controller` and `edgetier agent`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgetier.agent import AgentSettings
from edgetier.cli import app
from edgetier.control import ControllerSettings, DesiredNotice, MqttBroker, notice_topic
from edgetier.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", MqttBroker("broker", 1883)),
        ("mqtt://10.0.0.5:1884/", MqttBroker("10.0.0.5", 1884)),
        ("mqtts://broker.example", MqttBroker("broker.example", 8883, tls=True)),
        ("mqtt://[::1]:1885", MqttBroker("::1", 1885)),
        ("mqtt://ctl:p%40ss@b", MqttBroker("b", 1883, username="ctl", password="p@ss")),
        ("mqtt://edge-1@b:1", MqttBroker("b", 1, username="edge-1")),
    ],
)
def test_broker_urls(url: str, expected: MqttBroker) -> None:
    assert MqttBroker.parse(url) == expected


def test_the_password_is_never_shown() -> None:
    broker = MqttBroker.parse("mqtts://ctl:s3cret@broker:8884")
    assert str(broker) == "mqtts://ctl@broker:8884"
    assert "s3cret" not in repr(broker)
    with pytest.raises(ValueError, match="no path") as raised:
        MqttBroker.parse("mqtt://ctl:s3cret@broker/topic")
    assert "s3cret" not in str(raised.value) and "ctl:***@broker" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://broker:1883", "must start with mqtt:// or mqtts://, got 'http://broker:1883'"),
        ("broker:1883", "must start with mqtt:// or mqtts://"),
        ("mqtt://", "names no broker host"),
        ("mqtt://:1883", "names no broker host"),
        ("mqtt://broker:0", "port must be a number in 1..65535, got 'mqtt://broker:0'"),
        ("mqtt://broker:65536", "port must be a number in 1..65535"),
        ("mqtt://broker:x", "port must be a number in 1..65535"),
        ("mqtt://broker:", "port must be a number in 1..65535"),
        ("mqtt://broker/edgetier", "must have no path, query or fragment"),
        ("mqtt://broker?qos=2", "must have no path, query or fragment"),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        MqttBroker.parse(url)
    assert says in str(raised.value)


def test_the_settings_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mqtt_url: must start with mqtt://"):
        ControllerSettings(data_dir=tmp_path, mqtt_url="tcp://broker")
    with pytest.raises(ConfigError, match="mqtt_url: port must be a number"):
        AgentSettings(controller="http://c:8080", name="edge-1", mqtt_url="mqtt://b:99999")
    assert ControllerSettings(data_dir=tmp_path).mqtt_url is None  # the long poll alone


def test_topic_and_payload() -> None:
    assert notice_topic("edge-1") == "edgetier/v1/nodes/edge-1/desired"
    assert DesiredNotice(generation=7).payload() == b'{"generation":7}'
    # a later controller may add fields: an agent of today reads the generation alone
    later = DesiredNotice.model_validate_json(b'{"generation": 8, "reason": "rollout"}')
    assert later.generation == 8
    with pytest.raises(ValueError, match="generation"):
        DesiredNotice.model_validate_json(b'{"generation": -1}')


def test_the_controller_option_names_itself(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["controller", "--data-dir", str(tmp_path), "--mqtt", "http://broker"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--mqtt'" in result.output
    assert "must start with mqtt:// or mqtts://, got 'http://broker'" in result.output
    assert not (tmp_path / "controller.db").exists()  # refused before anything started


def test_the_agent_option_names_itself(tmp_path: Path) -> None:
    given = ["--controller", "http://127.0.0.1:9", "--name", "e", "--token", "t"]
    given += ["--store", str(tmp_path / "s"), "--mqtt", "mqtt://u:pw@broker:0"]
    result = CliRunner().invoke(app, ["agent", *given])
    assert result.exit_code == 2
    assert "command line: --mqtt: port must be a number in 1..65535" in result.output
    assert "pw" not in result.output.replace("mqtt://u:***@broker:0", "")
    settings = tmp_path / "agent.yaml"
    settings.write_text("controller: http://127.0.0.1:9\nname: e\nmqtt_url: broker:1883\n")
    result = CliRunner().invoke(app, ["agent", "--config", str(settings)])
    assert result.exit_code == 2
    assert f"{settings}: mqtt_url: must start with mqtt://" in result.output
