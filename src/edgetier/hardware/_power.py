"""The power governor: one interface over nvpmodel and jetson_clocks (Jetson), NVML power
limits and application clocks (data-centre GPUs) and the cpufreq governor (CPUs).

    from edgetier.hardware import PowerGovernor
    gov = PowerGovernor(dry_run=True)
    print(gov.set_gpu_power_limit(0, 150.0).command)   # what would run; nothing changes

Every change is appended to a JSON record (``PowerRecord``) before it is made, so that
``restore()`` can put back what was there, newest first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgetier.errors import ConfigError, UnsupportedError
from edgetier.hardware._nvml import open_nvml
from edgetier.hardware._paths import HostPaths, read_text

__all__ = ["PowerChange", "PowerGovernor", "PowerPermissionError", "PowerRecord"]

Mechanism = Literal["nvpmodel", "jetson_clocks", "nvml_power_limit", "nvml_app_clocks", "cpufreq"]
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class PowerPermissionError(UnsupportedError, PermissionError):
    """Raised when a power setting needs privileges this process does not have."""


class PowerChange(BaseModel):
    """One change: what it touched, the value before and after, the exact command or call."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Mechanism
    target: str
    before: str | None
    after: str
    command: str
    applied: bool


class PowerRecord(BaseModel):
    """The file ``restore`` reads."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["edgetier.hardware.power/1"] = Field(
        "edgetier.hardware.power/1", alias="schema"
    )
    changes: list[PowerChange] = Field(default_factory=list)


def default_record_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgetier" / "power-record.json"


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=60)


class PowerGovernor:
    """Applies power settings (or, with ``dry_run``, only says what it would do)."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        record_path: Path | None = None,
        paths: HostPaths | None = None,
        nvml: Any | None = None,
        run: Runner = _run,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.dry_run = dry_run
        self.record_path = record_path or default_record_path()
        self.paths = paths or HostPaths()
        self._nvml_arg = nvml
        self._run = run
        self._which = which

    # -- record -------------------------------------------------------------------------
    def load_record(self) -> PowerRecord:
        if not self.record_path.is_file():
            return PowerRecord.model_validate({})
        return PowerRecord.model_validate_json(self.record_path.read_text(encoding="utf-8"))

    def _remember(self, change: PowerChange) -> PowerChange:
        if change.applied:
            record = self.load_record()
            record.changes.append(change)
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            self.record_path.write_text(record.model_dump_json(by_alias=True, indent=2), "utf-8")
        return change

    # -- Jetson -------------------------------------------------------------------------
    def _tool(self, name: str) -> str:
        path = self._which(name)
        if path is None:
            raise UnsupportedError(f"{name} not found: this is not a Jetson (L4T) system")
        return path

    def _exec(self, cmd: list[str], what: str) -> None:
        result = self._run(cmd)
        if result.returncode != 0:
            err = (result.stderr or result.stdout or "").strip()
            if "ermission" in err or "root" in err or result.returncode in (126, 13):
                raise PowerPermissionError(f"{what} needs root: run `sudo {' '.join(cmd)}` ({err})")
            raise UnsupportedError(f"{what} failed (exit {result.returncode}): {err}")

    def current_nvpmodel(self) -> str | None:
        """The active mode id from ``nvpmodel -q`` (last line is the id)."""
        result = self._run([self._tool("nvpmodel"), "-q"])
        lines = [x.strip() for x in (result.stdout or "").splitlines() if x.strip()]
        return lines[-1] if lines and lines[-1].isdigit() else None

    def set_nvpmodel(self, mode_id: int) -> PowerChange:
        tool = self._tool("nvpmodel")
        before = self.current_nvpmodel()
        cmd = [tool, "-m", str(mode_id)]
        if not self.dry_run:
            self._exec(cmd, "nvpmodel")
        return self._remember(
            PowerChange(
                mechanism="nvpmodel",
                target="soc",
                before=before,
                after=str(mode_id),
                command=" ".join(cmd),
                applied=not self.dry_run,
            )
        )

    def jetson_clocks(self, *, store_file: Path | None = None) -> PowerChange:
        """Lock clocks at their maximum; the current settings are stored for restore."""
        tool = self._tool("jetson_clocks")
        store = store_file or self.record_path.with_name("jetson_clocks.store")
        cmds = [[tool, "--store", str(store)], [tool]]
        if not self.dry_run:
            store.parent.mkdir(parents=True, exist_ok=True)
            for cmd in cmds:
                self._exec(cmd, "jetson_clocks")
        return self._remember(
            PowerChange(
                mechanism="jetson_clocks",
                target="soc",
                before=str(store),
                after="max",
                command=" && ".join(" ".join(c) for c in cmds),
                applied=not self.dry_run,
            )
        )

    # -- NVML ---------------------------------------------------------------------------
    def _nvml(self) -> Any:
        handle = open_nvml(self._nvml_arg)
        if handle.module is None:
            raise UnsupportedError(handle.reason)
        return handle.module

    def set_gpu_power_limit(self, index: int, power_w: float) -> PowerChange:
        nvml = self._nvml()
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        low_mw, high_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
        if not low_mw <= power_w * 1000 <= high_mw:
            raise ConfigError(
                f"power_w for GPU {index} must be within {low_mw / 1000:g}..{high_mw / 1000:g} W,"
                f" got {power_w:g}"
            )
        # the configured limit, the one `restore` must write back: the enforced limit is the
        # lowest of every cap in force (board, thermal) and may sit below it
        before_w = nvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
        call = f"nvmlDeviceSetPowerManagementLimit(gpu {index}, {int(power_w * 1000)} mW)"
        if not self.dry_run:
            try:
                nvml.nvmlDeviceSetPowerManagementLimit(h, int(power_w * 1000))
            except Exception as exc:
                if "ermission" in str(exc):
                    raise PowerPermissionError(
                        f"setting GPU {index}'s power limit needs root: run as root or "
                        f"`sudo nvidia-smi -i {index} -pl {power_w:g}` ({exc})"
                    ) from exc
                raise UnsupportedError(f"GPU {index}: power limit not settable: {exc}") from exc
        return self._remember(
            PowerChange(
                mechanism="nvml_power_limit",
                target=f"gpu:{index}",
                before=f"{before_w:g}",
                after=f"{power_w:g}",
                command=call,
                applied=not self.dry_run,
            )
        )

    def set_gpu_app_clocks(self, index: int, memory_mhz: int, graphics_mhz: int) -> PowerChange:
        nvml = self._nvml()
        h = nvml.nvmlDeviceGetHandleByIndex(index)
        call = f"nvmlDeviceSetApplicationsClocks(gpu {index}, {memory_mhz}, {graphics_mhz})"
        if not self.dry_run:
            try:
                nvml.nvmlDeviceSetApplicationsClocks(h, memory_mhz, graphics_mhz)
            except Exception as exc:
                kind = PowerPermissionError if "ermission" in str(exc) else UnsupportedError
                raise kind(f"GPU {index}: application clocks not set: {exc}") from exc
        return self._remember(
            PowerChange(
                mechanism="nvml_app_clocks",
                target=f"gpu:{index}",
                before="default",
                after=f"{memory_mhz},{graphics_mhz}",
                command=call,
                applied=not self.dry_run,
            )
        )

    # -- cpufreq ------------------------------------------------------------------------
    def set_cpufreq_governor(self, governor: str) -> PowerChange:
        cpus = sorted((self.paths.sys_root / "devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
        if not cpus:
            raise UnsupportedError(
                "no cpufreq in sysfs: the kernel or hypervisor manages CPU clocks"
            )
        available = (read_text(cpus[0] / "scaling_available_governors") or "").split()
        if available and governor not in available:
            raise ConfigError(f"cpufreq governor must be one of {available}, got {governor!r}")
        before = read_text(cpus[0] / "scaling_governor")
        files = [c / "scaling_governor" for c in cpus]
        if not self.dry_run:
            for f in files:
                try:
                    f.write_text(governor)
                except PermissionError as exc:
                    raise PowerPermissionError(
                        f"writing {f} needs root: run as root or `sudo cpupower frequency-set "
                        f"-g {governor}`"
                    ) from exc
        return self._remember(
            PowerChange(
                mechanism="cpufreq",
                target=f"{len(files)} cpus",
                before=before,
                after=governor,
                command=f"echo {governor} > .../cpu*/cpufreq/scaling_governor",
                applied=not self.dry_run,
            )
        )

    # -- restore ------------------------------------------------------------------------
    def restore(self) -> list[PowerChange]:
        """Undo every recorded change, newest first; the record is removed afterwards."""
        record = self.load_record()
        undone: list[PowerChange] = []
        for change in reversed(record.changes):
            before = change.before
            if before is None:
                continue
            if change.mechanism == "nvpmodel":
                cmd = [self._tool("nvpmodel"), "-m", before]
                if not self.dry_run:
                    self._exec(cmd, "nvpmodel")
                text = " ".join(cmd)
            elif change.mechanism == "jetson_clocks":
                cmd = [self._tool("jetson_clocks"), "--restore", before]
                if not self.dry_run:
                    self._exec(cmd, "jetson_clocks")
                text = " ".join(cmd)
            elif change.mechanism == "nvml_power_limit":
                text = f"nvmlDeviceSetPowerManagementLimit({change.target}, {before} W)"
                if not self.dry_run:
                    nvml = self._nvml()
                    h = nvml.nvmlDeviceGetHandleByIndex(int(change.target.split(":")[1]))
                    nvml.nvmlDeviceSetPowerManagementLimit(h, int(float(before) * 1000))
            elif change.mechanism == "nvml_app_clocks":
                text = f"nvmlDeviceResetApplicationsClocks({change.target})"
                if not self.dry_run:
                    nvml = self._nvml()
                    h = nvml.nvmlDeviceGetHandleByIndex(int(change.target.split(":")[1]))
                    nvml.nvmlDeviceResetApplicationsClocks(h)
            else:
                text = f"echo {before} > .../cpu*/cpufreq/scaling_governor"
                if not self.dry_run:
                    for f in (self.paths.sys_root / "devices/system/cpu").glob(
                        "cpu[0-9]*/cpufreq/scaling_governor"
                    ):
                        f.write_text(before)
            undone.append(
                change.model_copy(
                    update={
                        "before": change.after,
                        "after": before,
                        "command": text,
                        "applied": not self.dry_run,
                    }
                )
            )
        if not self.dry_run and self.record_path.exists():
            self.record_path.unlink()
        return undone
