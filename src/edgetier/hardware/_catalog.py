"""The device catalog: profiles of the hardware EdgeTier runs on, read from catalog.yaml.

Headline TOPS figures are what the vendor's datasheet prints; where that figure assumes
2:4 structured sparsity (Ampere and later), ``int8_sparse``/``fp16_sparse`` says so and
``dense_int8_tops``/``dense_fp16_tflops`` halve it, because ordinary models are dense.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, model_validator

from edgetier.config import ConfigModel, load_file, validate
from edgetier.errors import NotFoundError
from edgetier.hardware._cpu import SimdLevel, flops_per_cycle

__all__ = ["Catalog", "CpuSpec", "DeviceProfile", "PowerMode", "get_profile", "load_catalog"]


class _Strict(ConfigModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerMode(_Strict):
    """One power mode (a Jetson nvpmodel mode, or a GPU's configurable power limit)."""

    id: int
    name: str
    power_w: float | None = Field(description="power budget of the mode; None where uncapped")


class CpuSpec(_Strict):
    """A CPU profile's reference machine; the probe replaces it with the local CPU."""

    reference: str
    cores: int = Field(ge=1)
    clock_ghz: float = Field(gt=0)
    simd: SimdLevel
    power_per_core_w: float | None = None
    memory_bandwidth_gbs_per_core: float | None = None

    @property
    def peak_fp32_tflops(self) -> float:
        return self.cores * self.clock_ghz * flops_per_cycle(self.simd) / 1000.0


class DeviceProfile(_Strict):
    """One device of the catalog; every figure is the datasheet's, cited in ``sources``."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str
    kind: Literal["jetson", "gpu", "cpu"]
    tier: Literal["terminal", "edge", "region", "cloud"]
    match: list[str] = Field(
        default_factory=list,
        description="regexes (case-insensitive) against the NVML name, the device-tree model "
        "or the CPU architecture",
    )
    int8_tops: float | None = None
    int8_sparse: bool = False
    fp16_tflops: float | None = None
    fp16_sparse: bool = False
    fp32_tflops: float | None = None
    memory_gb: float | None = None
    memory_bandwidth_gbs: float | None = None
    tdp_w: float | None = None
    idle_w: float | None = None
    power_modes: list[PowerMode] = Field(default_factory=list)
    cuda_cores: int | None = None
    tensor_cores: int | None = None
    dla_count: int | None = None
    pcie_gen: int | None = None
    decode_1080p30_streams: int | None = None
    mig: bool = False
    mig_max_instances: int | None = None
    cpu: CpuSpec | None = None
    sources: list[str] = Field(min_length=1)
    notes: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if self.kind == "cpu" and self.cpu is None:
            raise ValueError(f"{self.id}: kind 'cpu' needs a 'cpu' block")
        if self.mig and not self.mig_max_instances:
            raise ValueError(f"{self.id}: mig is true but mig_max_instances is not set")
        return self

    @property
    def dense_int8_tops(self) -> float | None:
        if self.int8_tops is None:
            return None
        return self.int8_tops / 2 if self.int8_sparse else self.int8_tops

    @property
    def dense_fp16_tflops(self) -> float | None:
        if self.fp16_tflops is None:
            return None
        return self.fp16_tflops / 2 if self.fp16_sparse else self.fp16_tflops

    def matches(self, text: str) -> bool:
        return any(re.search(p, text, re.IGNORECASE) for p in self.match)


class Catalog(_Strict):
    """The whole catalog file."""

    schema_: Literal["edgetier.hardware.catalog/1"] = Field(alias="schema")
    devices: list[DeviceProfile]

    @model_validator(mode="after")
    def _unique(self) -> Catalog:
        ids = [d.id for d in self.devices]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids must be unique, repeated: {dupes}")
        return self

    def get(self, profile_id: str) -> DeviceProfile:
        for device in self.devices:
            if device.id == profile_id:
                return device
        known = ", ".join(d.id for d in self.devices)
        raise NotFoundError(f"hardware profile {profile_id!r} is not in the catalog ({known})")

    def match(self, text: str, kind: str | None = None) -> DeviceProfile | None:
        """The first profile whose patterns match ``text`` (an NVML name, a board model)."""
        for device in self.devices:
            if (kind is None or device.kind == kind) and device.matches(text):
                return device
        return None


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read and validate a catalog file (the packaged one by default); every error at once."""
    if path is None:
        return _packaged()
    return load_file(Path(path), Catalog, what="hardware catalog")


@cache
def _packaged() -> Catalog:
    text = resources.files("edgetier.hardware").joinpath("catalog.yaml").read_text("utf-8")
    return validate(
        Catalog, yaml.safe_load(text), source="edgetier/hardware/catalog.yaml", what="catalog"
    )


def get_profile(profile_id: str) -> DeviceProfile:
    """A profile of the packaged catalog by id (e.g. ``jetson-agx-orin-64gb``)."""
    return _packaged().get(profile_id)
