"""Assemble the CDK app for one environment (``-c env=NAME``); shared by app.py, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from eks_inference.checks import EksSecurityChecks
from eks_inference.config import (
    ENVIRONMENTS_KEY,
    LOADTEST_RUN_ID_KEY,
    TRIAL_DEADLINE_KEY,
    PlatformConfig,
    config_from_context,
)
from eks_inference.constructs.trial_deadline import parse_deadline
from eks_inference.stacks.cluster_stack import ClusterStack
from eks_inference.stacks.github_stack import GitHubStack
from eks_inference.stacks.inference_stack import InferenceStack
from eks_inference.stacks.network_stack import NetworkStack
from eks_inference.stacks.trial_deadline_stack import TrialDeadlineStack


@dataclass(frozen=True)
class Stacks:
    config: PlatformConfig
    network: NetworkStack
    cluster: ClusterStack
    inference: InferenceStack
    github: GitHubStack | None = None
    trial_deadline: TrialDeadlineStack | None = None


def config_from_app(app: App) -> PlatformConfig:
    """The environment ``-c env=NAME`` selects, from the context the CDK CLI gave the app, validated by
    :func:`~eks_inference.config.config_from_context`: the path every command that reads ``cdk.json`` takes too.
    Account and region: ``-c account=/region=`` first, then the environment block, then CDK_DEFAULT_*."""
    context = {key: app.node.try_get_context(key)
               for key in (ENVIRONMENTS_KEY, "env", "account", "region", LOADTEST_RUN_ID_KEY)}
    return config_from_context(context)


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
    github = None
    if config.github is not None:
        github = GitHubStack(app, f"{prefix}-GitHub", config=config, env=env,
                             description=f"eks-inference {config.env_name}: the roles GitHub Actions assumes to "
                                         "diff and deploy")
        github.acknowledge_findings()
    deadline = None
    if app.node.try_get_context(TRIAL_DEADLINE_KEY):
        deadline = TrialDeadlineStack(
            app, f"{prefix}-TrialDeadline", env=env,
            delete_first=[inference.stack_name, cluster.stack_name, network.stack_name],
            deadline=parse_deadline(str(app.node.try_get_context(TRIAL_DEADLINE_KEY))),
            description=f"eks-inference {config.env_name}: deletes the trial's stacks at its deadline")
        network.add_stack_dependency(deadline, "the scheduled teardown exists before anything it would remove")
        deadline.acknowledge_findings()
    if checks:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
        EksSecurityChecks.apply(app)
    return Stacks(config=config, network=network, cluster=cluster, inference=inference, github=github,
                  trial_deadline=deadline)
