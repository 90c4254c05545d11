"""The two roles GitHub Actions assumes through the account's GitHub OIDC provider: a read-only diff role for pull
requests, and a deploy role for one protected GitHub environment.

GitHub's OIDC token names the workflow run it was issued to in its ``sub`` claim (GitHub Docs, "About security
hardening with OpenID Connect", example subject claims): ``repo:OWNER/REPO:environment:NAME`` for a job that runs in
an environment, ``repo:OWNER/REPO:pull_request`` for a job of a ``pull_request`` workflow. The trusts here require the
exact string, and ``aud`` = ``sts.amazonaws.com`` (what aws-actions/configure-aws-credentials asks for), so:

* only a job that runs in the protected environment (its required reviewers and branch rules pass first) gets the
  deploy role, and that role can do one thing: assume the CDK bootstrap roles (which deploy, publish assets and look
  up) and make preflight's reads;
* anyone who can push a branch can run a pull-request job, so that job's role reads the deployed templates of this
  project's stacks and nothing else.

An account holds one IAM OIDC provider per issuer URL. By default the provider is imported by its ARN (it must exist:
``aws iam list-open-id-connect-providers``); ``create_provider=True`` creates it, for the one stack in the account that
owns it.
"""

from __future__ import annotations

import re

from aws_cdk import Aws, DefaultStackSynthesizer, Duration
from aws_cdk import aws_iam as iam
from constructs import Construct

from eks_inference.config import GITHUB_ENVIRONMENT_RE, GITHUB_REPOSITORY_RE, ConfigError

GITHUB_ISSUER = "token.actions.githubusercontent.com"
AUDIENCE = "sts.amazonaws.com"
_QUALIFIER_RE = re.compile(r"^[a-z0-9]{1,10}$")
_STACK_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,100}$")

PREFLIGHT_READS = (
    "cloudformation:DescribeStacks",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "eks:DescribeAddonVersions",
    "eks:DescribeCluster",
    "servicequotas:GetAWSDefaultServiceQuota",
    "servicequotas:GetServiceQuota",
)
"""The reads ``eks-inference preflight`` makes (eks_inference/ops/preflight.py) besides the bootstrap version
parameter; none of these actions can be narrowed to a resource ARN that exists before the stacks do."""


def subject(repository: str, *, environment: str | None = None) -> str:
    """The ``sub`` claim of a job of ``repository`` that runs in ``environment``, or of a pull-request job."""
    return f"repo:{repository}:environment:{environment}" if environment else f"repo:{repository}:pull_request"


