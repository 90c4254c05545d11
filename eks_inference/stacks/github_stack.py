"""The roles GitHub Actions assumes for one environment, when config sets ``github``: a stack of its own, because it
must exist before the first deploy from GitHub does (deploy it once by hand, then set the outputs as variables)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from eks_inference.config import ConfigError, PlatformConfig
from eks_inference.constructs.github_oidc import GitHubOidc
from eks_inference.nag import acknowledge

STACK_NAME_PREFIX = "EksInference-"
"""Every stack of this project starts so (app_builder); the diff role reads those of its account and region."""


class GitHubStack(Stack):
    """``self.github``: the read-only diff role and the environment's deploy role, with their ARNs as outputs
    ``DiffRoleArn`` (the repository variable ``AWS_DIFF_ROLE_ARN``) and ``DeployRoleArn`` (the GitHub environment's
    ``AWS_DEPLOY_ROLE_ARN``)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: PlatformConfig, **kwargs: Any) -> None:
        spec = config.github
        if spec is None:
            raise ConfigError(f"GitHubStack: environment {config.env_name!r} sets no github block; add "
                              '"github": {"repository": "owner/name"} or build no GitHubStack')
        super().__init__(scope, construct_id, **kwargs)
        self.github = GitHubOidc(self, "GitHubOidc", repository=spec.repository,
                                 environment=spec.environment or config.env_name,
                                 create_provider=spec.create_oidc_provider, stack_name_prefix=STACK_NAME_PREFIX)
        CfnOutput(self, "DiffRoleArn", value=self.github.diff_role.role_arn,
                  description="repository variable AWS_DIFF_ROLE_ARN (pull-request diffs against the deployed stacks)")
        CfnOutput(self, "DeployRoleArn", value=self.github.deploy_role.role_arn,
                  description="GitHub environment variable AWS_DEPLOY_ROLE_ARN of the environment the role trusts")

    def acknowledge_findings(self) -> None:
        acknowledge(self.github.deploy_role, {
            "AwsSolutions-IAM5": "Preflight's reads (DescribeInstanceTypes, DescribeAvailabilityZones, "
                                 "DescribeInstanceTypeOfferings, GetServiceQuota, DescribeAddonVersions, "
                                 "DescribeStacks, DescribeCluster) run before the stacks and cluster exist and take "
                                 "no resource ARN that could narrow them; every other right is one named role or "
                                 "parameter.",
        })
        acknowledge(self.github.diff_role, {
            "AwsSolutions-IAM5": "GetTemplate on this project's stacks (EksInference-*) in this account and region: "
                                 "a stack's ARN ends in an id CloudFormation draws at creation, so the name prefix "
                                 "and the id are wildcards.",
        })
