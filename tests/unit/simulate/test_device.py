"""The simulated nodes' hardware model, profile draw, link plans and settings."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from edgetier.config import ConfigModel
from edgetier.errors import ConfigError
from edgetier.hardware import get_profile
from edgetier.simulate import (
    DEFAULT_MIX,
    THERMAL_LIMIT_C,
    SimDevice,
    SimulationSettings,
    draw_profiles,
)
from edgetier.simulate._device import CLOUD_PROFILES
from edgetier.simulate._node import LinkPlan


def test_tiers_come_in_the_mix_proportions_and_profiles_match_their_tier() -> None:
    drawn = draw_profiles(DEFAULT_MIX, 1000, random.Random(3))
    tiers = Counter(tier for tier, _ in drawn)
    assert tiers == {"terminal": 400, "edge": 400, "region": 150, "cloud": 50}
    for tier, device in drawn:
        if tier == "cloud":
            assert device.id in CLOUD_PROFILES
        else:
            assert device.tier == tier
    # several profiles per tier, not one
    assert len({d.id for t, d in drawn if t == "edge"}) > 3


def test_a_small_fleet_still_gets_its_largest_shares_and_the_draw_is_seeded() -> None:
    drawn = draw_profiles({"edge": 1, "cloud": 1}, 3, random.Random(1))
    assert sorted(Counter(t for t, _ in drawn).values()) == [1, 2]
    again = draw_profiles({"edge": 1, "cloud": 1}, 3, random.Random(1))
    assert [d.id for _, d in drawn] == [d.id for _, d in again]


def _run(device: SimDevice, start_s: float, end_s: float, load: float, step_s: float = 1.0) -> None:
    t = start_s
    while t <= end_s:
        device.sample(t, load)
        t += step_s


def test_a_healthy_node_at_full_load_stays_under_its_limit() -> None:
    device = SimDevice(get_profile("jetson-xavier-nx"), rng=random.Random(0), thermal_tau_s=5)
    _run(device, 0, 100, load=1.0)
    assert device.temperature_c < THERMAL_LIMIT_C
    assert not device.throttled
    [condition] = device.conditions()
    assert (condition.type, condition.status) == ("Throttled", "False")


def test_a_failed_fan_throttles_the_node_until_it_is_fixed_and_cooled() -> None:
    device = SimDevice(
        get_profile("jetson-xavier-nx"),
        rng=random.Random(0),
        overheat_at_s=10,
        overheat_for_s=40,
        thermal_tau_s=5,
    )
    _run(device, 0, 9, load=0.1)
    assert not device.throttled
    _run(device, 10, 45, load=0.1)  # the fan fails at 10 s: idle or not, it overheats
    assert device.throttled and device.temperature_c >= THERMAL_LIMIT_C
    [condition] = device.conditions()
    assert (condition.type, condition.status, condition.reason) == (
        "Throttled",
        "True",
        "ThermalLimit",
    )
    assert "jetson-xavier-nx" in condition.message
    _run(device, 50, 100, load=0.1)  # fixed at 50 s
    assert not device.throttled and device.temperature_c < THERMAL_LIMIT_C - 5


def test_telemetry_is_marked_simulated_and_power_follows_the_catalog() -> None:
    profile = get_profile("t4")
    device = SimDevice(profile, rng=random.Random(0))
    idle = device.sample(0.0, 0.0)
    busy = device.sample(1.0, 1.0)
    assert idle.simulated and busy.simulated
    assert idle.power_w is not None and busy.power_w is not None
    assert idle.power_w < busy.power_w <= profile.tdp_w
    assert 0.0 <= idle.utilisation <= busy.utilisation <= 1.0  # type: ignore[operator]


def test_link_plans() -> None:
    plan = LinkPlan(((10.0, 20.0), (30.0, 35.0)))
    assert plan.up(5) and not plan.up(10) and plan.up(20) and not plan.up(34.9)
    assert plan.next_change_s(12) == 20.0
    assert plan.next_change_s(36) is None
    assert LinkPlan().up(1e9)


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("mix", {"edge": 1, "moon": 1}, "unknown tier(s) ['moon']"),
        ("mix", {"edge": 0}, "not all 0"),
        ("link_down_s", (30, 10), "0 < min <= max"),
        ("nodes", 0, "nodes"),
        ("prefix", "Sim_", "prefix"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object, said: str) -> None:
    with pytest.raises((ConfigError, ValueError)) as caught:
        SimulationSettings(controllers=["http://x"], operator_token="t", **{field: value})
    assert said in str(caught.value)
    assert field in str(caught.value)
    assert issubclass(SimulationSettings, ConfigModel)


def test_the_plan_gives_each_fault_to_its_share_of_nodes_from_the_seed() -> None:
    import asyncio

    from edgetier.simulate import FleetSimulation
    from edgetier.simulate._node import Wire

    settings = SimulationSettings(
        controllers=["http://127.0.0.1:9"],
        operator_token="t",
        nodes=100,
        duration_s=600,
        overheating=0.10,
        dropped_links=0.05,
        flapping=0.02,
        flap_s=20,
    )

    def plan() -> list[tuple[str, bool, int]]:
        wire = Wire(settings.controllers, settings.nodes, wait_s=1)
        nodes = FleetSimulation(settings)._plan(wire)
        asyncio.run(wire.aclose())
        return [(n.name, n.device.overheat_at_s is not None, len(n.link.outages)) for n in nodes]

    first = plan()
    assert first == plan()  # the seed decides
    assert sum(hot for _, hot, _ in first) == 10
    assert sum(outages == 1 for _, _, outages in first) == 5
    flapping = [outages for _, _, outages in first if outages > 1]
    assert len(flapping) == 2 and min(flapping) >= 5  # down 20 s, up 20 s, for most of 600 s
    # no node has two faults, every name is unique and says its tier
    assert all(not (hot and outages) for _, hot, outages in first)
    assert len({name for name, _, _ in first}) == 100
    assert all(
        name.split("-")[1] in ("terminal", "edge", "region", "cloud") for name, _, _ in first
    )
