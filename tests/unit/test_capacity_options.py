"""Capacity as it is: alternative types and zones, an On-Demand Capacity Reservation or a Capacity Block for an
accelerator group, Spot for Graviton; validated in config, rendered into the launch template and the node group."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template

from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    CapacityType,
    ConfigError,
    NodeGroupSpec,
    Processor,
    parse_platform,
    read_project_context,
)
from eks_inference.constructs.processor_node_group import ProcessorNodeGroup
from tests.conftest import ROOT
from tests.unit.test_processor_node_group import bare_cluster

RESERVATION = "cr-0123456789abcdef0"
ODCR = NodeGroupSpec(name="inferentia", processor=Processor.INFERENTIA, instance_types=("inf2.xlarge", "inf2.8xlarge"),
                     max_size=3, availability_zones=("us-west-2b",), capacity_reservation_id=RESERVATION,
                     ami_release_version="1.36.0-20261120")
BLOCK = NodeGroupSpec(name="inf-block", processor=Processor.INFERENTIA, instance_types=("inf2.xlarge",), max_size=2,
                      availability_zones=("us-west-2a",), capacity_reservation_id=RESERVATION,
                      capacity_type=CapacityType.CAPACITY_BLOCK)
SPOT = NodeGroupSpec(name="graviton", processor=Processor.GRAVITON, instance_types=("c7g.2xlarge", "c7g.4xlarge"),
                     max_size=4, capacity_type=CapacityType.SPOT)


@pytest.fixture(scope="module")
def template() -> tuple[Template, dict[str, ProcessorNodeGroup]]:
    stack = Stack(App(), "Bare", env=Environment(account="111122223333", region="us-west-2"))
    vpc = ec2.Vpc(stack, "Vpc", availability_zones=["us-west-2a", "us-west-2b", "us-west-2c"])
    cluster = bare_cluster(stack, vpc)
    groups = {s.name: ProcessorNodeGroup(stack, s.name, cluster=cluster, spec=s) for s in (ODCR, BLOCK, SPOT)}
    return Template.from_stack(stack), groups


def _nodegroup(t: Template, group: ProcessorNodeGroup) -> dict[str, Any]:
    (props,) = [r["Properties"] for r in t.find_resources("AWS::EKS::Nodegroup").values()
                if r["Properties"]["NodegroupName"] == group.nodegroup_name]
    return props


def _launch_data(t: Template, group: ProcessorNodeGroup) -> dict[str, Any]:
    lt_id = Stack.of(group).get_logical_id(group.launch_template)
    return t.to_json()["Resources"][lt_id]["Properties"]["LaunchTemplateData"]  # type: ignore[no-any-return]


def _subnet_zones(t: Template, props: dict[str, Any]) -> set[str]:
    res = t.to_json()["Resources"]
    return {res[s["Ref"]]["Properties"]["AvailabilityZone"] for s in props["Subnets"]}


def test_an_on_demand_reservation_is_targeted_and_types_stay_in_priority_order(template: Any) -> None:
    t, groups = template
    data = _launch_data(t, groups["inferentia"])
    assert data["CapacityReservationSpecification"] == {"CapacityReservationTarget": {
        "CapacityReservationId": RESERVATION}}
    assert "InstanceMarketOptions" not in data and "InstanceType" not in data
    props = _nodegroup(t, groups["inferentia"])
    assert props["CapacityType"] == "ON_DEMAND" and props["InstanceTypes"] == ["inf2.xlarge", "inf2.8xlarge"]
    assert _subnet_zones(t, props) == {"us-west-2b"}
    assert props["ReleaseVersion"] == "1.36.0-20261120" and "ReleaseVersion" not in _nodegroup(t, groups["graviton"])


def test_a_capacity_block_is_rendered_as_the_eks_user_guide_sets_it(template: Any) -> None:
    t, groups = template
    data = _launch_data(t, groups["inf-block"])
    assert data["InstanceMarketOptions"] == {"MarketType": "capacity-block"}
    assert data["InstanceType"] == "inf2.xlarge"
    assert data["CapacityReservationSpecification"]["CapacityReservationTarget"]["CapacityReservationId"] == RESERVATION
    props = _nodegroup(t, groups["inf-block"])
    assert props["CapacityType"] == "CAPACITY_BLOCK" and "InstanceTypes" not in props
    assert _subnet_zones(t, props) == {"us-west-2a"}


def test_graviton_on_spot_in_every_zone(template: Any) -> None:
    t, groups = template
    props = _nodegroup(t, groups["graviton"])
    assert props["CapacityType"] == "SPOT" and props["InstanceTypes"] == ["c7g.2xlarge", "c7g.4xlarge"]
    assert "CapacityReservationSpecification" not in _launch_data(t, groups["graviton"])
    assert _subnet_zones(t, props) == {"us-west-2a", "us-west-2b", "us-west-2c"}


@pytest.mark.parametrize("kw, message", [
    ({"capacity_reservation_id": "cr-123"}, r"capacity_reservation_id: 'cr-123' is not a capacity reservation id"),
    ({"processor": Processor.GRAVITON, "instance_types": ("c7g.xlarge",), "capacity_reservation_id": RESERVATION},
     r"is set on a graviton group; reserve capacity for an inferentia or gpu group"),
    ({"capacity_reservation_id": RESERVATION, "capacity_type": CapacityType.SPOT},
     r"capacity_type: 'SPOT' cannot launch into a capacity reservation"),
    ({"capacity_type": CapacityType.CAPACITY_BLOCK, "availability_zones": ("us-west-2a",)},
     r"'CAPACITY_BLOCK' needs the block's capacity_reservation_id"),
    ({"capacity_type": CapacityType.CAPACITY_BLOCK, "capacity_reservation_id": RESERVATION,
      "instance_types": ("inf2.xlarge", "inf2.8xlarge"), "availability_zones": ("us-west-2a",)},
     r"lists more than the block's type"),
    ({"capacity_type": CapacityType.CAPACITY_BLOCK, "capacity_reservation_id": RESERVATION},
     r"availability_zones: None is not the block's one zone"),
    ({"availability_zones": ("west",)}, r"availability_zones: \('west',\) is not a list of zone names"),
    ({"ami_release_version": "1.35.2-20261101"}, r"ami_release_version: '1.35.2-20261101' is not an EKS AMI release "
                                                 r"for Kubernetes 1.36; write 1.36.PATCH-YYYYMMDD"),
    ({"ami_release_version": "latest"}, r"ami_release_version: 'latest' is not an EKS AMI release"),
])
def test_each_mistake_is_one_line_with_the_fix(kw: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"name": "inferentia", "processor": Processor.INFERENTIA, "instance_types": ("inf2.xlarge",)}
    with pytest.raises(ConfigError, match=message) as e:
        NodeGroupSpec(**{**base, **kw})
    assert all("; " in line for line in str(e.value).splitlines())


def test_a_groups_zones_must_be_the_vpcs_and_cdk_json_spells_it_the_same() -> None:
    dev = dict(read_project_context(ROOT / CDK_JSON)[ENVIRONMENTS_KEY]["dev"])
    groups = [dict(g) for g in dev["node_groups"]]
    inf = next(g for g in groups if g["name"] == "inferentia")
    inf.update(availability_zones=["us-west-2b"], capacity_reservation_id=RESERVATION,
               instance_types=["inf2.xlarge", "inf2.8xlarge"])
    parsed = parse_platform("dev", {**dev, "node_groups": groups})
    group = next(g for g in parsed.node_groups if g.name == "inferentia")
    assert group.availability_zones == ("us-west-2b",) and group.capacity_reservation_id == RESERVATION
    inf["availability_zones"] = ["us-west-2z"]
    with pytest.raises(ConfigError, match=r"node group 'inferentia' availability_zones: \['us-west-2z'\] are not "
                                          r"zones of the VPC; use some of us-west-2a"):
        parse_platform("dev", {**dev, "node_groups": groups})
    assert json.dumps(inf)  # the block as written in cdk.json

