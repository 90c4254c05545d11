"""GitHubOidc in a bare stack, its config block, and the GitHub stack of a synthesized environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Duration, Stack
from aws_cdk.assertions import Template

from eks_inference.config import ConfigError, load_config
from eks_inference.constructs.github_oidc import GITHUB_ISSUER, PREFLIGHT_READS, GitHubOidc, subject
from tests.conftest import ROOT, Assembly, cdk_context, synth_variant

REPO = "my-org/eks-inference"
PROVIDER_ARN = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iam::", {"Ref": "AWS::AccountId"},
                                  f":oidc-provider/{GITHUB_ISSUER}"]]}


def bare(**kwargs: Any) -> Template:
    stack = Stack(App(), "Bare")
    GitHubOidc(stack, "GitHubOidc", **{"repository": REPO, "environment": "prod", **kwargs})
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def template() -> Template:
    return bare()


def roles(template: Template) -> dict[str, dict[str, Any]]:
    return template.find_resources("AWS::IAM::Role")


def role_id(template: Template, name: str) -> str:
    (found,) = [k for k in roles(template) if k.startswith(f"GitHubOidc{name}")]
    return found


def policy_statements(template: Template, name: str) -> list[dict[str, Any]]:
    rid = role_id(template, name)
    return [st for p in template.find_resources("AWS::IAM::Policy").values()
            if {"Ref": rid} in p["Properties"]["Roles"] for st in p["Properties"]["PolicyDocument"]["Statement"]]


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


# --------------------------------------------------------------------------------------------------


def test_each_role_trusts_one_subject_of_the_account_provider_for_sts(template: Template) -> None:
    """GIVEN the construct with defaults WHEN synthesized THEN the deploy role trusts only tokens of this repository's
    jobs in the protected environment, the diff role only this repository's pull-request jobs, both for sts."""
    for name, sub in (("DeployRole", f"repo:{REPO}:environment:prod"), ("DiffRole", f"repo:{REPO}:pull_request")):
        trust = roles(template)[role_id(template, name)]["Properties"]["AssumeRolePolicyDocument"]
        assert trust["Statement"] == [{
            "Action": "sts:AssumeRoleWithWebIdentity", "Effect": "Allow",
            "Principal": {"Federated": PROVIDER_ARN},
            "Condition": {"StringEquals": {f"{GITHUB_ISSUER}:aud": "sts.amazonaws.com",
                                           f"{GITHUB_ISSUER}:sub": sub}},
        }], name
    # Imported by default: the account's one provider for GitHub's issuer is not created a second time.
    template.resource_count_is("AWS::IAM::OIDCProvider", 0)


def test_the_provider_is_created_when_asked() -> None:
    t = bare(create_provider=True)
    t.has_resource_properties("AWS::IAM::OIDCProvider", {
        "Url": f"https://{GITHUB_ISSUER}", "ClientIdList": ["sts.amazonaws.com"]})
    trust = roles(t)[role_id(t, "DeployRole")]["Properties"]["AssumeRolePolicyDocument"]
    (provider_id,) = t.find_resources("AWS::IAM::OIDCProvider")
    assert trust["Statement"][0]["Principal"] == {"Federated": {"Ref": provider_id}}


def test_the_diff_role_reads_templates_of_the_project_stacks_only(template: Template) -> None:
    (st,) = policy_statements(template, "DiffRole")
    assert st["Action"] == "cloudformation:GetTemplate" and st["Effect"] == "Allow"
    assert json.dumps(st["Resource"]).endswith(':stack/EksInference-*/*"]]}')


def test_the_deploy_role_assumes_the_bootstrap_roles_and_makes_preflight_reads(template: Template) -> None:
    statements = {st["Sid"]: st for st in policy_statements(template, "DeployRole")}
    assert set(statements) == {"AssumeCdkBootstrapRoles", "PreflightBootstrapVersion", "PreflightReads"}
    assume = statements["AssumeCdkBootstrapRoles"]
    assert sorted(as_list(assume["Action"])) == ["sts:AssumeRole", "sts:TagSession"]
    names = sorted(json.dumps(r).split(":role/cdk-hnb659fds-")[1].split("-role-")[0] for r in assume["Resource"])
    assert names == ["deploy", "file-publishing", "image-publishing", "lookup"]
    assert sorted(as_list(statements["PreflightReads"]["Action"])) == sorted(PREFLIGHT_READS)
    assert all(a.split(":")[1].startswith(("Describe", "Get", "List")) for a in PREFLIGHT_READS)
    assert statements["PreflightBootstrapVersion"]["Action"] == "ssm:GetParameter"
    template.has_resource_properties("AWS::IAM::Role", {"MaxSessionDuration": 3600})


