"""A node installed without an extra: what does not need it works, what does names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgetier.testing import free_port

EXAMPLE = Path(__file__).parents[3] / "examples" / "pipelines" / "traffic-synthetic.yaml"

# Run the CLI in a fresh interpreter where an extra's modules cannot be imported, as after
# `pip install edgetier` alone.
VIDEO = {"cv2", "av", "supervision", "trackers", "paho", "asyncua", "motmetrics"}
CONTROL = {"fastapi", "starlette", "sqlalchemy", "alembic", "multipart", "python_multipart"}
BLOCK = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["edgetier", *sys.argv[2:]]
from edgetier.cli import main
main()
"""


def _edgetier(*args: str, blocked: set[str] = VIDEO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK, ",".join(sorted(blocked)), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_validate_needs_no_extra() -> None:
    result = _edgetier("pipeline", "validate", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "valid: pipeline 'traffic-synthetic'" in result.stdout


def test_run_names_the_extra_to_install() -> None:
    result = _edgetier("pipeline", "run", str(EXAMPLE), "--frames", "1")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert "error: edgetier pipeline: " in result.stderr
    assert "is not installed; install it with: pip install 'edgetier[video]'" in result.stderr


def test_the_controller_names_the_control_extra(tmp_path: Path) -> None:
    result = _edgetier("controller", "--data-dir", str(tmp_path), "--port", "0", blocked=CONTROL)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "install it with: pip install 'edgetier[control]'" in result.stderr


def test_the_fleet_client_commands_need_no_extra() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the client's own error
    result = _edgetier("nodes", "ls", "--controller", url, "--token", "eto_a.b", blocked=CONTROL)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the controller at {url}" in result.stderr
    assert "not installed" not in result.stderr


def test_mqtt_notices_name_the_mqtt_extra(tmp_path: Path) -> None:
    broker = ["--mqtt", f"mqtt://127.0.0.1:{free_port()}"]
    paho = {"paho"}
    result = _edgetier("controller", "--data-dir", str(tmp_path / "c"), *broker, blocked=paho)
    assert result.returncode == 3, result.stderr
    assert "install it with: pip install 'edgetier[mqtt]'" in result.stderr
    assert not (tmp_path / "c").exists()  # refused before anything was created
    agent = ["--controller", "http://127.0.0.1:9", "--name", "e", "--token", "t" * 20]
    result = _edgetier("agent", *agent, "--store", str(tmp_path / "a"), *broker, blocked=paho)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "install it with: pip install 'edgetier[mqtt]'" in result.stderr
