"""Subnets of the internal front door's load balancer alone.

The serving pods' NetworkPolicies must admit the load balancer (requests and health checks come from its nodes'
addresses) and nothing else. The VPC CNI gives pods addresses from the nodes' private subnets, so admitting those
subnets would admit every pod of the cluster; the internal load balancer therefore gets small subnets of its own,
one per zone, whose addresses no pod can hold. They use the private subnets' route tables (the NAT gateway), so the
load balancer can fetch the JWT issuer's keys. An internet-facing load balancer goes to the public subnets, where no
pod runs either.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aws_cdk import Acknowledgment, Token, Validations
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from eks_inference.config import ConfigError

PREFIX = 27
"""An ALB needs subnets of at least /27 with 8 free addresses (ELB User Guide, "Subnets for your load balancer")."""


def free_blocks(vpc_cidr: str, used: Sequence[str], count: int, prefix: int = PREFIX) -> list[str]:
    """The lowest ``count`` free /``prefix`` blocks of ``vpc_cidr`` (the metrics scraper's take the highest)."""
    taken = [ipaddress.IPv4Network(c) for c in used]
    out: list[str] = []
    for block in ipaddress.IPv4Network(vpc_cidr).subnets(new_prefix=prefix):
        if not any(block.overlaps(t) for t in taken):
            out.append(str(block))
            if len(out) == count:
                return out
    raise ConfigError(f"vpc_cidr: {vpc_cidr} has no {count} free /{prefix} blocks for the front door's subnets; use a "
                      "larger VPC (vpc_cidr) or fewer zones")


class FrontDoorSubnets(Construct):
    """One /27 per zone of the VPC's private subnets, routed as the private subnet of its zone.

    :param vpc: an ``ec2.Vpc`` whose subnets' CIDRs are known at synth.  :param vpc_cidr: its address range.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, vpc_cidr: str) -> None:
        super().__init__(scope, construct_id)
        private = list(vpc.private_subnets)
        used = [s.ipv4_cidr_block for s in [*vpc.public_subnets, *private, *vpc.isolated_subnets]]
        if any(Token.is_unresolved(c) for c in used):
            raise ConfigError("vpc: its subnets' CIDRs are only known at deploy time; the front door's subnets are "
                              "carved from the free address space at synth, so give an ec2.Vpc built here")
        self.cidrs = free_blocks(vpc_cidr, used, len(private))
        Validations.of(self).acknowledge(Acknowledgment(
            id="CloudFormation-Validate::W3010",
            reason="The front door's subnets go into the zones of the VPC's private subnets, which config names.",
        ))
        self.subnets: list[ec2.CfnSubnet] = []
        for i, (cidr, twin) in enumerate(zip(self.cidrs, private, strict=True)):
            subnet = ec2.CfnSubnet(self, f"Subnet{i + 1}", vpc_id=vpc.vpc_id, cidr_block=cidr,
                                   availability_zone=twin.availability_zone, map_public_ip_on_launch=False,
                                   tags=[{"key": "Name", "value": f"eks-inference-front-door-{i + 1}"}])
            ec2.CfnSubnetRouteTableAssociation(self, f"Routes{i + 1}", subnet_id=subnet.ref,
                                               route_table_id=twin.route_table.route_table_id)
            self.subnets.append(subnet)
        self.subnet_ids = [s.ref for s in self.subnets]
