"""``eks-inference compile --serve-app APP --missing`` (what a family's compile CronJob runs) against a real S3 API
(moto on 127.0.0.1): it compiles exactly the members whose artifact is missing, create-only; a second run finds them
all; a member that fails is one line and the others still compile; replicas that never compile then find each
member's artifact under the key they request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.artifacts.family_index import read_index
from eks_inference.artifacts.resolve import resolve_artifact, resolve_model
from eks_inference.cli.serving import compile_serve_app
from eks_inference.compile.family import derive_member, family_uri, publish_member
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import FamilySpec, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.artifact import replica_artifact
from eks_inference.serving.family import member_app_args, parse_family_args
from eks_inference.serving.serve_config import parse_user_config, render_serve_config
from eks_inference.storage import open_store
from tests.integration.loadtest.conftest import cli

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]
FAMILY = "zeta"


@pytest.fixture(scope="module")
def repo(moto_s3_endpoint: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket="eks-inference-family-compile")
    return "s3://eks-inference-family-compile/repo"


def app_text(repo: str, endpoint: str, processor: Processor, cache: Path) -> str:
    """The family's serve-config application as its compile CronJob passes it (compile_chart.serve_app)."""
    spec = ModelSpec(name=FAMILY, task=Task.EMBEDDING, processors=(processor,),
                     family=FamilySpec(memory_budget="64MiB"),
                     serving=ServingSpec(max_batch_size=4, max_inputs=4, max_seq_length=32))
    cfg = render_serve_config(spec, processor, model_uri=family_uri(repo, FAMILY), artifact_uri=f"{repo}/artifacts",
                              cache_dir=str(cache), s3_endpoint_url=endpoint, compile_on_miss=False)
    app = cfg["applications"][0]
    return json.dumps({"args": app["args"], "user_config": app["deployments"][0]["user_config"]})


def replica_finds(text: str, model_id: str, cache: Path, endpoint: str) -> Any:
    """What a replica that never compiles resolves on the member's first request (serving.family, _load)."""
    app = json.loads(text)
    a, _ = parse_family_args(app["args"])
    entry = read_index(open_store(a.model_uri, endpoint_url=endpoint), FAMILY).members[model_id]
    member = member_app_args(a, entry)
    ucfg = parse_user_config(app["user_config"], batch_buckets=a.batch_buckets)
    model = resolve_model(member.model_uri, cache_dir=cache, endpoint_url=endpoint, expected_digest=entry.digest)
    return resolve_artifact(replica_artifact(member, ucfg).request, model, cache_dir=cache,
                            artifact_uri=a.artifact_uri, endpoint_url=endpoint, compile_fn=None)


def test_missing_compiles_exactly_the_members_without_an_artifact_and_reports_a_failing_one(
        repo: str, tmp_path: Path, moto_s3_endpoint: str) -> None:
    """GIVEN a family of four published members: one already compiled, one whose weights file is not a model
    WHEN the compile step runs in --missing mode, as the CronJob runs it (the real CLI)
    THEN it leaves the compiled one alone, compiles the two others, reports the broken one in one line on stderr,
    exits 1, and keeps no member's scratch; replicas that never compile find each compiled member's artifact; a
    second run compiles nothing new and still reports only the broken member."""
    base = write_synthetic_model(tmp_path / "base", task=Task.EMBEDDING, words=WORDS)
    digests = {}
    for i in range(3):
        digests[f"z{i}"] = publish_member(derive_member(base, tmp_path / f"z{i}", seed=40 + i), repo, family=FAMILY,
                                          model_id=f"z{i}", task="embedding", endpoint_url=moto_s3_endpoint).digest
    broken = derive_member(base, tmp_path / "broken", seed=49)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    publish_member(broken, repo, family=FAMILY, model_id="broken", task="embedding", endpoint_url=moto_s3_endpoint)
    text = app_text(repo, moto_s3_endpoint, Processor.CPU, tmp_path / "replica-cache")
    earlier = compile_serve_app(text, tmp_path / "earlier", model_id="z1")  # compiled when it was published
    assert earlier["source"] == "compiled"

    out = tmp_path / "cron"
    r = cli("compile", "--serve-app", text, "--missing", "--out", str(out), timeout=600)
    assert r.returncode == 1, r.stderr
    result = json.loads(r.stdout)
    assert result["family"] == FAMILY and result["index_generation"] == 4
    assert result["present"] == ["z1"]
    assert [c["model_id"] for c in result["compiled"]] == ["z0", "z2"]
    assert all(c["source"] == "compiled" for c in result["compiled"])
    assert [f["model_id"] for f in result["failed"]] == ["broken"]
    lines = [line for line in r.stderr.splitlines() if line.startswith("eks-inference: family")]
    assert len(lines) == 1 and "member 'broken' was not compiled" in lines[0], r.stderr
    assert not (out / "members" / "z0").exists() and not (out / "members" / "z2").exists()

    for mid in ("z0", "z1", "z2"):
        found = replica_finds(text, mid, tmp_path / f"replica-{mid}", moto_s3_endpoint)
        assert found.source == "remote-cache"
        assert found.manifest["model"]["weights_digest"] == digests[mid]
    keys = {c["model_id"]: c["cache_key"] for c in result["compiled"]}
    assert replica_finds(text, "z0", tmp_path / "replica-again", moto_s3_endpoint).key == keys["z0"]

    again = cli("compile", "--serve-app", text, "--missing", "--out", str(tmp_path / "cron2"), timeout=600)
    assert again.returncode == 1
    second = json.loads(again.stdout)
    assert second["present"] == ["z0", "z1", "z2"] and second["compiled"] == []
    assert [f["model_id"] for f in second["failed"]] == ["broken"]


