from __future__ import annotations

from fake_nvml import FakeNvml

from edgetier.hardware import fingerprint, probe


def test_jetson_boards_are_detected_and_matched(tree) -> None:
    expected = {
        "jetson-nano": ("jetson-nano", "32.7.1", ["MAXN", "5W"], "neon", 4),
        "jetson-xavier-nx": ("jetson-xavier-nx", "32.7.3", None, "neon", 6),
        "jetson-agx-orin": (
            "jetson-agx-orin-64gb",
            "35.4.1",
            ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"],
            "neon",
            12,
        ),
    }
    for name, (profile, release, modes, simd, cores) in expected.items():
        m = probe(tree(name), nvml=FakeNvml({"driver_version": "", "devices": []}))
        assert m.profile_id == profile
        assert m.jetson is not None and m.jetson.l4t_release == release
        if modes:
            assert [x.name for x in m.jetson.modes] == modes
        assert m.cpu.simd == simd and m.cpu.logical_cores == cores
    assert probe(tree("jetson-agx-orin")).cpu.vnni  # asimddp: Arm int8 dot product


def test_nvml_gpus_and_mig_instances(tree) -> None:
    m = probe(tree("x86-rapl"), nvml=FakeNvml("a100-mig.json"))
    assert m.profile_id == "a100-sxm4-80gb"
    gpu = m.gpus[0]
    assert (
        gpu.mig_enabled
        and [i.name for i in gpu.mig_instances] == ["NVIDIA A100-SXM4-80GB MIG 3g.40gb"] * 2
    )
    assert gpu.power_limit_max_w == 400.0 and gpu.compute_capability == "8.0"
    t4 = probe(tree("x86-rapl"), nvml=FakeNvml("t4.json"))
    assert t4.profile_id == "t4" and not t4.gpus[0].mig_enabled


def test_cpu_flags_rapl_and_fallback_notes(tree, empty_host) -> None:
    m = probe(tree("x86-rapl"), nvml=FakeNvml({"driver_version": "", "devices": []}))
    assert m.profile_id == "cpu-x86-avx512"
    assert m.cpu.physical_cores == 2 and m.cpu.logical_cores == 4 and m.cpu.vnni
    assert m.cpu.peak_fp32_gflops == 2 * 3.2 * 64
    assert m.rapl_zones == ["package-0"]
    bare = probe(empty_host)
    assert any("NVML" in n or "nvidia-ml-py" in n for n in bare.notes)
    assert any("RAPL" in n for n in bare.notes) and bare.jetson is None


def test_fingerprint_has_the_bench_keys_and_is_stable(tree) -> None:
    m = probe(tree("x86-rapl"), nvml=FakeNvml("t4.json"))
    fp = fingerprint(m)
    assert set(fp) == {"id", "cpu", "cores", "memory_bytes", "gpus", "profile"}
    assert fp["gpus"] == ["Tesla T4"] and fp["profile"] == "t4"
    assert fingerprint(m)["id"] == fp["id"]
    other = fingerprint(probe(tree("x86-rapl"), nvml=FakeNvml("a100-mig.json")))
    assert other["id"] != fp["id"]
    assert set(fingerprint()) == set(fp)  # the live host
