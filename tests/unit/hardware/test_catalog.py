from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgetier.errors import ConfigError, NotFoundError
from edgetier.hardware import get_profile, load_catalog

ISSUE_DEVICES = {
    "jetson-nano",
    "jetson-tx2",
    "jetson-xavier-nx",
    "jetson-agx-xavier",
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "jetson-agx-orin-64gb",
    "t4",
    "a2",
    "l4",
    "a10",
    "a30",
    "a100-sxm4-80gb",
    "h100-sxm5-80gb",
    "cpu-x86",
    "cpu-arm64",
}


def test_catalog_holds_every_device_of_the_issue_with_sources() -> None:
    catalog = load_catalog()
    assert {d.id for d in catalog.devices} >= ISSUE_DEVICES
    for device in catalog.devices:
        assert device.sources and all(s.strip() for s in device.sources)


def test_every_jetson_lists_its_nvpmodel_modes() -> None:
    for device in load_catalog().devices:
        if device.kind == "jetson":
            assert device.power_modes, device.id
            capped = [m.power_w for m in device.power_modes if m.power_w is not None]
            assert capped and max(capped) <= (device.tdp_w or 0), device.id


def test_sparse_headline_figures_are_halved_for_dense_models() -> None:
    orin = get_profile("jetson-agx-orin-64gb")
    assert orin.int8_sparse and orin.dense_int8_tops == orin.int8_tops / 2
    t4 = get_profile("t4")
    assert t4.dense_int8_tops == t4.int8_tops


def test_unknown_field_is_rejected_with_its_path(tmp_path: Path) -> None:
    data = yaml.safe_load(
        Path(load_catalog.__code__.co_filename).with_name("catalog.yaml").read_text()
    )
    data["devices"][0]["tops"] = 1
    bad = tmp_path / "catalog.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"catalog.yaml: devices\[0\]\.tops: unknown field"):
        load_catalog(bad)


def test_duplicate_ids_and_unknown_profile(tmp_path: Path) -> None:
    data = yaml.safe_load(
        Path(load_catalog.__code__.co_filename).with_name("catalog.yaml").read_text()
    )
    data["devices"].append(data["devices"][0])
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="jetson-nano"):
        load_catalog(bad)
    with pytest.raises(NotFoundError, match="no-such"):
        get_profile("no-such")
