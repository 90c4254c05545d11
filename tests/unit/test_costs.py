"""What a target occupies and what that costs (eks_inference/costs.py ``target_placement``), and the instance type a
machine that is not an EC2 instance is priced as (``closest_instance_type``).

GIVEN dev's two targets, WHEN placed, THEN each pod's share matches a count by hand from the instance table's
allocatable (EKS AL2023 nodeadm reservations) and the requests the serving chart renders.
"""

from __future__ import annotations

import pytest

from eks_inference.config import ConfigError, Processor, load_environment
from eks_inference.costs import (
    CostRole,
    HostCpu,
    closest_instance_type,
    format_fractions,
    parse_cpuinfo,
    parse_fractions,
    price_fractions,
    target_placement,
)
from eks_inference.tables.prices import DEFAULT_PRICES, PriceTable

# m7i.large: 2 vCPU → 2000 − (60 + 10) = 1930 m; 8 GiB → 8192 − (11 × 29 + 255) − 100 = 7518 MiB.
# c7g.2xlarge: 8 vCPU → 8000 − (60 + 10 + 10 + 10) = 7910 m; 16 GiB → 16384 − (11 × 58 + 255) − 100 = 15391 MiB.
M7I_LARGE = (1930, 7518)
C7G_2XLARGE = (7910, 15391)


def test_dev_inferentia_pays_for_its_head_on_the_system_nodes() -> None:
    """x86 system nodes hold the Inferentia head: its Ray container (1 vCPU, 3 GiB) and autoscaler sidecar
    (0.2 vCPU, 512 MiB) are priced at their CPU share of an m7i.large (CPU is the scarcer there), on top of the
    whole inf2.xlarge its one whole-node replica holds."""
    dev = load_environment("dev")
    pl = target_placement(dev, dev.models[0], Processor.INFERENTIA)
    by_role = {p.role: p for p in pl.pods}
    head, sidecar, worker = by_role[CostRole.HEAD], by_role[CostRole.SIDECARS], by_role[CostRole.WORKERS]
    assert (head.node_group, head.instance_type, head.basis) == ("system", "m7i.large", "cpu")
    assert head.share == pytest.approx(1000 / M7I_LARGE[0])  # 0.518 > 3072 / 7518 = 0.409 (memory)
    assert sidecar.share == pytest.approx(200 / M7I_LARGE[0]) and sidecar.basis == "cpu"
    assert (worker.instance_type, worker.count, worker.share, worker.basis) == ("inf2.xlarge", 1, 1.0, "whole node")
    total, split, missing = price_fractions(pl.fractions(), DEFAULT_PRICES, dev.region)
    assert missing == []
    assert split["workers"] == pytest.approx(0.7582)
    assert split["head"] == pytest.approx(0.1008 * 1000 / 1930)  # $0.0522/h
    assert split["sidecars"] == pytest.approx(0.1008 * 200 / 1930)
    assert total == pytest.approx(0.7582 + 0.1008 * 1200 / 1930)  # 8.3 % more than the bare node


def test_dev_graviton_head_takes_room_in_the_node_it_already_pays_for() -> None:
    """The arm64 head cannot run on the x86 system nodes: it lands beside the whole-node replica on the c7g node
    (3 + 1.2 vCPU, 8 + 3.5 GiB fit 7.91 vCPU, 15.0 GiB), so the target pays for that one node, split by share
    (memory is the scarcer there)."""
    dev = load_environment("dev")
    pl = target_placement(dev, dev.models[0], Processor.GRAVITON)
    by_role = {p.role: p for p in pl.pods}
    head, sidecar, worker = by_role[CostRole.HEAD], by_role[CostRole.SIDECARS], by_role[CostRole.WORKERS]
    assert head.instance_type == sidecar.instance_type == worker.instance_type == "c7g.2xlarge"
    assert head.share == pytest.approx(3072 / C7G_2XLARGE[1]) and head.basis.endswith("(memory)")
    assert sidecar.share == pytest.approx(512 / C7G_2XLARGE[1])
    assert worker.share == pytest.approx(1 - (3072 + 512) / C7G_2XLARGE[1])
    total, split, _ = price_fractions(pl.fractions(), DEFAULT_PRICES, dev.region)
    assert total == pytest.approx(0.29)  # one c7g.2xlarge, whole
    assert split["head"] == pytest.approx(0.29 * 3072 / C7G_2XLARGE[1])
    assert pl.to_arg() == ("workers=c7g.2xlarge:0.767137,head=c7g.2xlarge:0.199597,"
                           "sidecars=c7g.2xlarge:0.033266")


