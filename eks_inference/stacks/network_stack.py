"""The VPC every other stack builds on."""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, RemovalPolicy, Stack, Tags, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from eks_inference.config import PlatformConfig
from eks_inference.constructs.trust import own_arn, restrict_service_trust, source_conditions
from eks_inference.nag import checkov_skip

# CloudWatch retention choices by day count (config has already checked the count is one of them).
_RETENTION = {
    1: logs.RetentionDays.ONE_DAY, 3: logs.RetentionDays.THREE_DAYS, 5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK, 14: logs.RetentionDays.TWO_WEEKS, 30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS, 90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS, 150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS, 365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS, 545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS, 1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS, 3653: logs.RetentionDays.TEN_YEARS,
}


class NetworkStack(Stack):
    """VPC over ``max_azs`` Availability Zones with public and private subnets.

    Private subnets get most of the address space: the VPC CNI gives every pod a VPC address. Subnets
    carry the tags the AWS Load Balancer Controller discovers them by; flow logs go to CloudWatch Logs;
    an S3 gateway endpoint keeps model downloads off the NAT gateways (and their per-GB charge).
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: PlatformConfig, **kwargs: Any) -> None:
        # Set before the Stack exists: aws-cdk-lib reads availability_zones back through the override below.
        self._zones: list[str] | None = None if config.zones_lookup else list(config.availability_zones)
        super().__init__(scope, construct_id, **kwargs)
        if self._zones is not None:
            # What Stack.availability_zones acknowledges for looked-up names holds for configured ones too.
            Validations.of(self).acknowledge(Acknowledgment(
                id="CloudFormation-Validate::W3010",
                reason="The zones are named in the environment's config (availability_zones), on purpose.",
            ))
        prefix = int(config.vpc_cidr.split("/")[1])
        zone_props: dict[str, Any] = (
            {"max_azs": config.max_azs} if self._zones is None else {"availability_zones": list(self._zones)}
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            nat_gateways=config.nat_gateways,
            **zone_props,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=prefix + 6),
                ec2.SubnetConfiguration(
                    name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=prefix + 2
                ),
            ],
            restrict_default_security_group=True,
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        for subnet in self.vpc.public_subnets:
            Tags.of(subnet).add("kubernetes.io/role/elb", "1")
        for subnet in self.vpc.private_subnets:
            Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")

        # The key admits CloudWatch Logs for this one log group (its ARN is the encryption context CloudWatch Logs
        # sends; CloudWatch Logs User Guide, "Encrypt log data using AWS KMS"). The group is named here so the key
        # policy can name it before the group exists: a generated name would make key and group refer to each other.
        self.flow_log_group_name = f"/eks-inference/{self.stack_name}/vpc-flow-logs"
        self.flow_log_key = kms.Key(self, "FlowLogKey", enable_key_rotation=True,
                                    description="Encrypts the VPC flow log group of eks-inference")
        self.flow_log_key.add_to_resource_policy(iam.PolicyStatement(
            principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"],
            conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn":
                                      own_arn("logs", f"log-group:{self.flow_log_group_name}")}},
        ))
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            log_group_name=self.flow_log_group_name,
            encryption_key=self.flow_log_key,
            retention=_RETENTION[config.log_retention_days],
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )
        # The flow log's role admits the flow-logs service acting for a flow log of this account and region (its id
        # exists only once the flow log does; VPC User Guide, "IAM role for publishing flow logs to CloudWatch Logs").
        assert self.flow_log.iam_role is not None
        restrict_service_trust(self.flow_log.iam_role, "vpc-flow-logs.amazonaws.com",
                               source_conditions(own_arn("ec2", "vpc-flow-log/*")))
        checkov_skip(self, "AWS::Lambda::Function", {
            "CKV_AWS_115": "aws-cdk-lib's handler that strips the default security group's rules runs once per "
                           "deploy; CloudFormation bounds its concurrency.",
            "CKV_AWS_116": "Invoked synchronously by CloudFormation, which reports failures; a DLQ would stay empty.",
            "CKV_AWS_117": "It only calls the EC2 API and needs no VPC access.",
        })

    @property
    def availability_zones(self) -> list[str]:
        """The configured zones, so that neither this stack nor its VPC asks AWS (a context lookup) for them.

        aws-cdk-lib's ``Stack.availabilityZones`` looks the zones up whenever account and region are concrete, and
        ``Vpc`` reads it even when given ``availabilityZones`` (to check they are a subset); overriding it is
        the documented way to name zones. With ``availability_zones: "lookup"`` the lookup runs as usual.
        """
        if self._zones is None:
            return list(super().availability_zones)
        return list(self._zones)
