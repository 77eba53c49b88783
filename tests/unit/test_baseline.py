"""The host baseline: the facts read as a Spark would give them, the known-bad list with its waivers, and what
drift says when a fact changed. Versions here are the ones ../shared/PLATFORM.md's sources name."""

from __future__ import annotations

import datetime

import pytest

from sparkstack import baseline
from sparkstack.drift import DriftReport
from sparkstack.groups import GroupSettings
from sparkstack_host import baseline as host

# As /proc/driver/nvidia/version reads with the open and the proprietary kernel modules.
OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  595.84  Release Build  (dvs-builder@U22)  2026\n"
PROPRIETARY = "NVRM version: NVIDIA UNIX aarch64 Kernel Module  580.173.02  Release Build  (dvs-builder@U22)  2026\n"


def spark(**facts) -> dict:
    """A Spark's facts as the host module reports them, on a good baseline unless changed."""
    return {"os.id": "ubuntu", "os.version_id": "24.04", "kernel.release": "6.17.0-1031-nvidia", "kernel.flavour": "nvidia",
            "kernel.cmdline.kho": None, "memory.cma_total_kb": 2097152, "nvidia.driver": "580.173.02",
            "nvidia.flavour": "proprietary", **facts}


def test_the_driver_version_and_its_module_flavour_are_read_from_the_kernels_own_line():
    assert host.nvidia_driver(OPEN) == ("595.84", "open")
    assert host.nvidia_driver(PROPRIETARY) == ("580.173.02", "proprietary")
    assert host.nvidia_driver(None) == (None, None)
    assert host.kernel_flavour("6.17.0-1031-nvidia") == "nvidia" and host.kernel_flavour("7.0.0-31-generic") == "generic"
    assert host.cmdline_entries("BOOT_IMAGE=/vmlinuz ro quiet kho=off splash") == {"kho": "off"}


def test_a_host_without_a_gpu_says_so_and_a_fixture_fills_in_only_there():
    facts = host.collect()
    assert facts["nvidia.driver"] is None and "no GPU here" in facts["nvidia.why"]
    fixture = {"nvidia.driver": "580.173.02", "nvidia.flavour": "proprietary"}
    filled = baseline.with_fixture(facts, fixture)
    assert filled["nvidia.driver"] == "580.173.02" and filled["fixture"] == ["nvidia.driver", "nvidia.flavour"]
    assert baseline.with_fixture(spark(**{"nvidia.driver": "610.43.02"}), fixture)["nvidia.driver"] == "610.43.02"


@pytest.mark.parametrize("facts,entry", [
    (spark(**{"nvidia.driver": "590.48.01"}), "nvidia-590"),
    (spark(**{"nvidia.driver": "595.84", "nvidia.flavour": "open"}), "nvidia-595.84-open"),
    (spark(**{"kernel.release": "6.17.0-1008-nvidia"}), "kernel-6.17.0-1008-nvidia"),
    (spark(**{"kernel.release": "7.0.0-31-generic", "kernel.flavour": "generic"}), "kernel-7.0.0-31-without-kho-off"),
    (spark(**{"kernel.release": "7.0.0-1019-nvidia"}), "kernel-7.0.0-1019-nvidia"),
])
def test_a_known_bad_baseline_is_refused_with_its_symptom_and_source(facts, entry):
    refusals, waived = baseline.findings(facts, {})
    assert len(refusals) == 1 and refusals[0].startswith(f"known-bad {entry}:") and "reported:" in refusals[0]
    assert waived == []


@pytest.mark.parametrize("facts", [
    spark(),
    spark(**{"nvidia.driver": "595.84", "nvidia.flavour": "proprietary"}),  # the wedge is the open modules'
    spark(**{"kernel.release": "7.0.0-31-generic", "kernel.cmdline.kho": "off"}),  # mended with kho=off
    spark(**{"nvidia.driver": "610.43.02", "nvidia.flavour": "open"}),
])
def test_a_good_baseline_passes(facts):
    assert baseline.findings(facts, {}) == ([], [])


def test_a_waiver_lets_the_owner_deploy_until_its_date_and_then_refuses_again():
    settings = GroupSettings(baseline_waivers={"nvidia-590": {"until": "2027-01-31", "reason": "580 breaks our NIC"}})
    facts = spark(**{"nvidia.driver": "590.48.01"})
    refusals, waived = baseline.findings(facts, settings.baseline_waivers, today=datetime.date(2027, 1, 31))
    assert refusals == [] and "waived until 2027-01-31 by sparkstack_baseline_waivers: 580 breaks our NIC" in waived[0]
    refusals, waived = baseline.findings(facts, settings.baseline_waivers, today=datetime.date(2027, 2, 1))
    assert waived == [] and "its waiver expired on 2027-01-31" in refusals[0]


def test_a_changed_kernel_is_drift_of_its_own_kind():
    locked, now = spark(), spark(**{"kernel.release": "6.17.0-1008-nvidia"})
    changes = baseline.changes(locked, now)
    assert changes == ["kernel.release: '6.17.0-1031-nvidia' in the lock, '6.17.0-1008-nvidia' now"]
    report = DriftReport(1, operations=90, hosts=["spark-1"], platform=[f"spark-1: {c}" for c in changes])
    text = report.describe()
    assert text.startswith("drift: the platform changed since the lock (1 fact(s)") and "operation(s) would change" not in text
