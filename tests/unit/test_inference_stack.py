"""InferenceStack: model repository, per-processor images, scoped pod identities, charts on the cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Match, Template

from eks_inference.config import Processor
from eks_inference.k8s.serving_chart import compile_hint
from eks_inference.serving.serve_config import render_serve_config
from eks_inference.summary import _flatten, _manifest_objects
from tests.conftest import Assembly
from tests.unit.k8s_support import config


def template(assemblies: dict[str, Assembly], env_name: str = "dev") -> Template:
    return Template.from_json(assemblies[env_name].template("-Inference"))


def test_bucket_is_private_encrypted_versioned_logged(assemblies: dict[str, Assembly]) -> None:
    t = template(assemblies)
    buckets = t.find_resources("AWS::S3::Bucket", {"Properties": {"LoggingConfiguration": Match.any_value()}})
    (bucket_id, bucket), = buckets.items()
    props = bucket["Properties"]
    (enc,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert enc["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms" and enc["BucketKeyEnabled"] is True
    assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-load-test-results"]["Prefix"] == "results/"
    assert rules["expire-load-test-results"]["ExpirationInDays"] == 90
    t.has_resource_properties("AWS::S3::BucketPolicy", {
        "Bucket": {"Ref": bucket_id},
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])},
    })
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def _role_policy(t: Template, role_description: str) -> list[dict[str, Any]]:
    roles = t.find_resources("AWS::IAM::Role", {"Properties": {"Description": Match.string_like_regexp(
        role_description)}})
    (role_id, role), = roles.items()
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    (policy,) = [p for p in t.find_resources("AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    return policy["Properties"]["PolicyDocument"]["Statement"]


def _prefixes(statement: dict[str, Any]) -> set[str]:
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return {m for r in resources for m in re.findall(r"/([a-z]+)/\*", json.dumps(r))}


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_serving_pods_only_read_what_they_load(assemblies: dict[str, Assembly], env_name: str) -> None:
    """GIVEN the serving role of each environment
    WHEN every policy attached to it is read
    THEN it may list, get and decrypt under models/ and artifacts/, and write nothing anywhere: no action that
    creates, replaces or deletes an object, and no data key to encrypt one."""
    t = template(assemblies, env_name)
    st = {s["Sid"]: s for s in _role_policy(t, "^Serving pods")}
    assert set(st) == {"ListPrefixes", "ReadPrefixes", "DecryptObjects"}
    assert st["ReadPrefixes"]["Action"] == "s3:GetObject" and _prefixes(st["ReadPrefixes"]) == {"models", "artifacts"}
    assert st["ListPrefixes"]["Condition"] == {"StringLike": {"s3:prefix": ["artifacts/*", "models/*"]}}
    (role_id,) = t.find_resources("AWS::IAM::Role", {"Properties": {"Description": Match.string_like_regexp(
        "^Serving pods")}})
    role = t.to_json()["Resources"][role_id]["Properties"]
    assert not role.get("ManagedPolicyArns") and not role.get("Policies")
    actions = {a for p in t.find_resources("AWS::IAM::Policy").values() if {"Ref": role_id} in p["Properties"]["Roles"]
               for s in p["Properties"]["PolicyDocument"]["Statement"]
               for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"}


def test_only_the_compile_jobs_may_add_artifacts(assemblies: dict[str, Assembly]) -> None:
    """GIVEN the compile role
    WHEN its policy is read
    THEN it reads models/ and writes under artifacts/ only (its own failed multipart uploads it may abort); the bucket
    makes every such write create-only (test_model_repository)."""
    st = {s["Sid"]: s for s in _role_policy(template(assemblies), "^Compile Jobs")}
    assert set(st) == {"ListPrefixes", "ReadPrefixes", "DecryptObjects", "WritePrefixes", "EncryptObjects"}
    assert sorted(st["WritePrefixes"]["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert _prefixes(st["WritePrefixes"]) == {"artifacts"} and _prefixes(st["ReadPrefixes"]) == {"models", "artifacts"}


def test_load_test_pods_write_only_results(assemblies: dict[str, Assembly]) -> None:
    st = {s["Sid"]: s for s in _role_policy(template(assemblies), "^Load-test pods")}
    assert _prefixes(st["WritePrefixes"]) == {"results"} and _prefixes(st["ReadPrefixes"]) == {"results"}
    # `loadtest run --verify` reads each model's manifest and stored reference outputs, never the weights.
    reads = json.dumps(st["ReadModelManifestsAndReferences"]["Resource"])
    assert st["ReadModelManifestsAndReferences"]["Action"] == "s3:GetObject"
    assert sorted(re.findall(r"/models/[^\"]*", reads)) == ["/models/*/.references/*", "/models/*/manifest.json"]
    assert st["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}
    assert set(st) == {"ListPrefixes", "ReadPrefixes", "DecryptObjects", "WritePrefixes", "EncryptObjects",
                       "ListModels", "ReadModelManifestsAndReferences"}


def test_pod_identity_associations(assemblies: dict[str, Assembly]) -> None:
    t = template(assemblies)
    for sa, ns in (("serve", "eks-inference"), ("loadtest", "eks-inference-loadtest"), ("compile", "eks-inference")):
        t.has_resource_properties("AWS::EKS::PodIdentityAssociation", {"Namespace": ns, "ServiceAccount": sa})


def _docker_images(asm: Assembly) -> dict[str, Any]:
    (assets,) = list(asm.path.glob("*-Inference.assets.json"))
    return json.loads(assets.read_text())["dockerImages"]


def test_one_image_asset_per_platform(assemblies: dict[str, Assembly], run_assembly: Assembly) -> None:
    def by_file(asm: Assembly) -> dict[str, str | None]:
        return {img["source"]["dockerFile"]: img["source"].get("platform") for img in _docker_images(asm).values()}

    serving = {"model_images/graviton/Dockerfile": "linux/arm64", "model_images/inferentia2/Dockerfile": "linux/amd64"}
    # The load-test image is built only for an environment that asks for a run.
    assert by_file(assemblies["dev"]) == serving
    assert by_file(run_assembly) == {**serving, "model_images/loadtest/Dockerfile": "linux/amd64"}


def test_image_context_holds_only_what_images_need(run_assembly: Assembly) -> None:
    asm = run_assembly  # dev with a load-test run: the serving images and the load-test image
    assert len(_docker_images(asm)) == 3
    for img in _docker_images(asm).values():
        ctx = asm.path / img["source"]["directory"]
        names = {str(p.relative_to(ctx)) for p in ctx.rglob("*")}
        assert "eks_inference/serving" in names or "eks_inference/loadgen" in names
        for banned in (".venv", "node_modules", "cdk.out", "tests", "eks_inference/stacks", "eks_inference/k8s",
                       "eks_inference/constructs", ".git"):
            assert banned not in names, f"{banned} leaked into the {img['source']['dockerFile']} context"
        assert sum(p.stat().st_size for p in ctx.rglob("*") if p.is_file()) < 5 * 2**20


def _manifests(asm: Assembly) -> list[dict[str, Any]]:
    t = asm.template("-Inference")
    objs = []
    for res in t["Resources"].values():
        if res["Type"] == "Custom::AWSCDK-EKS-KubernetesResource":
            objs += json.loads(_flatten(res["Properties"]["Manifest"]) or "[]")
    return objs


def test_charts_are_applied_by_this_stack_after_the_operator(assemblies: dict[str, Assembly]) -> None:
    """Ordering in full (associations, add-ons, images) is tests/system/test_deploy_order.py's."""
    asm = assemblies["dev"]
    kinds = sorted({o["kind"] for o in _manifests(asm)})
    assert kinds == ["Gateway", "GatewayClass", "HTTPRoute", "Job", "LoadBalancerConfiguration", "Namespace",
                     "NetworkPolicy", "PodDisruptionBudget", "RayService", "ServiceAccount", "TargetGroupConfiguration"]
    deps = asm.manifest["artifacts"]["EksInference-dev-Inference"]["dependencies"]
    assert "EksInference-dev-Cluster" in deps  # the KubeRay operator release lives there