def test_placement_text_round_trips_and_bad_entries_are_named_one_per_line() -> None:
    text = "workers=inf2.xlarge:1,head=m7i.large:0.518135,sidecars=m7i.large:0.103627"
    assert format_fractions(parse_fractions(text)) == text
    with pytest.raises(ConfigError) as e:
        parse_fractions("workers=inf2.xlarge:1,lunch=m7i.large:0.5,head=m7i.large:-1")
    lines = str(e.value).splitlines()
    assert len(lines) == 2 and "'lunch=m7i.large:0.5'" in lines[0] and "'head=m7i.large:-1'" in lines[1]


def test_a_part_without_a_price_leaves_the_total_unknown_not_smaller() -> None:
    table = PriceTable(date="2026-12-06", source="test", prices={"us-west-2": {"inf2.xlarge": 0.7582}})
    total, split, missing = price_fractions(parse_fractions("workers=inf2.xlarge:1,head=m7i.large:0.5"), table,
                                            "us-west-2")
    assert total is None and split == {"workers": 0.7582, "head": None} and missing == ["m7i.large"]


INTEL_HT = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
physical id\t: 0
siblings\t: 2
core id\t: 0
cpu cores\t: 1

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
physical id\t: 0
siblings\t: 2
core id\t: 0
cpu cores\t: 1
"""

AMD_2_CORES = INTEL_HT.replace("GenuineIntel", "AuthenticAMD").replace(
    "Intel(R) Xeon(R) Platinum 8488C", "AMD EPYC 9R14").replace("cpu cores\t: 1", "cpu cores\t: 2")

GRAVITON_4 = "".join(f"""processor\t: {i}
BogoMIPS\t: 2100.00
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40

""" for i in range(4))


@pytest.mark.parametrize(("text", "logical", "expected", "cores", "tpc"), [
    (INTEL_HT, None, "c7i.large", 1, 2),  # one core, two hyperthreads: what a c7i.large vCPU pair is
    (INTEL_HT.replace("siblings\t: 2", "siblings\t: 8").replace("cpu cores\t: 1", "cpu cores\t: 4"), 8,
     "c7i.2xlarge", 4, 2),  # 4 cores x 2 threads: c7i.xlarge (4 vCPU) is 2 cores, c7i.2xlarge 4
    (AMD_2_CORES, None, "c7a.large", 2, 1),  # c7a's vCPUs are whole cores
    (GRAVITON_4, None, "c7g.xlarge", 4, 1),
])
def test_the_host_is_priced_as_the_closest_instance_type(text: str, logical: int | None, expected: str, cores: int,
                                                          tpc: int) -> None:
    host = parse_cpuinfo(text, logical)
    assert (host.cores, host.threads_per_core) == (cores, tpc)
    itype, why = closest_instance_type(host)
    assert itype == expected
    assert why.startswith(f"closest to this host: {host.describe()}")


def test_an_unknown_cpu_is_refused_with_the_fix() -> None:
    host = parse_cpuinfo("processor\t: 0\nmodel name\t: RISC-V\n")
    assert host == HostCpu(vendor=None, model="RISC-V", cores=1, threads_per_core=1)
    with pytest.raises(ConfigError, match=r"^--price-as host: this machine's CPU vendor is unknown \(RISC-V\); give "
                                          r"an EC2 type, e\.g\. --price-as c7i\.large$"):
        closest_instance_type(host)
