from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_nvml import FakeNvml

from edgetier.errors import ConfigError, UnsupportedError
from edgetier.hardware import HostPaths, PowerGovernor, PowerPermissionError


class FakeJetsonTools:
    """Stands for the nvpmodel and jetson_clocks executables."""

    def __init__(self, *, root: bool = True) -> None:
        self.mode = "2"
        self.root = root
        self.calls: list[list[str]] = []

    def which(self, name: str) -> str | None:
        return f"/usr/sbin/{name}" if name in ("nvpmodel", "jetson_clocks") else None

    def run(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[1:] == ["-q"]:
            return subprocess.CompletedProcess(
                cmd, 0, f"NV Power Mode: MODE_30W\n{self.mode}\n", ""
            )
        if not self.root:
            return subprocess.CompletedProcess(cmd, 1, "", "NVPM ERROR: Permission denied")
        if len(cmd) > 2 and cmd[1] == "-m":
            self.mode = cmd[2]
        return subprocess.CompletedProcess(cmd, 0, "", "")


def test_nvpmodel_and_jetson_clocks_are_recorded_and_restored(tmp_path: Path) -> None:
    tools = FakeJetsonTools()
    gov = PowerGovernor(record_path=tmp_path / "rec.json", run=tools.run, which=tools.which)
    change = gov.set_nvpmodel(1)
    assert (change.before, change.after, tools.mode) == ("2", "1", "1")
    gov.jetson_clocks()
    assert [c.mechanism for c in gov.load_record().changes] == ["nvpmodel", "jetson_clocks"]
    undone = gov.restore()
    assert [c.mechanism for c in undone] == ["jetson_clocks", "nvpmodel"]
    assert tools.mode == "2" and tools.calls[-2][1] == "--restore"
    assert not (tmp_path / "rec.json").exists()


def test_dry_run_changes_nothing_and_prints_exact_commands(tmp_path: Path) -> None:
    tools = FakeJetsonTools()
    gov = PowerGovernor(
        dry_run=True, record_path=tmp_path / "r.json", run=tools.run, which=tools.which
    )
    change = gov.set_nvpmodel(0)
    assert change.command == "/usr/sbin/nvpmodel -m 0" and not change.applied
    assert tools.mode == "2" and not (tmp_path / "r.json").exists()


def test_permission_errors_are_plain(tmp_path: Path) -> None:
    tools = FakeJetsonTools(root=False)
    gov = PowerGovernor(record_path=tmp_path / "r.json", run=tools.run, which=tools.which)
    with pytest.raises(PowerPermissionError, match=r"needs root: run `sudo .*nvpmodel -m 1`"):
        gov.set_nvpmodel(1)
    nv = PowerGovernor(record_path=tmp_path / "n.json", nvml=FakeNvml("t4.json", allow_set=False))
    with pytest.raises(PowerPermissionError, match="sudo nvidia-smi -i 0 -pl 65"):
        nv.set_gpu_power_limit(0, 65)
    with pytest.raises(UnsupportedError, match="not a Jetson"):
        PowerGovernor(record_path=tmp_path / "x.json", which=lambda _: None).set_nvpmodel(0)


def test_gpu_power_limit_checked_set_and_restored(tmp_path: Path) -> None:
    fake = FakeNvml("a100-mig.json")
    gov = PowerGovernor(record_path=tmp_path / "r.json", nvml=fake)
    with pytest.raises(ConfigError, match=r"within 100\.\.400 W, got 50"):
        gov.set_gpu_power_limit(0, 50)
    change = gov.set_gpu_power_limit(0, 250)
    assert (change.before, change.after) == ("400", "250")
    assert fake.device(0)["power_management_limit_mw"] == 250_000
    gov.restore()
    assert fake.device(0)["power_management_limit_mw"] == 400_000


def test_cpufreq_governor_on_a_fake_sysfs(tmp_path: Path) -> None:
    for cpu in ("cpu0", "cpu1"):
        d = tmp_path / "sys/devices/system/cpu" / cpu / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text("schedutil\n")
        (d / "scaling_available_governors").write_text("performance powersave schedutil\n")
    paths = HostPaths.under(tmp_path)
    gov = PowerGovernor(record_path=tmp_path / "r.json", paths=paths)
    with pytest.raises(ConfigError, match="'turbo'"):
        gov.set_cpufreq_governor("turbo")
    gov.set_cpufreq_governor("performance")
    f = tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    assert f.read_text() == "performance"
    gov.restore()
    assert f.read_text() == "schedutil"
    with pytest.raises(UnsupportedError, match="no cpufreq"):
        PowerGovernor(
            record_path=tmp_path / "r.json", paths=HostPaths.under(tmp_path / "none")
        ).set_cpufreq_governor("performance")