def test_manifest_serve_config_equals_the_rendered_one(assemblies: dict[str, Assembly]) -> None:
    cfg = config("dev")
    model = cfg.models[0]
    for obj in _manifests(assemblies["dev"]):
        if obj["kind"] != "RayService":
            continue
        processor = Processor(obj["metadata"]["labels"]["eks-inference/processor"])
        served = yaml.safe_load(obj["spec"]["serveConfigV2"])
        root = served["applications"][0]["args"]["model_uri"].split("/models/")[0]
        expected = render_serve_config(model, processor, model_uri=f"{root}/models/minilm/v1",
                                       artifact_uri=f"{root}/artifacts", compile_on_miss=False,
                                       compile_hint=compile_hint(obj["metadata"]["name"]))
        assert served == expected


def test_summary_lists_ray_services_and_jobs(run_assembly: Assembly) -> None:
    from eks_inference.summary import summarize

    s = summarize(Path(run_assembly.path))
    assert {r.name for r in s.ray_services} == {"minilm-graviton", "minilm-inferentia"}
    jobs = [o["metadata"]["name"] for o in _manifests(run_assembly)
            if o["kind"] == "Job" and o["metadata"]["labels"]["eks-inference/role"] == "loadtest"]
    assert sorted(s.jobs) == sorted(jobs) and len(jobs) == 3  # a client Job per target and the report Job
    assert len(s.compile_jobs) == 2 and all(j.startswith("compile-minilm-") for j in s.compile_jobs)
    assert _manifest_objects("not json") == []


def test_no_environment_runs_a_load_test_on_its_first_deploy(assemblies: dict[str, Assembly]) -> None:
    for asm in assemblies.values():
        jobs = [o for o in _manifests(asm) if o["kind"] == "Job"
                and o["metadata"]["labels"]["eks-inference/role"] != "gcs-token-sync"]  # copies a token only
        assert [j["metadata"]["labels"]["eks-inference/role"] for j in jobs] == ["compile", "compile"]
        assert not [n for n in _docker_images(asm).values() if "loadtest" in n["source"]["dockerFile"]]
