"""The GCS token sync as `cdk synth` writes prod: what IAM lets its role do (tests/system/iam.py, the IAM User Guide's
evaluation logic), where its pod may connect under the enforced NetworkPolicies (tests/system/netpol.py), what Pod
Security admission says of it (tests/system/pod_security.py), and that dev, without GCS fault tolerance, has none.

Secrets Manager decrypts with the secret's key on the caller's behalf, so KMS sees ``kms:ViaService`` =
``secretsmanager.<region>.amazonaws.com`` and the encryption context ``SecretARN`` (Secrets Manager User Guide,
"Secret encryption and decryption in AWS Secrets Manager"; AWS KMS Developer Guide, "kms:ViaService").
"""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.k8s.gcs_token_chart import ROLE, SERVICE_ACCOUNT
from eks_inference.k8s.ray_service import GCS_STORE_SECRET
from eks_inference.k8s.serving_chart import NAMESPACE
from tests.conftest import Assembly
from tests.system.cfn import MANIFEST_TYPE, manifest_objects, resolve
from tests.system.iam import Request, decide, role_policies
from tests.system.netpol import Endpoint, Policies
from tests.system.pod_security import enforce_level, forbidden
from tests.system.synthesized import objects

REGION = "us-west-2"
SYNC_POD = Endpoint("gcs-token-sync pod", "10.0.64.50", NAMESPACE, {})
API_SERVICE = Endpoint("the kubernetes Service (ClusterIP)", "172.20.0.1")
POD_IDENTITY_AGENT = Endpoint("eks-pod-identity-agent (on the node)", "169.254.170.23")
SECRETS_MANAGER = Endpoint("Secrets Manager's public endpoint (through the NAT gateway)", "52.94.224.10")
IMDS = Endpoint("the instance metadata service", "169.254.169.254")
COREDNS = Endpoint("coredns", "10.0.120.10", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53})
STRANGER = Endpoint("a pod in another namespace", "10.0.120.30", "default", {"app": "curl"})
IN_NAMESPACE = Endpoint("another pod of the serving namespace", "10.0.64.60", NAMESPACE, {"app": "debug"})


class Prod:
    def __init__(self, asm: Assembly) -> None:
        self.asm = asm
        self.template = asm.template("-Inference")
        res = self.template["Resources"]
        (self.role_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::IAM::Role"
                           and r["Properties"].get("Description", "").startswith("GCS token sync")]
        (self.secret_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::SecretsManager::Secret"]
        (self.key_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::KMS::Key"
                          and "GCS" in r["Properties"].get("Description", "")]
        self.secret_arn = resolve({"Ref": self.secret_id})
        self.key_arn = resolve({"Fn::GetAtt": [self.key_id, "Arn"]})
        self.key_policy = res[self.key_id]["Properties"]["KeyPolicy"]

    def may(self, action: str, resource: str, context: dict[str, str] | None = None) -> str:
        req = Request(principal={"AWS": resolve({"Fn::GetAtt": [self.role_id, "Arn"]})}, action=action,
                      resource=resource, context=context or {})
        resource_docs = [self.key_policy] if action.startswith("kms:") else []
        return decide(req, identity=role_policies(self.template, self.role_id), resource=resource_docs)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in objects(self.asm, kind) if o["metadata"]["name"].startswith(ROLE)]


@pytest.fixture(scope="module")
def prod(assemblies: dict[str, Assembly]) -> Prod:
    return Prod(assemblies["prod"])


def test_the_role_reads_only_the_auth_token(prod: Prod) -> None:
    """GIVEN the sync's Pod Identity role WHEN it calls Secrets Manager and KMS THEN it reads the one secret, and the
    key decrypts for it only through Secrets Manager for that secret."""
    assert prod.may("secretsmanager:GetSecretValue", prod.secret_arn) == "allow"
    other = "arn:aws:secretsmanager:us-west-2:111122223333:secret:someone-else-AbCdEf"
    assert prod.may("secretsmanager:GetSecretValue", other) == "implicit"
    for action in ("secretsmanager:PutSecretValue", "secretsmanager:DescribeSecret", "secretsmanager:ListSecrets",
                   "secretsmanager:UpdateSecret", "secretsmanager:DeleteSecret"):
        assert prod.may(action, prod.secret_arn) == "implicit", action
    via = {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com",
           "kms:EncryptionContext:SecretARN": prod.secret_arn}
    assert prod.may("kms:Decrypt", prod.key_arn, via) == "allow"
    assert prod.may("kms:Decrypt", prod.key_arn, {**via, "kms:EncryptionContext:SecretARN": other}) == "implicit"
    assert prod.may("kms:Decrypt", prod.key_arn, {k: v for k, v in via.items() if k != "kms:ViaService"}) \
        == "implicit"
    assert prod.may("kms:Encrypt", prod.key_arn, via) == "implicit"