def test_no_role_can_be_assumed_by_anything_but_a_web_identity(template: Template) -> None:
    for rid, role in roles(template).items():
        for st in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            assert set(st["Principal"]) == {"Federated"} and st["Action"] == "sts:AssumeRoleWithWebIdentity", rid


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"repository": "my-org/*"}, r"GitHubOidc repository: 'my-org/\*' is not owner/name; give the exact"),
    ({"repository": "eks-inference"}, r"GitHubOidc repository: 'eks-inference' is not owner/name"),
    ({"environment": "*"}, r"GitHubOidc environment: '\*' is not one GitHub environment name; give the exact"),
    ({"environment": "prod:x"}, r"GitHubOidc environment: 'prod:x' is not one GitHub environment name"),
    ({"create_provider": "yes"}, r"GitHubOidc create_provider: 'yes' is not true or false; write false"),
    ({"bootstrap_qualifier": "Bad_One"}, r"GitHubOidc bootstrap_qualifier: 'Bad_One' is not a CDK bootstrap"),
    ({"stack_name_prefix": "*"}, r"GitHubOidc stack_name_prefix: '\*' is not a stack name prefix"),
    ({"max_session": Duration.minutes(10)}, r"GitHubOidc max_session: 600 s is outside IAM's 1..12 hours"),
])
def test_validation_names_the_field_the_value_and_the_fix(kwargs: dict[str, Any], match: str) -> None:
    stack = Stack(App(), "Bare")
    with pytest.raises(ConfigError, match=match):
        GitHubOidc(stack, "GitHubOidc", **{"repository": REPO, "environment": "prod", **kwargs})
    assert not stack.node.children, "validation runs before any resource is created"


# --------------------------------------------------------------------------------------------------
# The workflows ask for the subjects the trusts name
# --------------------------------------------------------------------------------------------------


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def test_the_workflows_jobs_present_the_subjects_the_roles_trust() -> None:
    """GitHub builds ``sub`` from the job: ``environment:NAME`` when the job runs in an environment, else
    ``pull_request`` for a pull_request event. The deploy job runs in the environment the caller names, which is
    the config's environment name (the GitHubSpec default); the diff job runs in none, on pull requests."""
    deploy = workflow("deploy.yml")
    called = workflow("deploy-environment.yml")["jobs"]["deploy"]
    assert called["environment"] == "${{ inputs.environment }}"
    envs = [job["with"]["environment"] for job in deploy["jobs"].values()]
    assert envs == ["dev", "prod"]
    assert [subject(REPO, environment=e) for e in envs] == [f"repo:{REPO}:environment:dev",
                                                             f"repo:{REPO}:environment:prod"]
    pr = workflow("pull-request.yml")
    assert list(pr[True if True in pr else "on"]) == ["pull_request"]  # YAML 1.1 reads the key `on` as True
    assert "environment" not in pr["jobs"]["diff-deployed"]
    assert subject(REPO) == f"repo:{REPO}:pull_request"


# --------------------------------------------------------------------------------------------------
# Config: off by default, one block turns the stack on
# --------------------------------------------------------------------------------------------------


def test_config_has_no_github_roles_by_default() -> None:
    envs = cdk_context()["eks-inference:environments"]
    assert all(load_config(name, envs).github is None for name in envs)


@pytest.mark.parametrize(("block", "match"), [
    ({"repository": "my-org"}, r"github.repository: 'my-org' is not owner/name; give the exact repository"),
    ({"repository": REPO, "environment": "a/b"}, r"github.environment: 'a/b' is not one GitHub environment name"),
    ({"repository": REPO, "create_oidc_provider": 1}, r"github.create_oidc_provider: 1 is not true or false"),
    ({"repository": REPO, "role": "x"}, r"github: 'role' is not a known field; use one of create_oidc_provider"),
    ({}, r"github: 'repository' is missing; add repository"),
])
def test_config_refuses_a_bad_github_block(block: dict[str, Any], match: str) -> None:
    envs = cdk_context()["eks-inference:environments"]
    with pytest.raises(ConfigError, match=match):
        load_config("dev", {"dev": {**envs["dev"], "github": block}})


@pytest.fixture(scope="module")
def github_assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    def edit(env: dict[str, Any]) -> None:
        env["github"] = {"repository": REPO}

    return Assembly(synth_variant(tmp_path_factory.mktemp("cdk-out-github") / "dev", edit), "")


def test_a_github_block_synthesizes_the_roles_in_a_stack_of_their_own(github_assembly: Assembly) -> None:
    """GIVEN dev with ``github.repository`` WHEN the real app synthesizes it (cdk-nag included: a finding without a
    reason fails synth) THEN ``EksInference-dev-GitHub`` holds the roles, the deploy role trusting GitHub environment
    ``dev``, and outputs both ARNs for the workflows' variables."""
    assert "EksInference-dev-GitHub" in github_assembly.stack_names
    t = github_assembly.template("-GitHub")
    subs = sorted(st["Condition"]["StringEquals"][f"{GITHUB_ISSUER}:sub"]
                  for r in t["Resources"].values() if r["Type"] == "AWS::IAM::Role"
                  for st in r["Properties"]["AssumeRolePolicyDocument"]["Statement"])
    assert subs == [f"repo:{REPO}:environment:dev", f"repo:{REPO}:pull_request"]
    assert set(t["Outputs"]) >= {"DiffRoleArn", "DeployRoleArn"}
    assert not any(r["Type"] == "AWS::IAM::OIDCProvider" for r in t["Resources"].values())


def test_the_github_stack_is_clean_for_cfn_lint_and_checkov(github_assembly: Assembly, tmp_path: Path) -> None:
    import subprocess

    from tests.unit.test_checkov import CLOUDFORMATION_SKIPS, run_checkov

    path = github_assembly.path / "EksInference-dev-GitHub.template.json"
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / path.name).write_text(path.read_text())
    run_checkov(tmp_path, "cloudformation", CLOUDFORMATION_SKIPS)
