"""The settings every compared system gets alike: here, ONNX Runtime's intra-op spinning."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetier.bench._systems import ServerSettings, write_repository
from edgetier.bench.peers._common import parser
from edgetier.runtime import ModelRepository

SPIN = "session.intra_op.allow_spinning"


@pytest.mark.parametrize(("spinning", "expected"), [(True, {SPIN: "1"}), (False, {SPIN: "0"})])
def test_edgetier_repository_carries_the_spinning_setting(
    tiny_model: Path, tmp_path: Path, spinning: bool, expected: dict[str, str]
) -> None:
    settings = ServerSettings(intra_op_threads=2, intra_op_spinning=spinning)
    repo = write_repository(tmp_path, tiny_model, "tiny", settings)
    config = ModelRepository(repo).config("tiny")
    assert config.parameters == expected
    assert config.optimization.intra_op_threads == 2


@pytest.mark.parametrize(("flag", "expected"), [([], 1), (["--intra-op-spinning", "0"], 0)])
def test_peer_scripts_take_the_spinning_setting(flag: list[str], expected: int) -> None:
    args = parser("peer").parse_args(
        ["--model", "m.onnx", "--name", "m", "--http-port", "1", *flag]
    )
    assert args.intra_op_spinning == expected
