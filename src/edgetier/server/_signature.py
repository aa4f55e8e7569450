"""A model version's tensor table, built once at load, that every request is checked against.

Checks run on the request's header (name, datatype, shape) before its data is decoded,
and each message names the tensor, the value and what the model allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgetier.errors import InvalidInputError
from edgetier.runtime import to_numpy_dtype

MAX_ELEMENTS = 2**48
"""Bound on a shape's dims (zeros counted as 1): numpy cannot even describe much larger
arrays, and a request's data is checked against its shape before anything is allocated."""


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One input or output: its KServe datatype and full shape (-1 = any)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Signature:
    """The inputs and outputs of one model version, with the checks a request must pass."""

    def __init__(
        self,
        model: str,
        inputs: Iterable[tuple[str, str, Sequence[int]]],
        outputs: Iterable[tuple[str, str, Sequence[int]]],
        *,
        max_batch_size: int,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.inputs = {n: TensorEntry(n, d, tuple(s), to_numpy_dtype(d)) for n, d, s in inputs}
        self.outputs = {n: TensorEntry(n, d, tuple(s), to_numpy_dtype(d)) for n, d, s in outputs}
        self.output_names = tuple(self.outputs)
        self._input_list = ", ".join(self.inputs) or "none"
        self._output_list = ", ".join(self.outputs) or "none"

    def check_input(self, name: Any, datatype: Any, shape: Any) -> TensorEntry:
        """The model's entry for an input header; raises InvalidInputError naming the problem."""
        entry = self.inputs.get(name) if isinstance(name, str) else None
        if entry is None:
            raise InvalidInputError(
                f"model {self.model!r} has no input {name!r}; its inputs are: {self._input_list}"
            )
        if datatype != entry.datatype:
            raise InvalidInputError(
                f"input {name!r}: datatype {datatype!r} does not match the model's {entry.datatype}"
            )
        if not isinstance(shape, (list, tuple)) or not all(
            type(d) is int and d >= 0 for d in shape
        ):
            raise InvalidInputError(
                f"input {name!r}: shape must be a list of integers >= 0, got {shape!r}"
            )
        span = 1
        for dim in shape:
            span *= max(dim, 1)
        if span > MAX_ELEMENTS:
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)} spans more than {MAX_ELEMENTS} elements, "
                f"more than any request carries"
            )
        expected = entry.shape
        if len(shape) != len(expected):
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)} has {len(shape)} dims, the model expects "
                f"{len(expected)} ({list(expected)})"
            )
        for axis, (got, want) in enumerate(zip(shape, expected, strict=True)):
            if want != -1 and got != want:
                raise InvalidInputError(
                    f"input {name!r}: dim {axis} of shape {list(shape)} is {got}, the model "
                    f"expects {want} ({list(expected)})"
                )
        if self.max_batch_size > 0:
            batch = shape[0]
            if batch > self.max_batch_size:
                raise InvalidInputError(
                    f"input {name!r}: batch size {batch} exceeds max_batch_size "
                    f"{self.max_batch_size} of model {self.model!r}"
                )
            if batch < 1:
                raise InvalidInputError(f"input {name!r}: batch size must be >= 1, got {batch}")
        return entry

    def check_complete(self, inputs: dict[str, np.ndarray]) -> None:
        """Every input present once, and one batch size across inputs."""
        if len(inputs) != len(self.inputs):
            missing = [n for n in self.inputs if n not in inputs]
            raise InvalidInputError(
                f"model {self.model!r} expects inputs {self._input_list}; missing: "
                f"{', '.join(missing)}"
            )
        if self.max_batch_size > 0 and len(inputs) > 1:
            sizes = {n: a.shape[0] for n, a in inputs.items()}
            if len(set(sizes.values())) > 1:
                raise InvalidInputError(
                    "inputs disagree on the batch size (dim 0): "
                    + ", ".join(f"{n}={s}" for n, s in sizes.items())
                )

    def check_output(self, name: Any) -> TensorEntry:
        """The model's entry for a requested output."""
        entry = self.outputs.get(name) if isinstance(name, str) else None
        if entry is None:
            raise InvalidInputError(
                f"model {self.model!r} has no output {name!r}; its outputs are: {self._output_list}"
            )
        return entry
