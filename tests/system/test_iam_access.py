"""What IAM decides for the synthesized policies: who may write what replicas load, and who may assume which role.

Requests are evaluated by :mod:`tests.system.iam` (the IAM User Guide's evaluation logic) against the roles' policies
and the model repository's bucket policy as `cdk synth` wrote them. Which condition keys S3 puts in each request
follows the S3 User Guide, "Enforce conditional writes on Amazon S3 buckets": ``s3:if-none-match`` is present when
the request carries ``If-None-Match``; ``s3:ObjectCreationOperation`` is true for the calls that create an object
(PutObject, CopyObject, CompleteMultipartUpload) and false for CreateMultipartUpload, UploadPart and UploadPartCopy,
which take no conditional header. The session tags EKS Pod Identity sets follow the EKS User Guide, "List of
session tags added by EKS Pod Identity".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.conftest import Assembly
from tests.system.cfn import resolve
from tests.system.iam import Request, decide, role_policies

ARTIFACT = "artifacts/minilm/v1/graviton-bf16-b32-s128-0123456789abcdef0123/w-0123456789ab/graph.pt"
MODEL = "models/minilm/v1/model.safetensors"
# (If-None-Match sent, s3:ObjectCreationOperation) of each S3 call that writes an object's bytes.
PUT = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}
PUT_UNCONDITIONAL = {"s3:ObjectCreationOperation": "true"}
UPLOAD_PART = {"s3:ObjectCreationOperation": "false"}
COPY_INTO = {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "elsewhere/object"}


class Inference:
    """The Inference stack's template with its roles and the model bucket, by what they are for."""

    def __init__(self, asm: Assembly) -> None:
        self.template = asm.template("-Inference")
        res = self.template["Resources"]
        self.roles = {r["Properties"]["Description"].split(":")[0]: rid for rid, r in res.items()
                      if r["Type"] == "AWS::IAM::Role" and "Description" in r["Properties"]}
        (self.bucket_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::S3::Bucket"
                             and "LoggingConfiguration" in r["Properties"]]
        (self.bucket_policy,) = [r["Properties"]["PolicyDocument"] for r in res.values()
                                 if r["Type"] == "AWS::S3::BucketPolicy"
                                 and r["Properties"]["Bucket"] == {"Ref": self.bucket_id}]

    def object_arn(self, key: str) -> str:
        return f"{resolve({'Fn::GetAtt': [self.bucket_id, 'Arn']})}/{key}"

    def s3(self, role: str, action: str, key: str, context: Mapping[str, str] | None = None) -> str:
        """IAM's decision on ``role`` calling ``action`` on object ``key`` of the model bucket."""
        rid = self.roles[role]
        req = Request(principal={"AWS": resolve({"Fn::GetAtt": [rid, "Arn"]})}, action=action,
                      resource=self.object_arn(key), context=dict(context or {}))
        return decide(req, identity=role_policies(self.template, rid), resource=[self.bucket_policy])

    def assume(self, role: str, tags: Mapping[str, str]) -> str:
        """IAM's decision on EKS Pod Identity assuming ``role`` with session tags ``tags``."""
        trust = self.template["Resources"][self.roles[role]]["Properties"]["AssumeRolePolicyDocument"]
        context = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
        verdicts = {decide(Request(principal={"Service": "pods.eks.amazonaws.com"}, action=action, context=context),
                           resource=[trust]) for action in ("sts:AssumeRole", "sts:TagSession")}
        return "allow" if verdicts == {"allow"} else "deny"


@pytest.fixture(scope="module")
def inference(assemblies: dict[str, Assembly]) -> Inference:
    return Inference(assemblies["dev"])


@pytest.mark.parametrize(("key", "context"), [
    (ARTIFACT, PUT), (ARTIFACT, PUT_UNCONDITIONAL), (ARTIFACT, UPLOAD_PART), (ARTIFACT, COPY_INTO),
    (f"{ARTIFACT.rsplit('/', 2)[0]}/manifest.json", PUT), (MODEL, PUT), ("models/minilm/v1/manifest.json", PUT),
    ("results/run-001/minilm-graviton/client-0.json", PUT),
])
def test_a_serving_pod_may_write_nothing_at_all(inference: Inference, key: str, context: dict[str, str]) -> None:
    """GIVEN the serving role (what a request that takes over a replica gets)
    WHEN it writes any object, conditionally or not, in any prefix
    THEN IAM refuses it, and it may still read what replicas load."""
    assert inference.s3("Serving pods", "s3:PutObject", key, context) != "allow"
    assert inference.s3("Serving pods", "s3:DeleteObject", key) != "allow"
    assert inference.s3("Serving pods", "s3:GetObject", ARTIFACT) == "allow"
    assert inference.s3("Serving pods", "s3:GetObject", MODEL) == "allow"


def test_the_compile_role_adds_artifacts_only_create_only_and_never_touches_weights(inference: Inference) -> None:
    """GIVEN the compile Jobs' role
    WHEN it writes
    THEN a conditional PUT or the parts of a multipart upload under artifacts/ are allowed; an unconditional PUT (or
    completion) and a server-side copy there are denied by the bucket itself; nothing under models/ is allowed."""
    role = "Compile Jobs"
    assert inference.s3(role, "s3:PutObject", ARTIFACT, PUT) == "allow"
    assert inference.s3(role, "s3:PutObject", ARTIFACT, UPLOAD_PART) == "allow"
    assert inference.s3(role, "s3:PutObject", ARTIFACT, PUT_UNCONDITIONAL) == "deny"
    assert inference.s3(role, "s3:PutObject", ARTIFACT, COPY_INTO) == "deny"
    assert inference.s3(role, "s3:PutObject", MODEL, PUT) != "allow"
    assert inference.s3(role, "s3:DeleteObject", ARTIFACT) != "allow"


