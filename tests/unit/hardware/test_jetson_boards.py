"""Jetson boards as their sysfs trees and tegrastats lines show them: board power on every
module (AGX Xavier has no input rail), energy on Orin with JetPack 6 (NVML present but
without power), and temperatures without the PMIC die sensor's constant 100 °C."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import FIXTURES, FakeNvml
from typer.testing import CliRunner

from edgetier.cli import app
from edgetier.hardware import (
    EnergyUnavailableError,
    TelemetrySampler,
    governing_temperature_c,
    open_energy_meter,
    probe,
    sample_from_tegrastats,
)
from edgetier.hardware._energy import SampledPowerMeter
from edgetier.hardware._jetson import parse_tegrastats, read_rails_mw, total_power_mw
from edgetier.hardware._zones import read_thermal_zones

NO_GPU: dict[str, Any] = {"driver_version": "", "devices": []}


def _lines(board: str) -> list[str]:
    return (FIXTURES / board / "tegrastats.txt").read_text().splitlines()


# -- 6: AGX Xavier board power ----------------------------------------------------------------


def test_agx_xavier_board_power_is_the_sum_of_its_six_rails(tree) -> None:
    paths = tree("jetson-agx-xavier")
    rails = read_rails_mw(paths)  # two INA3221 chips, 1-0040 and 1-0041
    assert rails == {"GPU": 0, "CPU": 311, "SOC": 1087, "CV": 0, "VDDRQ": 155, "SYS5V": 1613}
    assert total_power_mw(rails) == 3166
    sample = TelemetrySampler(paths, nvml=FakeNvml(NO_GPU)).sample()
    assert sample.board_power_w == 3.166 and sample.power_w == 3.166
    machine = probe(paths, nvml=FakeNvml(NO_GPU))
    assert machine.profile_id == "jetson-agx-xavier" and machine.jetson is not None
    assert [m.name for m in machine.jetson.modes][:2] == ["MAXN", "MODE_10W"]


def test_agx_xavier_tegrastats_board_power() -> None:
    idle, busy = (parse_tegrastats(x) for x in _lines("jetson-agx-xavier"))
    assert idle.rails_mw["SYS5V"] == 1613 and idle.power_w == 3.166
    assert busy.power_w == (12913 + 2632 + 3108 + 0 + 1785 + 3378) / 1000
    assert busy.gpu_load_pct == 99 and busy.gpu_freq_mhz == 1377


def test_a_board_missing_one_of_its_rails_has_no_total(tree) -> None:
    paths = tree("jetson-agx-xavier")
    shutil.rmtree(paths.sys_root / "bus/i2c/drivers/ina3221x/1-0041")  # one chip unreadable
    assert total_power_mw(read_rails_mw(paths)) is None  # unknown, not a silently low total


def test_agx_orin_reads_both_ina3221_chips(tree) -> None:
    rails = read_rails_mw(tree("jetson-agx-orin"))
    assert rails["VDDQ_VDD2_1V8AO"] == 4968 * 61 / 1000
    assert "NC" not in rails and not any(k.startswith("sum of") for k in rails)
    # module power: GPU_SOC + CPU_CV + SYS_5V0, as from the L4T 35 tegrastats line
    assert total_power_mw(rails) == pytest.approx((19056 * 82 + 19056 * 20 + 4968 * 595) / 1000)


def test_jetpack6_tegrastats_lines() -> None:
    idle, busy = (parse_tegrastats(x) for x in _lines("jetson-orin-nano-jp6"))
    assert idle.power_w == 4.761 and busy.power_w == 12.479
    assert busy.gpu_load_pct == 63 and busy.gpu_freq_mhz == 621
    assert idle.temperatures_c["tj"] == 49.156 and set(busy.rails_mw) == {
        "VDD_IN",
        "VDD_CPU_GPU_CV",
        "VDD_SOC",
    }
    assert (busy.ram_used_mb, busy.ram_total_mb) == (6185, 7620) and len(busy.cpu_load_pct) == 6


# -- 4: energy on Orin with JetPack 6 -----------------------------------------------------------


def test_orin_jetpack6_energy_comes_from_the_ina3221_rails(tree) -> None:
    # NVML initialises and counts the integrated GPU but answers NotSupported for power/energy
    meter = open_energy_meter(paths=tree("jetson-agx-orin"), nvml=FakeNvml("jetson-orin-jp6.json"))
    try:
        assert meter.source == "jetson-ina3221" and not meter.estimated
    finally:
        meter.close()


def test_a_gpu_without_power_readings_is_not_measured_as_zero(tree) -> None:
    meter = open_energy_meter(
        "gpu:0", paths=tree("jetson-agx-orin"), nvml=FakeNvml("jetson-orin-jp6.json")
    )
    try:
        assert meter.estimated and meter.source.startswith("estimate:")
    finally:
        meter.close()


def test_a_meter_that_gets_no_samples_says_so() -> None:
    meter = SampledPowerMeter("nvml", lambda: None, interval_s=60)
    meter.start()
    with pytest.raises(EnergyUnavailableError, match="nvml: no power reading"):
        meter.stop()


def test_a_meter_survives_a_failing_read_and_counts_it() -> None:
    readings: list[float | None] = [10.0, None, 10.0]
    clock = iter([0.0, 2.0])
    meter = SampledPowerMeter(
        "rails", lambda: readings.pop(0), interval_s=60, clock=lambda: next(clock)
    )
    meter.start()
    meter._sample()  # a failed read in the middle
    assert meter.stop() == 20.0 and meter.failed_reads == 1


# -- 5: the PMIC die sensor ------------------------------------------------------------------------


@pytest.mark.parametrize("board", ["jetson-nano", "jetson-xavier-nx", "jetson-agx-xavier"])
def test_pmic_die_is_shown_but_never_governs(tree, board: str) -> None:
    paths = tree(board)
    temps = read_thermal_zones(paths)
    assert temps["PMIC-Die"] == 100.0  # still reported as the kernel gives it
    hottest = governing_temperature_c(temps)
    assert hottest is not None and hottest < 45.0
    assert TelemetrySampler(paths, nvml=FakeNvml(NO_GPU)).sample().max_temperature_c == hottest
    assert governing_temperature_c(temps, "PMIC-Die") == 100.0  # unless asked for by name
    assert sample_from_tegrastats(_lines(board)[0]).max_temperature_c == governing_temperature_c(
        parse_tegrastats(_lines(board)[0]).temperatures_c
    )


def test_live_governor_on_a_cool_nano_stays_at_full(tree, monkeypatch) -> None:
    import edgetier.hardware as hw

    paths = tree("jetson-nano")
    monkeypatch.setattr(
        hw, "TelemetrySampler", lambda: TelemetrySampler(paths, nvml=FakeNvml(NO_GPU))
    )
    args = ["hw", "govern", "--count", "3", "--interval-s", "0.01", "--min-dwell-s", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ""  # no step_down: PMIC-Die's 100 C is not a reading
    assert json.loads(result.stderr.strip())["level"] == "full"


def test_fixture_readme_lists_every_board() -> None:
    readme = (FIXTURES / "README.md").read_text()
    for board in sorted(p.name for p in Path(FIXTURES).iterdir() if p.is_dir()):
        assert f"`{board}/`" in readme or f"`{board}`" in readme, board
