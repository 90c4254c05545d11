"""NetworkStack: three AZs, public and private subnets with load-balancer tags, flow logs, S3 endpoint."""

from __future__ import annotations

from aws_cdk.assertions import Match, Template

from tests.conftest import Assembly


def _subnets(t: Template, public: bool) -> dict:
    return t.find_resources("AWS::EC2::Subnet", {"Properties": {"MapPublicIpOnLaunch": public}})


def test_subnets_span_three_azs(assemblies: dict[str, Assembly]) -> None:
    for env_name, asm in assemblies.items():
        t = Template.from_json(asm.template("-Network"))
        for public in (True, False):
            subnets = _subnets(t, public)
            azs = {s["Properties"]["AvailabilityZone"] for s in subnets.values()}
            assert len(subnets) == 3 and len(azs) == 3, (env_name, public, azs)


def test_subnet_tags_for_load_balancers(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    for public, tag in ((True, "kubernetes.io/role/elb"), (False, "kubernetes.io/role/internal-elb")):
        for s in _subnets(t, public).values():
            assert {"Key": tag, "Value": "1"} in s["Properties"]["Tags"]


def test_private_subnets_get_most_addresses(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    private = {s["Properties"]["CidrBlock"] for s in _subnets(t, False).values()}
    public = {s["Properties"]["CidrBlock"] for s in _subnets(t, True).values()}
    assert all(c.endswith("/18") for c in private) and all(c.endswith("/22") for c in public)


def test_nat_gateways_per_environment(assemblies: dict[str, Assembly]) -> None:
    Template.from_json(assemblies["dev"].template("-Network")).resource_count_is("AWS::EC2::NatGateway", 1)
    Template.from_json(assemblies["prod"].template("-Network")).resource_count_is("AWS::EC2::NatGateway", 3)


def test_flow_logs_and_s3_gateway_endpoint(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    t.has_resource_properties("AWS::EC2::FlowLog", {
        "ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs",
    })
    t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})
    t.has_resource_properties("AWS::EC2::VPCEndpoint", {
        "VpcEndpointType": "Gateway",
        "ServiceName": Match.object_like({"Fn::Join": Match.array_with([Match.array_with([".s3"])])}),
    })
    prod = Template.from_json(assemblies["prod"].template("-Network"))
    prod.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})
