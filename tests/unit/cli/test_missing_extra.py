"""A node installed without an extra: what does not need it works, what does names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[3] / "examples" / "pipelines" / "traffic-synthetic.yaml"

# Run the CLI in a fresh interpreter where the video extra's modules cannot be imported,
# as after `pip install edgetier` alone.
BLOCK_VIDEO = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {"cv2", "av", "supervision", "trackers", "paho", "asyncua", "motmetrics"}

class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["edgetier", *sys.argv[1:]]
from edgetier.cli import main
main()
"""


def _edgetier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_VIDEO, *args],
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
