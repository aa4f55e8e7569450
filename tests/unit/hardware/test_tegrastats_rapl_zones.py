from __future__ import annotations

from fake_nvml import FIXTURES

from edgetier.hardware import sample_from_tegrastats
from edgetier.hardware._jetson import parse_tegrastats, read_gpu_load, read_rails_mw
from edgetier.hardware._rapl import RaplCounter, counter_delta, find_rapl_zones
from edgetier.hardware._zones import read_thermal_zones


def _lines(board: str) -> list[str]:
    return (FIXTURES / board / "tegrastats.txt").read_text().splitlines()


def test_nano_tegrastats_line() -> None:
    idle, busy = (parse_tegrastats(x) for x in _lines("jetson-nano"))
    assert (idle.ram_used_mb, idle.ram_total_mb) == (2448, 3956)
    assert idle.cpu_load_pct == [12, 5, 9, 8] and idle.cpu_freq_mhz == [1479] * 4
    assert idle.gpu_load_pct == 0 and idle.gpu_freq_mhz == 921
    assert idle.rails_mw == {"POM_5V_IN": 2430, "POM_5V_GPU": 0, "POM_5V_CPU": 411}
    assert idle.power_w == 2.43 and idle.temperatures_c["AO"] == 40.5
    assert busy.cpu_load_pct[2:] == [None, None] and busy.gpu_load_pct == 99
    assert busy.rails_avg_mw["POM_5V_IN"] == 4882


def test_orin_tegrastats_mw_style_and_disabled_sensors() -> None:
    idle, busy = (parse_tegrastats(x) for x in _lines("jetson-agx-orin"))
    assert idle.rails_mw["VDD_GPU_SOC"] == 1575 and "NC" not in idle.rails_mw
    # AGX Orin has no input rail: module power is GPU_SOC + CPU_CV + SYS_5V0
    assert idle.power_w == (1575 + 394 + 2957) / 1000
    assert "GPU" not in idle.temperatures_c  # -256C: cluster powered off
    assert busy.gpu_freq_mhz == 1300 and len(busy.cpu_load_pct) == 12
    sample = sample_from_tegrastats(_lines("jetson-agx-orin")[1], time_s=5.0)
    assert sample.memory_used_bytes == 9877 * 2**20 and sample.max_temperature_c == 61.4


def test_xavier_nx_line_without_clocks() -> None:
    s = parse_tegrastats(_lines("jetson-xavier-nx")[0])
    assert s.gpu_load_pct == 0 and s.gpu_freq_mhz is None and s.power_w == 3.673


def test_sysfs_rails_gpu_load_and_zones(tree) -> None:
    nano, orin = tree("jetson-nano"), tree("jetson-agx-orin")
    assert read_rails_mw(nano)["POM_5V_IN"] == 2430
    rails = read_rails_mw(orin)
    assert rails["VDD_GPU_SOC"] == 19056 * 82 / 1000 and "sum of shunt voltages" not in rails
    assert read_gpu_load(nano) == (37.2, 921.6)
    zones = read_thermal_zones(orin)
    assert zones["tj-thermal"] == 45.312 and "gpu-thermal" not in zones


def test_rapl_wraparound(tree) -> None:
    assert counter_delta(100, 250, 1000) == 150
    assert counter_delta(900, 50, 1000) == 150
    paths = tree("x86-rapl")
    zones = find_rapl_zones(paths)
    counter = RaplCounter(zones)
    energy = zones[0].path / "energy_uj"
    energy.write_text("1000000\n")  # wrapped past max_energy_range_uj
    joules = counter.poll()
    assert joules == (262143328850 - 262143000000 + 1000000) / 1e6
    energy.write_text("3000000\n")
    assert counter.poll() == joules + 2.0
