"""Preflight refuses a deploy of a running environment whose pinned Neuron SDK has no compiled artifact published
for a model an inf2 group serves, against the session's moto server on 127.0.0.1.

The deployed Inference stack is stood in by a CloudFormation stack of the same name with the same
``ModelRepositoryUri`` output (moto cannot deploy EKS resources); artifacts are published to its bucket by the
project's own ``publish_artifact``, as ``eks-inference publish --artifact`` does after a compile.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from eks_inference.artifacts.manifests import MANIFEST, MANIFEST_FORMAT, hash_tree
from eks_inference.compile.publish import publish_artifact
from eks_inference.ops import preflight as pf
from eks_inference.ops.assembly import stack_names
from eks_inference.ops.neuron_artifacts import compile_command, neuron_models
from eks_inference.ops.project import availability_zones, platform_config, read_context
from eks_inference.tables.neuron import NEURON_METADATA, NEURON_SDK
from tests.conftest import ROOT, Assembly

pytestmark = pytest.mark.integration
EI = ROOT / ".venv" / "bin" / "eks-inference"
MOTO_ACCOUNT = "123456789012"
REGION = "ap-southeast-2"  # a region no other scenario on the shared server uses
BUCKET = "eks-inference-prod-models-neuron"
OLD_COMPILER = "2.24.5133.0"


@pytest.fixture
def moto(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3_endpoint)
    yield moto_s3_endpoint


def context(region: str = REGION) -> pf.Context:
    ctx = read_context(ROOT, {"env": "prod", "region": region, "account": MOTO_ACCOUNT})
    config = platform_config(ctx)
    return pf.Context(config=config, assembly=None, zones=availability_zones(ctx, config))


def run_cli(args: list[str], endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "PATH": str(EI.parent)}
    return subprocess.run([str(EI), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def artifact_dir(root: Path, *, compiler: str, weights: str, key: str, processor: str = "inferentia") -> Path:
    """A compiled artifact as the compile step leaves it: graph files under the writer, and its manifest."""
    out = root / key
    (out / "w-test").mkdir(parents=True)
    (out / "w-test" / "graph_b1_s128.pt").write_bytes(f"neff of {key}".encode())
    manifest = {"format": MANIFEST_FORMAT, "kind": "artifact", "cache_key": key,
                "model": {"name": "minilm", "revision": "v1", "task": "embedding", "weights_digest": weights},
                "processor": processor, "backend": "neuron" if processor == "inferentia" else "cpu", "dtype": "bf16",
                "batch_buckets": [1, 2, 4, 8, 16, 32], "seq_buckets": [128],
                "graphs": [{"file": "w-test/graph_b1_s128.pt", "batch": 1, "seq": 128}],
                "versions": {"torch": "2.9.0", "transformers": "4.57.1", "machine": "x86_64",
                             **({"torch_neuronx": "2.9.0.2.14.25930", "neuronx_cc": compiler}
                                if processor == "inferentia" else {})},
                "files": hash_tree(out)}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def deployed(region: str) -> None:
    """The Inference stack of prod, as far as preflight reads it: its name and its ModelRepositoryUri output."""
    boto3.client("s3", region_name=region).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
    template: dict[str, Any] = {
        "Resources": {"Marker": {"Type": "AWS::SSM::Parameter",
                                 "Properties": {"Type": "String", "Value": "x", "Name": "/eks-inference/prod"}}},
        "Outputs": {"ModelRepositoryUri": {"Value": f"s3://{BUCKET}"}}}
    boto3.client("cloudformation", region_name=region).create_stack(StackName=stack_names("prod")[-1],
                                                                     TemplateBody=json.dumps(template))


def test_a_first_deploy_needs_no_published_artifact(moto: str) -> None:
    (row,) = pf.check_neuron_artifacts(context("sa-east-1"), pf.Clients("sa-east-1"))
    assert row.status == pf.PASS
    assert row.found.startswith("first deploy (no stack EksInference-prod-Inference): the compile Jobs compile for "
                                f"Neuron SDK {NEURON_SDK.version}")


def test_refused_until_the_new_sdks_artifact_is_published(moto: str, tmp_path: Path) -> None:
    deployed(REGION)
    ctx = context()
    (model,) = neuron_models(ctx.config)
    repository = f"s3://{BUCKET}"
    # What the previous SDK compiled, a CPU artifact, and the new compiler's output of other weights: none counts.
    for i, (compiler, weights, processor) in enumerate(((OLD_COMPILER, model.weights_sha256, "inferentia"),
                                                        (NEURON_SDK.neuronx_cc, model.weights_sha256, "graviton"),
                                                        (NEURON_SDK.neuronx_cc, "0" * 64, "inferentia"))):
        src = artifact_dir(tmp_path / "old", compiler=compiler, weights=str(weights), key=f"{processor}-old-{i}",
                           processor=processor)
        assert publish_artifact(src, repository, endpoint_url=moto).status == "published"

    (row,) = pf.check_neuron_artifacts(ctx, pf.Clients(REGION))
    assert row.status == pf.FAIL and row.check == "neuron artifacts minilm"
    assert row.found == (
        f"compiled artifacts for Neuron SDK {NEURON_SDK.version} (neuronx-cc {NEURON_SDK.neuronx_cc}) missing for "
        f"model 'minilm' revision 'v1' (published: neuronx-cc {OLD_COMPILER}): run `{row.fix}` in the Inferentia2 "
        "image of that SDK on an inf2 instance before deploying")
    assert row.fix == compile_command(model, repository)

    cli = ["preflight", "--env", "prod", "-c", f"region={REGION}", "-c", f"account={MOTO_ACCOUNT}",
           "--artifacts-only", "--json"]
    proc = run_cli(cli, moto)
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)["checks"]
    assert [(r["check"], r["status"]) for r in rows] == [("credentials", "pass"), ("neuron artifacts minilm", "fail")]

    src = artifact_dir(tmp_path / "new", compiler=NEURON_SDK.neuronx_cc, weights=str(model.weights_sha256),
                       key="inferentia-bf16-b32-s128-new")
    assert publish_artifact(src, repository, endpoint_url=moto).status == "published"
    (row,) = pf.check_neuron_artifacts(ctx, pf.Clients(REGION))
    assert row.status == pf.PASS and row.check == "neuron artifacts"
    assert row.found == (f"{repository}: minilm compiled by neuronx-cc {NEURON_SDK.neuronx_cc} (Neuron SDK "
                         f"{NEURON_SDK.version})")
    proc = run_cli(cli, moto)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_diff_of_a_new_sdk_names_what_the_deployed_repository_lacks(moto: str, tmp_path: Path,
                                                                   assemblies: dict[str, Assembly]) -> None:
    """Deployed: an Inference stack whose template records SDK 2.29.0; synthesized: dev as it is now."""
    region, bucket = "eu-north-1", "eks-inference-dev-models-neuron"
    boto3.client("s3", region_name=region).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    template: dict[str, Any] = {
        "Metadata": {NEURON_METADATA: {"sdk": "2.29.0", "neuronx_cc": OLD_COMPILER, "models": ["minilm"]}},
        "Resources": {"Marker": {"Type": "AWS::SSM::Parameter",
                                 "Properties": {"Type": "String", "Value": "x", "Name": "/eks-inference/dev"}}},
        "Outputs": {"ModelRepositoryUri": {"Value": f"s3://{bucket}"}}}
    boto3.client("cloudformation", region_name=region).create_stack(StackName=stack_names("dev")[-1],
                                                                     TemplateBody=json.dumps(template))
    (model,) = neuron_models(context().config)
    old = artifact_dir(tmp_path / "old", compiler=OLD_COMPILER, weights=str(model.weights_sha256), key="inf-old")
    publish_artifact(old, f"s3://{bucket}", endpoint_url=moto)
    cli = ["diff", "--deployed", "-c", "env=dev", "-c", f"region={region}", "--assembly",
           str(assemblies["dev"].path), "--format", "json"]

    proc = run_cli(cli, moto)
    assert proc.returncode == 1, proc.stderr
    change, missing = json.loads(proc.stdout)["notes"]
    assert change.startswith(f"Neuron SDK 2.29.0 → {NEURON_SDK.version}: compiled artifacts for SDK "
                             f"{NEURON_SDK.version} are needed for model 'minilm'")
    assert missing.startswith(f"compiled artifacts for Neuron SDK {NEURON_SDK.version} (neuronx-cc "
                              f"{NEURON_SDK.neuronx_cc}) missing for model 'minilm' revision 'v1' (published: "
                              f"neuronx-cc {OLD_COMPILER}): run `eks-inference compile s3://{bucket}/models/minilm/v1 ")

    new = artifact_dir(tmp_path / "new", compiler=NEURON_SDK.neuronx_cc, weights=str(model.weights_sha256),
                       key="inf-new")
    publish_artifact(new, f"s3://{bucket}", endpoint_url=moto)
    text = run_cli(cli[:-2], moto).stdout
    assert (f"! compiled artifacts for Neuron SDK {NEURON_SDK.version} are published in s3://{bucket} for every "
            "model on inf2") in text.splitlines()
