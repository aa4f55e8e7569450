"""`edgetier agent`: options checked before anything starts, each error saying what to do,
and the exit statuses a supervisor (systemd, `edgetier up`) can act on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from edgetier.agent import EXIT_CREDENTIAL, AgentStore
from edgetier.agent._store import Credential
from edgetier.cli import app

URL = "http://127.0.0.1:9"  # nothing listens: none of these runs may reach a controller


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["agent", *args])
    return result.exit_code, result.output


def test_the_controller_and_name_are_required_and_names_are_dns_labels(tmp_path: Path) -> None:
    code, out = _run("--name", "edge-1")
    assert code == 2 and "--controller: required" in out
    code, out = _run("--controller", URL, "--name", "Edge_1", "--store", str(tmp_path))
    assert code == 2 and "--name" in out and "DNS label" in out and "'Edge_1'" in out


def test_labels_are_k_v_pairs(tmp_path: Path) -> None:
    code, out = _run("--controller", URL, "--name", "e", "--labels", "site=a,oops")
    assert code == 2 and "expected k=v pairs, got 'oops'" in out


def test_the_first_start_needs_a_token(tmp_path: Path) -> None:
    code, out = _run("--controller", URL, "--name", "e", "--store", str(tmp_path / "s"))
    assert code == 2 and "--token" in out and "has not enrolled yet" in out


def test_settings_come_from_a_file_and_the_command_line_wins(tmp_path: Path) -> None:
    settings = tmp_path / "agent.yaml"
    settings.write_text("controller: http://127.0.0.1:9\nname: from-file\nheartbeat_s: -1\n")
    code, out = _run("--config", str(settings), "--name", "e")
    assert code == 2 and f"{settings}: heartbeat_s" in out and "-1" in out
    settings.write_text("controller: http://127.0.0.1:9\nname: from-file\nport_base: 5\n")
    code, out = _run("--config", str(settings), "--port-base", "7")
    assert code == 2 and "--port-base" in out and "7" in out


def test_a_refused_credential_exits_4_saying_how_to_enrol_again(tmp_path: Path) -> None:
    store = AgentStore(tmp_path / "s")
    expires = datetime.now(UTC) + timedelta(days=1)
    store.save_credential(Credential("e", "secret", expires, "sha-of-old-token", rejected=True))
    store.close()
    code, out = _run("--controller", URL, "--name", "e", "--store", str(tmp_path / "s"))
    assert code == EXIT_CREDENTIAL == 4
    assert "credential was refused by the controller" in out and "--token NEW" in out


def test_several_controller_addresses_repeated_or_comma_separated() -> None:
    from edgetier.agent import AgentSettings

    one = AgentSettings(controller="http://a:1, http://b:2/", name="e")
    assert one.controller_urls == ["http://a:1", "http://b:2"]
    assert one.controller_url == "http://a:1"
    listed = AgentSettings(controller=["http://a:1", "http://b:2,http://c:3"], name="e")
    assert listed.controller_urls == ["http://a:1", "http://b:2", "http://c:3"]
    code, out = _run("--controller", URL, "--controller", "ftp://b", "--name", "e")
    assert code == 2 and "--controller[1]" in out and "'ftp://b'" in out