class GitHubOidc(Construct):
    """A read-only ``diff_role`` for pull requests and a ``deploy_role`` for one GitHub environment.

    :param repository: ``owner/name`` of the GitHub repository whose workflows may assume the roles; exact, no
        wildcard.
    :param environment: the GitHub environment whose jobs may assume the deploy role (give it required reviewers
        or branch rules in the repository's settings).
    :param create_provider: default false: import the account's GitHub OIDC provider by its ARN (there is one per
        account); true creates it (then no other stack in the account may).
    :param bootstrap_qualifier: the CDK bootstrap qualifier whose roles the deploy role assumes; default CDK's
        ``hnb659fds``.
    :param stack_name_prefix: the diff role reads the templates of the stacks whose names start with this; default
        ``EksInference-``.
    :param max_session: how long one assumption lasts; default one hour (IAM allows 1 to 12).
    """

    def __init__(self, scope: Construct, construct_id: str, *, repository: str, environment: str,
                 create_provider: bool = False,
                 bootstrap_qualifier: str = DefaultStackSynthesizer.DEFAULT_QUALIFIER,
                 stack_name_prefix: str = "EksInference-", max_session: Duration | None = None) -> None:
        _validate(repository, environment, create_provider, bootstrap_qualifier, stack_name_prefix, max_session)
        super().__init__(scope, construct_id)
        max_session = max_session or Duration.hours(1)

        self.provider: iam.IOidcProvider
        if create_provider:
            self.provider = iam.OidcProviderNative(self, "Provider", url=f"https://{GITHUB_ISSUER}",
                                                   client_ids=[AUDIENCE])
        else:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(
                self, "Provider", f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:oidc-provider/{GITHUB_ISSUER}")

        def trust(sub: str) -> iam.WebIdentityPrincipal:
            return iam.WebIdentityPrincipal(self.provider.oidc_provider_arn, conditions={
                "StringEquals": {f"{GITHUB_ISSUER}:aud": AUDIENCE, f"{GITHUB_ISSUER}:sub": sub}})

        self.diff_role = iam.Role(
            self, "DiffRole", assumed_by=trust(subject(repository)), max_session_duration=max_session,
            description=f"eks-inference: pull requests of {repository} read the deployed {stack_name_prefix}* "
                        "templates (eks-inference diff --deployed)")
        self.diff_role.add_to_policy(iam.PolicyStatement(
            sid="ReadDeployedTemplates", actions=["cloudformation:GetTemplate"],
            resources=[f"arn:{Aws.PARTITION}:cloudformation:{Aws.REGION}:{Aws.ACCOUNT_ID}:stack/{stack_name_prefix}*/*"]))

        self.deploy_role = iam.Role(
            self, "DeployRole", assumed_by=trust(subject(repository, environment=environment)),
            max_session_duration=max_session,
            description=f"eks-inference: {repository}'s jobs in GitHub environment {environment} deploy through the "
                        f"CDK bootstrap roles ({bootstrap_qualifier})")
        self.deploy_role.add_to_policy(iam.PolicyStatement(
            sid="AssumeCdkBootstrapRoles", actions=["sts:AssumeRole", "sts:TagSession"],
            resources=[f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/cdk-{bootstrap_qualifier}-{kind}-role-"
                       f"{Aws.ACCOUNT_ID}-{Aws.REGION}"
                       for kind in ("deploy", "file-publishing", "image-publishing", "lookup")]))
        self.deploy_role.add_to_policy(iam.PolicyStatement(
            sid="PreflightBootstrapVersion", actions=["ssm:GetParameter"],
            resources=[f"arn:{Aws.PARTITION}:ssm:{Aws.REGION}:{Aws.ACCOUNT_ID}:parameter/cdk-bootstrap/"
                       f"{bootstrap_qualifier}/version"]))
        self.deploy_role.add_to_policy(iam.PolicyStatement(
            sid="PreflightReads", actions=list(PREFLIGHT_READS), resources=["*"]))


def _validate(repository: str, environment: str, create_provider: bool, qualifier: str, prefix: str,
              max_session: Duration | None) -> None:
    if not isinstance(repository, str) or not GITHUB_REPOSITORY_RE.match(repository):
        raise ConfigError(f"GitHubOidc repository: {repository!r} is not owner/name; give the exact repository, "
                          "e.g. my-org/eks-inference (no wildcard: it would admit other repositories' workflows)")
    if not isinstance(environment, str) or not GITHUB_ENVIRONMENT_RE.match(environment):
        raise ConfigError(f"GitHubOidc environment: {environment!r} is not one GitHub environment name; give the "
                          "exact name of the protected environment the deploy job runs in, e.g. prod (no wildcard, "
                          "':' or '/')")
    if not isinstance(create_provider, bool):
        raise ConfigError(f"GitHubOidc create_provider: {create_provider!r} is not true or false; write false to "
                          "import the account's provider or true to create it")
    if not isinstance(qualifier, str) or not _QUALIFIER_RE.match(qualifier):
        raise ConfigError(f"GitHubOidc bootstrap_qualifier: {qualifier!r} is not a CDK bootstrap qualifier; use the "
                          "one `cdk bootstrap` used (default hnb659fds: lower-case letters and digits, up to 10)")
    if not isinstance(prefix, str) or not _STACK_PREFIX_RE.match(prefix):
        raise ConfigError(f"GitHubOidc stack_name_prefix: {prefix!r} is not a stack name prefix; give the start of "
                          "the stack names, e.g. EksInference- (no wildcard)")
    if max_session is not None and not 3600 <= max_session.to_seconds() <= 43200:
        raise ConfigError(f"GitHubOidc max_session: {max_session.to_seconds():.0f} s is outside IAM's 1..12 hours; "
                          "give Duration.hours(1) or up to Duration.hours(12)")