def test_missing_on_inferentia_runs_the_neuron_path_per_member_and_names_each_failure(
        repo: str, tmp_path: Path, moto_s3_endpoint: str) -> None:
    """GIVEN a family's Inferentia application and two published members without a Neuron artifact
    WHEN --missing runs here, where the Neuron SDK is absent
    THEN each member goes down the real Neuron compile path (the request replicas on inf2 make) and fails there in one
    line naming torch-neuronx, the other member is still tried, and the exit status says a member failed; nothing is
    written under the artifacts."""
    base = write_synthetic_model(tmp_path / "base", task=Task.EMBEDDING, words=WORDS)
    for seed, mid in enumerate(("n0", "n1"), start=60):
        publish_member(derive_member(base, tmp_path / mid, seed=seed), repo, family="eta", model_id=mid,
                       task="embedding", endpoint_url=moto_s3_endpoint)
    spec = ModelSpec(name="eta", task=Task.EMBEDDING, processors=(Processor.INFERENTIA,),
                     family=FamilySpec(memory_budget="64MiB"),
                     serving=ServingSpec(max_batch_size=2, max_inputs=2, max_seq_length=32))
    cfg = render_serve_config(spec, Processor.INFERENTIA, model_uri=family_uri(repo, "eta"),
                              artifact_uri=f"{repo}/artifacts", s3_endpoint_url=moto_s3_endpoint,
                              compile_on_miss=False)
    app = cfg["applications"][0]
    text = json.dumps({"args": app["args"], "user_config": app["deployments"][0]["user_config"]})
    r = cli("compile", "--serve-app", text, "--missing", "--out", str(tmp_path / "cron"), timeout=600)
    assert r.returncode == 1
    result = json.loads(r.stdout)
    assert result["processor"] == "inferentia" and result["present"] == [] and result["compiled"] == []
    assert [f["model_id"] for f in result["failed"]] == ["n0", "n1"]
    lines = [line for line in r.stderr.splitlines() if line.startswith("eks-inference: family")]
    assert len(lines) == 2 and all("needs torch-neuronx" in line for line in lines), r.stderr
    assert list(open_store(f"{repo}/artifacts/eta", endpoint_url=moto_s3_endpoint).list("")) == []


def test_missing_refuses_a_single_model_and_a_model_id(repo: str, tmp_path: Path, moto_s3_endpoint: str) -> None:
    text = app_text(repo, moto_s3_endpoint, Processor.CPU, tmp_path / "c")
    r = cli("compile", "--serve-app", text, "--missing", "--model-id", "z0")
    assert r.returncode == 2 and "--missing: give the family's --serve-app and no --model-id" in r.stderr
    single = json.loads(text)
    del single["args"]["family"]
    r = cli("compile", "--serve-app", json.dumps(single), "--missing")
    assert r.returncode == 2 and "--missing: application 'zeta' is not a model family" in r.stderr


def test_publish_prints_the_command_that_compiles_the_member_now(repo: str, tmp_path: Path,
                                                                 moto_s3_endpoint: str) -> None:
    """GIVEN a member published with the real CLI
    WHEN publish answers
    THEN its JSON names, as compile_now, the command that runs the family's compile CronJobs at once
    (compile.family.compile_now_command, whose shell tests/unit/test_family_compile.py runs), and stderr says so."""
    from eks_inference.compile.family import compile_now_command

    member = derive_member(write_synthetic_model(tmp_path / "base", task=Task.EMBEDDING, words=WORDS),
                           tmp_path / "p0", seed=70)
    r = cli("publish", str(member), "--to", repo, "--family", "theta", "--model-id", "p0", "--task", "embedding",
            "--s3-endpoint-url", moto_s3_endpoint, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model_id"] == "p0" and out["compile_now"] == compile_now_command("theta")
    assert "kubectl -n eks-inference create job --from=cronjob/" in out["compile_now"]
    assert f"to compile it now: {out['compile_now']}" in r.stderr
