"""NVML as it fails on real machines: old drivers, NotSupported queries, lost GPUs, MIG."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest
from fake_nvml import FakeNvml

from edgetier.errors import ConfigError
from edgetier.hardware import PowerGovernor, open_energy_meter, probe
from edgetier.hardware._nvml import open_nvml, read_gpus


def test_fake_raises_the_real_pynvml_errors() -> None:
    fake = FakeNvml("jetson-orin-jp6.json")
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        fake.nvmlDeviceGetCount()
    fake.nvmlInit()
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetPowerUsage(h)
    old = FakeNvml("t4-driver-470.json")
    old.nvmlInit()
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        old.nvmlDeviceGetCurrentClocksEventReasons(old.nvmlDeviceGetHandleByIndex(0))
    assert open_nvml(FakeNvml({"init_error": "DRIVER_NOT_LOADED", "devices": []})).module is None


def test_throttle_reasons_fall_back_to_the_older_symbol_on_old_drivers() -> None:
    old = open_nvml(FakeNvml("t4-driver-470.json")).module
    reading = read_gpus(old)[0]
    assert reading.throttle_reasons == ["sw_power_cap"]


def test_unknown_throttle_reasons_are_not_reported_as_none_active() -> None:
    jetson = open_nvml(FakeNvml("jetson-orin-jp6.json")).module
    assert read_gpus(jetson)[0].throttle_reasons is None  # NotSupported: unknown, not []


def test_one_not_supported_query_keeps_every_gpu(tree) -> None:
    # Orin on JetPack 6: NVML counts the integrated GPU but answers NotSupported for memory
    m = probe(tree("jetson-agx-orin"), nvml=FakeNvml("jetson-orin-jp6.json"))
    assert [g.name for g in m.gpus] == ["Orin (nvgpu)"]
    gpu = m.gpus[0]
    assert gpu.memory_total_bytes is None and gpu.compute_capability == "8.7"
    assert m.profile_id == "jetson-agx-orin-64gb"  # the board still decides the profile


def test_a_lost_gpu_is_noted_and_the_others_kept(tree) -> None:
    m = probe(tree("x86-rapl"), nvml=FakeNvml("two-t4-one-lost.json"))
    assert [g.index for g in m.gpus] == [1] and m.profile_id == "t4"
    assert any("GPU 0" in n and "GPU is lost" in n for n in m.notes)


def test_mig_parent_without_utilisation_still_reports_the_rest(tree) -> None:
    reading = read_gpus(open_nvml(FakeNvml("a100-mig.json")).module)[0]
    assert reading.utilization_pct is None and reading.memory_utilization_pct is None
    assert reading.power_w == 398.512 and reading.memory_used_bytes == 43305598976


def test_power_limit_restore_puts_back_the_configured_limit(tmp_path: Path) -> None:
    fake = FakeNvml("a100-mig.json")
    fake.device(0)["external_power_cap_mw"] = 300_000  # a board cap: enforced 300 W < 400 W
    gov = PowerGovernor(record_path=tmp_path / "r.json", nvml=fake)
    change = gov.set_gpu_power_limit(0, 250)
    assert (change.before, change.after) == ("400", "250")
    gov.restore()
    assert fake.device(0)["power_management_limit_mw"] == 400_000


def test_a_gpu_that_is_not_there_is_named(tree) -> None:
    with pytest.raises(ConfigError, match=r"device 'gpu:3': NVML sees 1 GPU\(s\)"):
        open_energy_meter("gpu:3", paths=tree("x86-rapl"), nvml=FakeNvml("t4.json"))
    with pytest.raises(ConfigError, match="got 'gpu:x'"):
        open_energy_meter("gpu:x")
