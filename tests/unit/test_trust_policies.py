"""Every trust and key policy of every synthesized stack binds each service to this deployment.

The test walks all ``AWS::IAM::Role`` trust policies, ``AWS::KMS::Key`` key policies and the Allow statements of
``AWS::S3::BucketPolicy`` and ``AWS::SNS::TopicPolicy`` in the dev and prod assemblies, rather than a list of known
roles: a role added later with a bare service trust fails here until its service's condition (or a written
exemption) is added to the tables below.
What the conditions do when IAM evaluates them is tests/system/test_iam_access.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from eks_inference.constructs.cluster_logging import AGENT_ADDON, AGENT_NAMESPACE
from tests.conftest import Assembly
from tests.system.cfn import resolve

POD_IDENTITY_TAGS = ("aws:requesttag/eks-cluster-arn", "aws:requesttag/kubernetes-namespace",
                     "aws:requesttag/kubernetes-service-account")

EXEMPT = {
    "lambda.amazonaws.com": "Lambda documents no source condition for an execution role's trust; which function "
                            "runs with the role is decided by iam:PassRole. These roles belong to aws-cdk-lib's "
                            "custom-resource providers.",
    "ec2.amazonaws.com": "EC2 assumes an instance profile's role with no source context; which instances get the role "
                         "is decided by iam:PassRole, and IMDSv2 with a hop limit of 1 keeps pods from it.",
}
"""Service principals whose trust carries no condition, each with the reason."""


@dataclass(frozen=True)
class Found:
    """One policy statement and where it was found."""

    where: str
    kind: str
    """``trust`` (a role's trust policy) or ``resource`` (a key or bucket policy)."""
    statement: Mapping[str, Any]
    account: str
    region: str
    templates: Mapping[str, Mapping[str, Any]]


def _conditions(f: Found) -> dict[str, dict[str, list[str]]]:
    """``{operator: {key: [values]}}`` with operators and keys lower-cased (IAM compares them so), values resolved."""
    out: dict[str, dict[str, list[str]]] = {}
    for op, keys in resolve(f.statement.get("Condition") or {}, account=f.account, region=f.region).items():
        for key, values in keys.items():
            out.setdefault(op.lower(), {})[key.lower()] = [str(v) for v in
                                                           (values if isinstance(values, list) else [values])]
    return out


def _one(conds: Mapping[str, Mapping[str, list[str]]], ops: tuple[str, ...], key: str) -> str | None:
    found = [v for op in ops for v in conds.get(op, {}).get(key, [])]
    return found[0] if len(found) == 1 else None


def _raw(f: Found, key: str) -> Any:
    """The unresolved value of condition ``key`` (any operator), or None."""
    return next((v for keys in (f.statement.get("Condition") or {}).values() for k, v in keys.items()
                 if k.lower() == key), None)


def _refers_to(value: Any, f: Found, resource_type: str) -> bool:
    """``value`` is ``Fn::GetAtt [X, Arn]`` of a ``resource_type`` resource, directly or through the output of the
    stack that holds it."""
    if isinstance(value, Mapping) and "Fn::GetStackOutput" in value:
        ref = value["Fn::GetStackOutput"]
        value = f.templates[ref["StackName"]]["Outputs"][ref["OutputName"]]["Value"]
    if isinstance(value, Mapping) and "Fn::GetAtt" in value:
        rid, attr = value["Fn::GetAtt"]
        return attr == "Arn" and any(t["Resources"].get(rid, {}).get("Type") == resource_type
                                     for t in f.templates.values())
    return False


def _source(arn_prefix: str, resource_type: str | None = None) -> Callable[[Found], list[str]]:
    """aws:SourceAccount is this account and aws:SourceArn an ARN that starts with ``arn_prefix`` (or the ARN of a
    ``resource_type`` resource of this deployment)."""
    def check(f: Found) -> list[str]:
        conds = _conditions(f)
        problems = []
        if _one(conds, ("stringequals",), "aws:sourceaccount") != f.account:
            problems.append(f"aws:SourceAccount is not {f.account}")
        want = "arn:aws:" + arn_prefix.format(region=f.region, account=f.account)
        arn = _one(conds, ("arnlike", "arnequals"), "aws:sourcearn")
        if not (resource_type and _refers_to(_raw(f, "aws:sourcearn"), f, resource_type)) and (
                arn is None or not arn.startswith(want)):
            problems.append(f"aws:SourceArn {arn!r} is not an ARN under {want}")
        return problems
    return check


def _pod_identity(f: Found) -> list[str]:
    conds = _conditions(f).get("stringequals", {})
    problems = [f"no StringEquals on {tag}" for tag in POD_IDENTITY_TAGS if len(conds.get(tag, [])) != 1]
    if problems:
        return problems
    if not _refers_to(_raw(f, POD_IDENTITY_TAGS[0]), f, "AWS::EKS::Cluster"):
        problems.append(f"eks-cluster-arn {_raw(f, POD_IDENTITY_TAGS[0])!r} is not this cluster's ARN")
    for tag in POD_IDENTITY_TAGS[1:]:
        value = conds[tag][0]
        if not value or any(c in value for c in "*?$"):
            problems.append(f"{tag} {value!r} is not one Kubernetes name")
    if "sts:TagSession" not in f.statement.get("Action", []):
        problems.append("sts:TagSession is not allowed, so the tags never reach the conditions")
    return problems


def _logs_key(f: Found) -> list[str]:
    arn = _one(_conditions(f), ("arnequals", "arnlike"), "kms:encryptioncontext:aws:logs:arn")
    prefix = f"arn:aws:logs:{f.region}:{f.account}:log-group:"
    if arn is None or not arn.startswith(prefix) or "*" in arn or "?" in arn:
        return [f"kms:EncryptionContext:aws:logs:arn {arn!r} is not one log group of this account"]
    return []


ADDON_NAMESPACES = {AGENT_ADDON: AGENT_NAMESPACE}
"""Where each add-on with Pod Identity associations runs its pods (the add-on's documentation)."""
TRUST_RULES: dict[str, Callable[[Found], list[str]]] = {
    "pods.eks.amazonaws.com": _pod_identity,
    "eks.amazonaws.com": _source("eks:{region}:{account}:cluster/"),
    "vpc-flow-logs.amazonaws.com": _source("ec2:{region}:{account}:vpc-flow-log/"),
    "scraper.aps.amazonaws.com": _source("aps:{region}:{account}:scraper/"),
}
"""What each service principal's trust must carry (their docs are cited in eks_inference/constructs/trust.py)."""
RESOURCE_RULES: dict[str, Callable[[Found], list[str]]] = {
    "logs.{region}.amazonaws.com": _logs_key,
    "logging.s3.amazonaws.com": _source("s3:::", "AWS::S3::Bucket"),
    "aps.amazonaws.com": _source("aps:{region}:{account}:workspace/", "AWS::APS::Workspace"),
}
"""What each service principal's Allow in a key or bucket policy must carry."""


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def statements(asm: Assembly) -> Iterator[Found]:
    """Every statement of every trust, key and bucket policy of the assembly."""
    templates = {name: asm.template(name) for name in asm.stack_names}
    for name, template in templates.items():
        account, region = asm.manifest["artifacts"][name]["environment"].removeprefix("aws://").split("/")
        for rid, res in template["Resources"].items():
            props = res.get("Properties", {})
            doc, kind = {
                "AWS::IAM::Role": (props.get("AssumeRolePolicyDocument"), "trust"),
                "AWS::KMS::Key": (props.get("KeyPolicy"), "resource"),
                "AWS::S3::BucketPolicy": (props.get("PolicyDocument"), "resource"),
                "AWS::SNS::TopicPolicy": (props.get("PolicyDocument"), "resource"),
            }.get(res["Type"], (None, ""))
            for st in _list((doc or {}).get("Statement", [])):
                yield Found(f"{name}/{rid} ({res['Type']})", kind, st, account, region, templates)


def problems(f: Found) -> list[str]:
    """What is missing from one statement, in words; empty when it binds every principal it admits."""
    st = f.statement
    if st["Effect"] != "Allow":
        return []
    principal = st.get("Principal", {})
    if principal == "*" or "Federated" in principal:
        return [f"trusts {principal!r}"]
    found: list[str] = []
    rules = TRUST_RULES if f.kind == "trust" else {k.format(region=f.region): v for k, v in RESOURCE_RULES.items()}
    for service in _list(principal.get("Service", [])):
        if service in EXEMPT:
            continue
        rule = rules.get(service)
        if rule is None:
            found.append(f"admits {service}, for which this test has no rule: add the condition its docs give (or an "
                         "exemption with its reason) to the tables above")
        else:
            found += [f"{service}: {p}" for p in rule(f)]
    roles = {rid for t in f.templates.values() for rid, r in t["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    for aws in _list(principal.get("AWS", [])):
        if f.kind == "resource" and resolve(aws, account=f.account) == f"arn:aws:iam::{f.account}:root":
            continue  # the key's administration stays with IAM in this account (aws-cdk-lib's default key policy)
        if f.kind == "trust" and isinstance(aws, Mapping) and aws.get("Fn::GetAtt", [""])[0] in roles:
            if _one(_conditions(f), ("stringequals", "stringlike"), "sts:externalid") is None:
                found.append(f"role {aws['Fn::GetAtt'][0]} may assume it without sts:ExternalId")
            continue
        found.append(f"admits the AWS principal {resolve(aws)!r} unconditionally")
    return found


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_trust_and_key_policy_binds_each_service_to_this_deployment(assemblies: dict[str, Assembly],
                                                                          env_name: str) -> None:
    """GIVEN every stack `cdk synth` writes for the environment
    WHEN every statement of every trust, key and bucket policy is walked
    THEN each Allow to a service carries the condition that binds it to this deployment (or a written exemption),
    and each role-to-role trust carries an external id."""
    found = list(statements(assemblies[env_name]))
    failures = [f"{f.where}: {p}" for f in found for p in problems(f)]
    assert not failures, "\n".join(failures)
    # A walk that saw nothing would pass too: it met every kind of statement this finding is about.
    services = {s for f in found if isinstance(f.statement.get("Principal"), Mapping)
                for s in _list(f.statement["Principal"].get("Service", []))}
    region = found[0].region
    assert {"pods.eks.amazonaws.com", "scraper.aps.amazonaws.com", "eks.amazonaws.com", "vpc-flow-logs.amazonaws.com",
            f"logs.{region}.amazonaws.com", "logging.s3.amazonaws.com"} <= services
    assert sum(f.kind == "trust" for f in found) >= 8


def test_the_walk_refuses_a_bare_service_trust() -> None:
    """GIVEN a role that trusts EKS Pod Identity with no condition (as every Pod Identity role did before)
    WHEN the walk checks it
    THEN it names the three missing session tags; an unknown service is refused until the tables know it."""
    def found(principal: dict[str, Any]) -> Found:
        st = {"Effect": "Allow", "Principal": principal, "Action": ["sts:AssumeRole", "sts:TagSession"]}
        return Found("S/Role", "trust", st, "111122223333", "us-west-2", {"S": {"Resources": {}}})

    assert problems(found({"Service": "pods.eks.amazonaws.com"})) == [
        f"pods.eks.amazonaws.com: no StringEquals on {tag}" for tag in POD_IDENTITY_TAGS]
    (unknown,) = problems(found({"Service": "sagemaker.amazonaws.com"}))
    assert "sagemaker.amazonaws.com" in unknown and "no rule" in unknown
    assert problems(found({"Service": "lambda.amazonaws.com"})) == []


def test_pod_identity_roles_trust_exactly_the_service_account_their_association_binds(
        assemblies: dict[str, Assembly]) -> None:
    """GIVEN the dev assembly
    WHEN each Pod Identity association is compared with the trust of the role it binds
    THEN the trust names the association's namespace and service account, and no role is bound twice."""
    asm = assemblies["dev"]
    bound: dict[str, tuple[str, str]] = {}
    trusted: dict[str, tuple[str, str]] = {}
    for name in asm.stack_names:
        for rid, res in asm.template(name)["Resources"].items():
            p = res.get("Properties", {})
            if res["Type"] == "AWS::EKS::PodIdentityAssociation":
                assert p["RoleArn"]["Fn::GetAtt"][0] not in bound
                bound[p["RoleArn"]["Fn::GetAtt"][0]] = (p["Namespace"], p["ServiceAccount"])
            elif res["Type"] == "AWS::EKS::Addon":  # an add-on's associations are in the add-on's own namespace
                for a in p.get("PodIdentityAssociations", []):
                    assert a["RoleArn"]["Fn::GetAtt"][0] not in bound
                    bound[a["RoleArn"]["Fn::GetAtt"][0]] = (ADDON_NAMESPACES[p["AddonName"]], a["ServiceAccount"])
            elif res["Type"] == "AWS::IAM::Role":
                for st in p["AssumeRolePolicyDocument"]["Statement"]:
                    if st["Principal"] == {"Service": "pods.eks.amazonaws.com"}:
                        c = st["Condition"]["StringEquals"]
                        trusted[rid] = (c["aws:RequestTag/kubernetes-namespace"],
                                        c["aws:RequestTag/kubernetes-service-account"])
    assert trusted and trusted == bound
