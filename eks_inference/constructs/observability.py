"""Metrics without running a Prometheus server: an Amazon Managed Service for Prometheus workspace, fed by an AWS
managed scraper, with the alert rules and the exporters the dashboards read.

What it creates and why:

* **Workspace** (``AWS::APS::Workspace``) encrypted with a customer managed KMS key (rotation on, retained like
  the other keys), keeping samples ``retention_days``.
* **Scraper** (``AWS::APS::Scraper``) reading the cluster with the configuration of
  :mod:`eks_inference.observability.scrape`. A workspace with a customer managed key takes only scrapers that
  write through a role configuration (AMP user guide, managed collectors: "workspaces enabled with customer
  managed keys"): a source role the scraper service assumes, which assumes a target role that may only
  ``aps:RemoteWrite`` to this workspace. The scraper's ARN is not known before it exists, so on a first deploy the
  trust conditions name this account's scrapers (``scraper/*``); once ``observability.scraper_id`` names it (the
  stack output ``MetricsScraperId``), both roles trust that scraper only.
* **Where the scraper stands in the VPC**: two /28 subnets of its own, carved from address space no other subnet
  uses, in two zones (the API asks for two). Its network interfaces live only there, so the NetworkPolicies can
  admit exactly those addresses to the metrics ports (an address block of the private subnets would admit every
  pod as well). The subnets use the VPC's main route table (local routes only): the scraper reaches the API
  server's private endpoint and the pods inside the VPC, and writes to the workspace from the service side.
* **Security groups**: the scraper gets its own, with egress only to the cluster security group (which EKS puts
  on the API endpoint and on every managed node, since our launch templates name no security group) on 443 (the
  API server, for discovery and the kubelet proxy) and the metrics ports; the cluster security group admits it
  on those ports and nothing else.
* **Cluster access**: none to deploy. The cluster authenticates with access entries (``AuthenticationMode:
  API``), and creating the scraper creates its access entry with read access to pods, nodes and their proxy
  (the resource's handler holds ``eks:CreateAccessEntry``; AMP user guide, "Configuring your Amazon EKS
  cluster").
* **Rule groups** (``AWS::APS::RuleGroupsNamespace``): :mod:`eks_inference.observability.rules`.
* **Where alerts go**: the workspace's alert manager definition (:mod:`eks_inference.observability.alertmanager`)
  routes every alert to an SNS topic of this environment (:class:`AlertTopic`: KMS-encrypted, only this workspace
  may publish), which people subscribe to.
* **Exporters**: neuron-monitor on Inferentia nodes, dcgm-exporter (NVIDIA's chart, pinned) on GPU nodes, in the
  ``monitoring`` namespace behind a NetworkPolicy (:mod:`eks_inference.k8s.monitoring`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Acknowledgment, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_aps as aps
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from eks_inference.config import AddonVersions, ConfigError, ObservabilitySpec
from eks_inference.constructs.alert_topic import AlertTopic
from eks_inference.constructs.trust import own_arn, source_conditions
from eks_inference.k8s.monitoring import dcgm_exporter_values, monitoring_manifests
from eks_inference.k8s.ray_service import RAY_PORTS
from eks_inference.observability.alertmanager import alertmanager_definition
from eks_inference.observability.rules import rules_yaml
from eks_inference.observability.scrape import (
    DCGM_EXPORTER_PORT,
    MONITORING_NAMESPACE,
    NEURON_MONITOR_PORT,
    render_scrape_config,
    scrape_config_yaml,
)

API_SERVER_PORT = 443
SCRAPER_SUBNET_PREFIX = 28
SCRAPER_SUBNETS = 2


def scraper_subnet_cidrs(vpc_cidr: str, used: Sequence[str], *, count: int = SCRAPER_SUBNETS,
                         prefix: int = SCRAPER_SUBNET_PREFIX) -> list[str]:
    """The highest ``count`` free /``prefix`` blocks of ``vpc_cidr`` that overlap none of ``used``, highest first:
    far from where CDK allocates subnets (from the bottom), so a subnet group added later does not collide."""
    net = ipaddress.IPv4Network(vpc_cidr)
    taken = [ipaddress.IPv4Network(c) for c in used]
    out: list[str] = []
    for block in reversed(list(net.subnets(new_prefix=prefix))):
        if not any(block.overlaps(t) for t in taken):
            out.append(str(block))
            if len(out) == count:
                return out
    raise ConfigError(f"vpc_cidr: {vpc_cidr} has no {count} free /{prefix} blocks for the metrics scraper's "
                      "subnets; use a larger VPC (vpc_cidr) or fewer zones")


class ClusterObservability(Construct):
    """The workspace, scraper, rules and exporters of one cluster (see the module docstring).

    :param cluster: the ``aws_eks_v2`` cluster (its ARN, security group and manifests).
    :param vpc: the cluster's VPC; its subnets must have concrete CIDRs (those of an ``ec2.Vpc`` do).
    :param vpc_cidr: the VPC's address range (``vpc.vpc_cidr_block`` is a deploy-time token).
    :param spec: scrape interval, retention and the shed-ratio alert threshold.
    :param rules: the rules file (:func:`eks_inference.observability.rules.rules_for`).
    :param serving_namespace: where the Ray pods run.
    :param neuron: install neuron-monitor (an Inferentia group exists); default false.
    :param gpu: install dcgm-exporter (a GPU group exists); default false.
    :param addons: the exporters' pinned versions; default :class:`AddonVersions`.
    :param after: constructs the exporters must wait for (the VPC CNI that enforces their NetworkPolicy, the
        nodes); default none.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, vpc: ec2.IVpc, vpc_cidr: str,
                 spec: ObservabilitySpec, rules: Mapping[str, Any], serving_namespace: str, neuron: bool = False,
                 gpu: bool = False, addons: AddonVersions | None = None, after: Sequence[Construct] = ()) -> None:
        super().__init__(scope, construct_id)
        v = addons or AddonVersions()
        self.key = kms.Key(self, "WorkspaceKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="Encrypts the eks-inference metrics workspace (Amazon Managed Prometheus)")
        self.workspace = aps.CfnWorkspace(
            self, "Workspace", alias=f"{Stack.of(self).stack_name}-metrics", kms_key_arn=self.key.key_arn,
            workspace_configuration=aps.CfnWorkspace.WorkspaceConfigurationProperty(
                retention_period_in_days=spec.retention_days))

        used = [s.ipv4_cidr_block for s in [*vpc.public_subnets, *vpc.private_subnets, *vpc.isolated_subnets]]
        if any(Token.is_unresolved(c) for c in used):
            raise ConfigError("vpc: its subnets' CIDRs are only known at deploy time; the metrics scraper's subnets "
                              "are carved from the free address space at synth, so give an ec2.Vpc built here")
        self.scraper_cidrs = scraper_subnet_cidrs(vpc_cidr, used)
        zones = list(vpc.availability_zones)[:SCRAPER_SUBNETS]
        Validations.of(self).acknowledge(Acknowledgment(
            id="CloudFormation-Validate::W3010",
            reason="The scraper's subnets go into two of the VPC's own zones, which config names.",
        ))
        self.subnets = [
            ec2.CfnSubnet(self, f"ScraperSubnet{i + 1}", vpc_id=vpc.vpc_id, cidr_block=cidr, availability_zone=zone,
                          map_public_ip_on_launch=False,
                          tags=[{"key": "Name", "value": f"eks-inference-metrics-scraper-{i + 1}"}])
            for i, (cidr, zone) in enumerate(zip(self.scraper_cidrs, zones, strict=True))
        ]

        self.security_group = ec2.SecurityGroup(
            self, "ScraperSecurityGroup", vpc=vpc, allow_all_outbound=False,
            description="Managed Prometheus scraper: to the API server and the metrics ports only")
        cluster_sg = ec2.SecurityGroup.from_security_group_id(self, "ClusterSecurityGroup",
                                                              cluster.cluster_security_group_id,
                                                              allow_all_outbound=False, mutable=False)
        self.ports = [API_SERVER_PORT, RAY_PORTS.metrics_export, NEURON_MONITOR_PORT] + (
            [DCGM_EXPORTER_PORT] if gpu else [])
        for port in self.ports:
            self.security_group.add_egress_rule(cluster_sg, ec2.Port.tcp(port), f"scrape/discover on {port}")
            ec2.CfnSecurityGroupIngress(
                self, f"ClusterFromScraper{port}", group_id=cluster.cluster_security_group_id, ip_protocol="tcp",
                from_port=port, to_port=port, source_security_group_id=self.security_group.security_group_id,
                description=f"Managed Prometheus scraper to port {port}")

        self.source_role, self.target_role = self._write_roles(spec.scraper_id)
        self.scrape_config = render_scrape_config(serving_namespace=serving_namespace,
                                                  interval_s=spec.scrape_interval_s, neuron=neuron, gpu=gpu)
        self.scraper = aps.CfnScraper(
            self, "Scraper", alias=f"{Stack.of(self).stack_name}-scraper",
            source=aps.CfnScraper.SourceProperty(eks_configuration=aps.CfnScraper.EksConfigurationProperty(
                cluster_arn=cluster.cluster_arn, subnet_ids=[s.ref for s in self.subnets],
                security_group_ids=[self.security_group.security_group_id])),
            scrape_configuration=aps.CfnScraper.ScrapeConfigurationProperty(
                configuration_blob=scraper_blob(self.scrape_config)),
            destination=aps.CfnScraper.DestinationProperty(
                amp_configuration=aps.CfnScraper.AmpConfigurationProperty(workspace_arn=self.workspace.attr_arn)),
            role_configuration=aps.CfnScraper.RoleConfigurationProperty(
                source_role_arn=self.source_role.role_arn, target_role_arn=self.target_role.role_arn))
        self.scraper.node.add_dependency(self.source_role, self.target_role, *self.subnets)
        for policy in (self.source_role, self.target_role):
            default = policy.node.try_find_child("DefaultPolicy")
            if default is not None:
                self.scraper.node.add_dependency(default)

        self.rules = aps.CfnRuleGroupsNamespace(self, "Rules", name="eks-inference",
                                                workspace=self.workspace.attr_arn, data=rules_yaml(dict(rules)))
        self.alerts = AlertTopic(self, "Alerts", workspace_arn=self.workspace.attr_arn)
        self.workspace.alert_manager_definition = alertmanager_definition(topic_arn=self.alerts.topic_arn,
                                                                          region=Stack.of(self).region)

        self.monitoring = cluster.add_manifest(
            "MonitoringManifests",
            *monitoring_manifests(neuron_image=v.neuron_monitor_image if neuron else None,
                                  scraper_cidrs=self.scraper_cidrs))
        for c in after:
            self.monitoring.node.add_dependency(c)
        self.dcgm: eks.HelmChart | None = None
        if gpu:
            self.dcgm = cluster.add_helm_chart(
                "DcgmExporter", chart="dcgm-exporter", release="dcgm-exporter",
                repository=v.dcgm_exporter_repository, version=v.dcgm_exporter_chart,
                namespace=MONITORING_NAMESPACE, create_namespace=False, values=dcgm_exporter_values())
            self.dcgm.node.add_dependency(self.monitoring)

    def _write_roles(self, scraper_id: str | None) -> tuple[iam.Role, iam.Role]:
        """The role configuration a customer-managed-key workspace requires (module docstring); with ``scraper_id``
        both roles trust that scraper only, otherwise any scraper of this account and region."""
        scrapers = own_arn("aps", f"scraper/{scraper_id or '*'}")
        source = iam.Role(
            self, "ScraperSourceRole", description="Assumed by the managed Prometheus scraper of this stack",
            assumed_by=iam.ServicePrincipal("scraper.aps.amazonaws.com", conditions=source_conditions(scrapers)))
        target = iam.Role(
            self, "ScraperTargetRole", description="Writes scraped samples to the eks-inference metrics workspace",
            assumed_by=iam.ArnPrincipal(source.role_arn).with_conditions(
                {"StringLike": {"sts:ExternalId": scrapers}}))
        target.add_to_policy(iam.PolicyStatement(actions=["aps:RemoteWrite"],
                                                 resources=[self.workspace.attr_arn]))
        source.add_to_policy(iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[target.role_arn]))
        return source, target


def scraper_blob(config: Mapping[str, Any]) -> str:
    """``ScrapeConfiguration.ConfigurationBlob``: the configuration as plain YAML.

    The CloudFormation reference and schema describe it as "base 64 encoded", but CloudFormation hands the string
    to the API as the blob's bytes (AWS SDKs base64-encode blobs on the wire themselves), and CDK projects that
    deploy scrapers pass the YAML as is; one that passed ``Fn::Base64`` of it replaced that with the plain YAML.
    """
    return scrape_config_yaml(dict(config))