def test_pod_identity_hands_the_role_to_the_sync_service_account_only(prod: Prod) -> None:
    trust = prod.template["Resources"][prod.role_id]["Properties"]["AssumeRolePolicyDocument"]
    tags = resolve(trust["Statement"][0]["Condition"]["StringEquals"])
    assert tags["aws:RequestTag/kubernetes-namespace"] == NAMESPACE
    assert tags["aws:RequestTag/kubernetes-service-account"] == SERVICE_ACCOUNT
    (assoc,) = [r["Properties"] for r in prod.template["Resources"].values()
                if r["Type"] == "AWS::EKS::PodIdentityAssociation"
                and r["Properties"]["ServiceAccount"] == SERVICE_ACCOUNT]
    assert assoc["Namespace"] == NAMESPACE
    assert assoc["RoleArn"] == {"Fn::GetAtt": [prod.role_id, "Arn"]}


def test_the_job_role_and_secret_name_agree_with_the_ray_services(prod: Prod) -> None:
    (job,), (role,) = prod.of_kind("Job"), prod.of_kind("Role")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--name") + 1] == GCS_STORE_SECRET == role["rules"][0]["resourceNames"][0]
    for rs in objects(prod.asm, "RayService"):
        ref = rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == GCS_STORE_SECRET
        assert args[args.index("--key") + 1] == ref["key"]
    # The secret's ARN (a Ref to the stack's secret, resolved at deploy), never its value.
    assert args[args.index("--secret-id") + 1] == prod.secret_arn


def test_its_pod_reaches_the_api_server_secrets_manager_and_its_credentials_and_nothing_else(prod: Prod) -> None:
    (job,) = prod.of_kind("Job")
    pod = Endpoint(SYNC_POD.name, SYNC_POD.ip, NAMESPACE, job["spec"]["template"]["metadata"]["labels"])
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in objects(prod.asm, "Namespace")}
    policies = Policies(objects(prod.asm, "NetworkPolicy"), {**namespaces, "kube-system": {}, "default": {}})
    assert policies.allows(pod, API_SERVICE, 443)
    assert policies.allows(pod, SECRETS_MANAGER, 443)
    assert policies.allows(pod, POD_IDENTITY_AGENT, 80)
    assert policies.allows(pod, COREDNS, 53, "UDP")
    assert not policies.allows(pod, IMDS, 80)
    assert not policies.allows(pod, API_SERVICE, 6443)
    assert not policies.allows(pod, IN_NAMESPACE, 8000)
    for other in (STRANGER, IN_NAMESPACE):
        assert not policies.allows(other, pod, 8080)
    # The other pods of the namespace do not get the API server from its policy.
    assert not policies.allows(IN_NAMESPACE, API_SERVICE, 443)


def test_its_pods_pass_the_restricted_standard_and_are_admitted(prod: Prod) -> None:
    (job,), (cron,) = prod.of_kind("Job"), prod.of_kind("CronJob")
    (ns,) = [n for n in objects(prod.asm, "Namespace") if n["metadata"]["name"] == NAMESPACE]
    level = enforce_level(ns["metadata"].get("labels"))
    for template in (job["spec"]["template"], cron["spec"]["jobTemplate"]["spec"]["template"]):
        assert forbidden(template["metadata"], template["spec"], "restricted") == []
        assert forbidden(template["metadata"], template["spec"], level) == []


def test_dev_without_gcs_fault_tolerance_renders_none_of_it(assemblies: dict[str, Assembly]) -> None:
    dev = assemblies["dev"]
    names = {o["metadata"]["name"] for o in objects(dev) if "metadata" in o}
    assert not any(n.startswith(ROLE) for n in names)
    assert not [r for r in dev.template("-Inference")["Resources"].values()
                if r["Type"] in ("AWS::SecretsManager::Secret", "AWS::ElastiCache::ReplicationGroup")]


def test_the_summary_counts_it_neither_as_a_load_test_nor_as_a_compile_job(prod: Prod) -> None:
    from pathlib import Path

    from eks_inference.summary import summarize

    s = summarize(Path(prod.asm.path))
    assert not [j for j in (*s.jobs, *s.compile_jobs) if j.startswith(ROLE)]
    assert s.compile_jobs


def test_its_manifest_waits_for_its_pod_identity_and_the_role_policy(prod: Prod) -> None:
    """A pod admitted before its Pod Identity association exists never gets credentials (the EKS Pod Identity webhook
    mutates pods only at admission): CloudFormation must create the association and the policy first."""
    res = prod.template["Resources"]
    (manifest,) = [r for r in res.values() if r["Type"] == MANIFEST_TYPE
                   and any(o["kind"] == "Job" and o["metadata"]["name"].startswith(ROLE) for o in manifest_objects(r))]
    (assoc_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::EKS::PodIdentityAssociation"
                   and r["Properties"]["ServiceAccount"] == SERVICE_ACCOUNT]
    (policy_id,) = [rid for rid, r in res.items() if r["Type"] == "AWS::IAM::Policy"
                    and {"Ref": prod.role_id} in r["Properties"]["Roles"]]
    assert {assoc_id, policy_id} <= set(manifest.get("DependsOn", []))
    # The RayServices are applied after it, so that their heads usually find the Secret already there.
    (manifest_id,) = [rid for rid, r in res.items() if r is manifest]
    services = [r for r in res.values() if r["Type"] == MANIFEST_TYPE
                and any(o["kind"] == "RayService" for o in manifest_objects(r))]
    assert services and all(manifest_id in r.get("DependsOn", []) for r in services)