@pytest.mark.parametrize(("role", "keys"), [
    ("Serving pods", ["models/minilm/v1/manifest.json", f"{ARTIFACT.rsplit('/', 2)[0]}/manifest.json"]),
    ("Compile Jobs", ["models/minilm/v1/manifest.json", f"{ARTIFACT.rsplit('/', 2)[0]}/manifest.json",
                      f"{ARTIFACT.rsplit('/', 2)[0]}/.publishing-0"]),
])
def test_a_role_may_list_exactly_the_keys_it_waits_for(inference: Inference, role: str, keys: list[str]) -> None:
    """GIVEN a role that waits for objects another role publishes (a replica's weights and artifact, the compile step's
    weights and lease)
    WHEN it lists with the key as prefix, and when S3 checks ListBucket for a GET with no ``s3:prefix`` in the request
    THEN the listing is allowed (so the code can tell "absent" from "denied"), while the bare check is not: S3 may
    answer the GET of a missing key with 403 rather than 404 (GetObject, "Permissions"), and the code must take both.
    The role may delete none of them."""
    rid = inference.roles[role]
    bucket = resolve({"Fn::GetAtt": [inference.bucket_id, "Arn"]})

    def list_bucket(context: Mapping[str, str]) -> str:
        req = Request(principal={"AWS": resolve({"Fn::GetAtt": [rid, "Arn"]})}, action="s3:ListBucket",
                      resource=bucket, context=dict(context))
        return decide(req, identity=role_policies(inference.template, rid), resource=[inference.bucket_policy])

    for key in keys:
        assert list_bucket({"s3:prefix": key}) == "allow"
        assert inference.s3(role, "s3:GetObject", key) == "allow"
        assert inference.s3(role, "s3:DeleteObject", key) != "allow"
    assert list_bucket({}) != "allow"
    assert list_bucket({"s3:prefix": "results/"}) != "allow"


def test_the_bucket_refuses_an_overwrite_even_to_an_identity_allowed_everything(inference: Inference) -> None:
    """GIVEN a principal of the account whose own policy allows s3:* (an administrator, a CI role)
    WHEN it writes under models/ or artifacts/ without If-None-Match, or copies into them
    THEN the bucket's explicit Deny wins (IAM evaluation: an explicit deny in any policy); with If-None-Match it may
    create objects, and under results/ nothing changes."""
    admin = [{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}]

    def put(key: str, context: Mapping[str, str]) -> str:
        req = Request(principal={"AWS": "arn:aws:iam::111122223333:role/admin"}, action="s3:PutObject",
                      resource=inference.object_arn(key), context=dict(context))
        return decide(req, identity=admin, resource=[inference.bucket_policy])

    for key in (MODEL, ARTIFACT):
        assert put(key, PUT_UNCONDITIONAL) == "deny" and put(key, COPY_INTO) == "deny"
        assert put(key, PUT) == "allow" and put(key, UPLOAD_PART) == "allow"
    assert put("results/run-001/report.json", PUT_UNCONDITIONAL) == "allow"


def _cluster_arn(inference: Inference) -> Any:
    trust = inference.template["Resources"][inference.roles["Serving pods"]]["Properties"]["AssumeRolePolicyDocument"]
    return resolve(trust["Statement"][0]["Condition"]["StringEquals"]["aws:RequestTag/eks-cluster-arn"])


@pytest.mark.parametrize(("role", "service_account"), [
    ("Serving pods", "serve"), ("Compile Jobs", "compile"), ("Load-test pods", "loadtest"),
])
def test_pod_identity_hands_each_role_only_to_its_own_service_account(inference: Inference, role: str,
                                                                       service_account: str) -> None:
    """GIVEN each Pod Identity role of the Inference stack
    WHEN EKS Pod Identity assumes it for a pod, with the session tags of that pod
    THEN only its own service account on this cluster gets it: another service account, another namespace,
    another cluster, or an association with session tags turned off is refused."""
    trust = inference.template["Resources"][inference.roles[role]]["Properties"]["AssumeRolePolicyDocument"]
    namespace = resolve(trust["Statement"][0]["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"])
    own = {"eks-cluster-arn": _cluster_arn(inference), "kubernetes-namespace": namespace,
           "kubernetes-service-account": service_account}
    assert inference.assume(role, own) == "allow"
    others = [sa for sa in ("serve", "compile", "loadtest", "default", "ray-head") if sa != service_account]
    for other in others:
        assert inference.assume(role, {**own, "kubernetes-service-account": other}) == "deny"
    assert inference.assume(role, {**own, "kubernetes-namespace": "default"}) == "deny"
    assert inference.assume(role, {**own, "eks-cluster-arn": "arn:aws:eks:us-west-2:111122223333:cluster/other"}) \
        == "deny"
    assert inference.assume(role, {}) == "deny"
