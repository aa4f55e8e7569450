"""A config whose dims include the batch dimension is told to leave it out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetier.errors import ConfigError
from edgetier.runtime import ModelRepository
from edgetier.synthetic import make_small


def _repo(root: Path, config: str) -> ModelRepository:
    make_small(root / "small" / "1" / "model.onnx")
    (root / "small" / "config.yaml").write_text(config)
    return ModelRepository(root)


@pytest.mark.parametrize("dims", ["[-1, 16]", "[1, 16]"])
def test_dims_with_the_batch_dimension_say_to_leave_it_out(tmp_path: Path, dims: str) -> None:
    repo = _repo(
        tmp_path,
        f"max_batch_size: 8\ninput: [{{name: input, data_type: TYPE_FP32, dims: {dims}}}]\n",
    )
    with pytest.raises(ConfigError) as info:
        repo.config("small")
    message = str(info.value)
    assert f"input[0].dims: {dims} does not fit the graph's [16]" in message
    assert "leave out the batch dimension when max_batch_size > 0" in message
    assert message.endswith("(max_batch_size is 8): dims [16]")


def test_other_dims_mistakes_get_no_batch_hint(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "input: [{name: input, data_type: TYPE_FP32, dims: [8]}]\n")
    with pytest.raises(ConfigError, match="does not fit") as info:
        repo.config("small")
    assert "batch dimension" not in str(info.value)
    unbatched = _repo(
        tmp_path / "flat",
        "max_batch_size: 0\ninput: [{name: input, data_type: TYPE_FP32, dims: [16]}]\n",
    )
    with pytest.raises(ConfigError, match="does not fit") as info:
        unbatched.config("small")
    assert "batch dimension" not in str(info.value)
