"""Assemble the CDK app for one environment (``-c env=NAME``); shared by app.py, tests and benchmarks."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from eks_inference.checks import EksSecurityChecks
from eks_inference.config import ENVIRONMENTS_KEY, PlatformConfig, load_config
from eks_inference.stacks.cluster_stack import ClusterStack
from eks_inference.stacks.inference_stack import InferenceStack
from eks_inference.stacks.network_stack import NetworkStack


@dataclass(frozen=True)
class Stacks:
    config: PlatformConfig
    network: NetworkStack
    cluster: ClusterStack
    inference: InferenceStack


def config_from_app(app: App) -> PlatformConfig:
    """Account and region: ``-c account=/region=`` first, then the environment block, then CDK_DEFAULT_*."""
    node = app.node
    envs = node.try_get_context(ENVIRONMENTS_KEY) or {}
    env_name = node.try_get_context("env")
    block = dict(envs.get(env_name) or {}) if isinstance(envs, dict) else {}
    for key in ("account", "region"):
        override = node.try_get_context(key)
        if override:
            block[key] = str(override)
    if env_name in envs:
        envs = {**envs, env_name: block}
    return load_config(
        env_name,
        envs,
        account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
        region=os.environ.get("CDK_DEFAULT_REGION"),
    )


def build_app(app: App, *, checks: bool = True) -> Stacks:
    """Build every stack of the selected environment; raises ConfigError before creating anything."""
    config = config_from_app(app)
    env = Environment(account=config.account, region=config.region)
    prefix = f"EksInference-{config.env_name}"
    network = NetworkStack(app, f"{prefix}-Network", config=config, env=env,
                           description=f"eks-inference {config.env_name}: VPC over {config.max_azs} AZs")
    cluster = ClusterStack(app, f"{prefix}-Cluster", config=config, vpc=network.vpc, env=env,
                           description=f"eks-inference {config.env_name}: EKS cluster, node groups, operators")
    inference = InferenceStack(app, f"{prefix}-Inference", config=config,
                               inference_cluster=cluster.inference_cluster, env=env,
                               metrics_cidrs=cluster.observability.scraper_cidrs if cluster.observability else (),
                               description=f"eks-inference {config.env_name}: model repository, images, serving")
    Tags.of(app).add("project", "eks-inference")
    Tags.of(app).add("environment", config.env_name)
    cluster.acknowledge_findings()
    inference.acknowledge_findings()
    if checks:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        EksSecurityChecks.apply(app)
    return Stacks(config=config, network=network, cluster=cluster, inference=inference)
