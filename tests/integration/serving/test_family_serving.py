"""A family served by real Ray Serve over HTTP, its members on a real S3 API (moto on 127.0.0.1): a member published
while the application runs is served by its next request (no redeploy); an unknown id gets a JSON 404 naming it;
under a model mix with room for two members, eviction churns and every answer is still its own member's; the replica's
disk cache keeps, at the smallest disk budget, exactly the files of the members it holds."""

from __future__ import annotations

import concurrent.futures
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eks_inference.compile.family import derive_member, family_uri, publish_member
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import FamilySpec, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.family import COLD_HEADER, MODEL_ID_HEADER
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config
from eks_inference.verify.probes import Probe
from eks_inference.verify.reference import ReferenceModel

from .conftest import get, post

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]
TEXTS = ["the quick brown fox", "models serve fast", "a lazy dog jumps over the fox"]
NAME = "fam"
SEQ = 32


class Family:
    def __init__(self, url: str, repo: str, endpoint: str, dirs: dict[str, Path], digests: dict[str, str],
                 cache: Path) -> None:
        self.url, self.repo, self.endpoint, self.dirs, self.digests = url, repo, endpoint, dirs, digests
        self.cache = cache
        self._refs: dict[str, list[Any]] = {}

    def reference(self, model_id: str) -> list[Any]:
        """The member's own answers to TEXTS, computed in-process in fp32 from its own published files."""
        if model_id not in self._refs:
            ref = ReferenceModel(self.dirs[model_id], Task.EMBEDDING, weights_digest=self.digests[model_id])
            probes = [Probe(id=f"t{i}", item=t, what="text") for i, t in enumerate(TEXTS)]
            self._refs[model_id] = list(ref.run(SEQ, probes).outputs)
        return self._refs[model_id]


def ask(url: str, model_id: str, texts: list[str] = TEXTS) -> tuple[int, Any, dict[str, str]]:
    import urllib.error
    import urllib.request

    body = ('{"inputs": ' + str(texts).replace("'", '"') + "}").encode()
    req = urllib.request.Request(f"{url}/predict", data=body, headers={
        "content-type": "application/json", MODEL_ID_HEADER: model_id})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            import json

            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        import json

        return e.code, json.loads(e.read()), dict(e.headers)


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture(scope="module")
def family(local_ray: LocalRay, moto_s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import boto3

    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket="eks-inference-family-serving")
    repo = "s3://eks-inference-family-serving/repo"
    work = tmp_path_factory.mktemp("family-serving")
    base = write_synthetic_model(work / "base", task=Task.EMBEDDING, words=WORDS)
    dirs, digests = {}, {}
    for i in range(5):
        dirs[f"m{i}"] = derive_member(base, work / f"m{i}", seed=i, scale=0.5)
    for mid in ("m0", "m1", "m2"):
        digests[mid] = publish_member(dirs[mid], repo, family=NAME, model_id=mid, task="embedding",
                                      endpoint_url=moto_s3_endpoint).digest
    spec = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,),
                     family=FamilySpec(memory_budget="64MiB"),
                     serving=ServingSpec(max_batch_size=8, max_inputs=16, max_seq_length=SEQ,
                                         batch_wait_timeout_s=0.002))
    cfg = render_serve_config(spec, Processor.CPU, model_uri=family_uri(repo, NAME),
                              artifact_uri=str(work / "artifacts"), cache_dir=str(work / "replica-cache"),
                              http_host="127.0.0.1", http_port=local_ray.http_port, s3_endpoint_url=moto_s3_endpoint)
    # room for two members: the budget a cdk.json family may not go below (16 MiB) holds hundreds of these tiny ones
    from eks_inference.serving.model_cache import graph_bytes

    one = _member_bytes(dirs["m0"], graph_bytes)
    cfg["applications"][0]["args"]["family"]["memory_budget_bytes"] = int(2.5 * one)
    # the smallest disk budget: every file of a member not held or loading goes after each load
    cfg["applications"][0]["args"]["family"]["disk_budget_bytes"] = 1
    local_ray.deploy(cfg)
    local_ray.wait_ready(NAME, timeout_s=900)
    yield Family(f"{local_ray.url}/{NAME}", repo, moto_s3_endpoint, dirs, digests, work / "replica-cache")
    local_ray.remove(NAME)


def _member_bytes(model_dir: Path, graph_bytes: Any) -> int:
    """The in-memory size the replica will measure: the parameters and buffers of the model."""
    import transformers

    return int(graph_bytes([transformers.BertModel.from_pretrained(model_dir)]))


def test_an_unknown_model_id_gets_a_json_404_naming_it(family: Family) -> None:
    status, body, _ = ask(family.url, "no-such-model")
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert "'no-such-model' is not a member of family 'fam'" in body["error"]["message"]
    assert "--family fam --model-id no-such-model" in body["error"]["message"]
    status, body = post(f"{family.url}/predict", {"inputs": ["x"]})
    assert status == 400 and body["error"]["code"] == "model_id_missing"


def test_a_member_published_while_serving_is_served_by_its_next_request(family: Family) -> None:
    status, _, _ = ask(family.url, "m3")
    assert status == 404  # not published yet
    digest = publish_member(family.dirs["m3"], family.repo, family=NAME, model_id="m3", task="embedding",
                            endpoint_url=family.endpoint).digest
    family.digests["m3"] = digest
    deadline = time.monotonic() + 10  # the replica re-reads the index on an unknown id at most every 0.25 s
    while (result := ask(family.url, "m3"))[0] == 404 and time.monotonic() < deadline:
        time.sleep(0.3)
    status, body, headers = result
    assert status == 200, body
    assert body["model_id"] == "m3" and body["digest"] == digest
    assert headers[COLD_HEADER] == "1" and body["cold"] is True
    for got, want in zip(body["outputs"], family.reference("m3"), strict=True):
        assert cosine(got, want) > 0.9999
    status, body, headers = ask(family.url, "m3")
    assert status == 200 and headers[COLD_HEADER] == "0"


def test_churn_under_a_model_mix_never_serves_a_wrong_models_answer(family: Family) -> None:
    if "m3" not in family.digests:
        family.digests["m3"] = publish_member(family.dirs["m3"], family.repo, family=NAME, model_id="m3",
                                              task="embedding", endpoint_url=family.endpoint).digest
    ids = sorted(family.digests)
    rng = random.Random(7)
    mix = [rng.choice(ids) for _ in range(48)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda mid: (mid, ask(family.url, mid)), mix))
    for mid, (status, body, _) in answers:
        assert status == 200, body
        assert body["model_id"] == mid and body["digest"] == family.digests[mid]
    # verify a sample of members after the churn, each against its own fp32 reference
    for mid in ids:
        status, body, _ = ask(family.url, mid)
        assert status == 200
        for got, want in zip(body["outputs"], family.reference(mid), strict=True):
            assert cosine(got, want) > 0.9999, mid
        others = [o for o in ids if o != mid]
        assert all(cosine(body["outputs"][0], family.reference(o)[0]) < 0.9999 for o in others)
    status, info = get(f"{family.url}/info")
    assert status == 200
    assert info["family"] is True and info["held_bytes"] <= info["memory_budget_bytes"]
    assert 1 <= len(info["held"]) <= 2
    assert info["stats"]["evictions"] > 0 and info["stats"]["loads"] > len(ids)
    assert info["stats"]["hits"] + info["stats"]["cold"] == info["stats"]["requests"]
    assert info["stats"]["load_ms_p99"] is not None
    # the reloads ran in copies of the family's one warmed graph (runtime/shared_graphs.py), and still each answered
    # with its own member's weights above
    assert info["stats"]["shared_graph_loads"] >= info["stats"]["loads"] - len(ids)


def test_the_disk_cache_keeps_only_the_files_of_members_held(family: Family) -> None:
    """GIVEN the replica's disk budget at its smallest and room in memory for two members
    WHEN a mix of members loads, is evicted and reloads (each reload fetching its files again)
    THEN after each load the disk cache holds the weights and the artifact of exactly the members held, every answer
    is still its own member's, and /info counts the removals and the bytes left (artifacts/disk_cache.py)."""
    from eks_inference.artifacts.disk_cache import entries

    ids = sorted(family.digests)
    for mid in [*ids, *reversed(ids), ids[0]]:
        status, body, _ = ask(family.url, mid)
        assert status == 200 and body["digest"] == family.digests[mid]
        for got, want in zip(body["outputs"], family.reference(mid), strict=True):
            assert cosine(got, want) > 0.9999, mid
        status, info = get(f"{family.url}/info")
        held = {h["model_id"] for h in info["held"]}
        assert mid in held
        root = family.cache.resolve()
        on_disk = entries(root)
        weights = {e.path.name for e in on_disk if e.path.parent == root / "models"}
        artifacts = {e.path.relative_to(root / "artifacts" / NAME).parts[0] for e in on_disk
                     if e.path.is_relative_to(root / "artifacts")}
        assert weights == {family.digests[h][:24] for h in held}, (mid, held)
        assert artifacts == held, (mid, held)
        assert info["disk_budget_bytes"] == 1 and info["disk_bytes"] == sum(e.bytes for e in on_disk)
    assert info["stats"]["disk_removals"] > 0 and info["stats"]["disk_removed_bytes"] > 0


def test_loadtest_run_speaks_the_family(family: Family, tmp_path: Path) -> None:
    """``loadtest run --model-ids ... --model-mix zipf:1.1``: every request names a member in Serve's header, and the
    step's latency is split cold / warm on the replica's own mark, with the load rate."""
    import json

    from tests.integration.loadtest.conftest import cli

    for mid in ("m0", "m1", "m2", "m3"):
        if mid not in family.digests:
            family.digests[mid] = publish_member(family.dirs[mid], family.repo, family=NAME, model_id=mid,
                                                 task="embedding", endpoint_url=family.endpoint).digest
    r = cli("loadtest", "run", "--url", family.url, "--mode", "closed", "--concurrency", "4", "--requests", "80",
            "--warmup", "0", "--model-ids", "m0,m1,m2,m3", "--model-mix", "zipf:1.1", "--seed", "3",
            "--no-progress", "--out", f"{tmp_path}/", "--json", "--sample-replicas", "off", timeout=600)
    assert r.returncode == 0, r.stderr
    (summary,) = json.loads(r.stdout)
    models = summary["models"]
    assert summary["errors"] == 0
    assert models["cold"] + models["warm"] == summary["ok"] == 80
    assert models["cold"] >= 1 and models["warm"] >= 1  # room for two of four members: both kinds occur
    assert models["cold_ms"]["p99"] is not None and models["load_rate_per_s"] > 0
    assert abs(models["hit_ratio"] - models["warm"] / 80) < 1e-9
    bad = cli("loadtest", "run", "--url", family.url, "--requests", "5", "--concurrency", "1", "--mode", "closed",
              "--model-mix", "zipf:1.1", "--out", f"{tmp_path}/x/")
    assert bad.returncode == 2 and "--model-mix: only for a family target" in bad.stderr


def test_verify_checks_a_sample_of_members_each_against_its_own_reference(family: Family, tmp_path: Path) -> None:
    import json

    from eks_inference.compile.family import member_uri
    from eks_inference.verify.check import verify_target
    from tests.integration.loadtest.conftest import cli

    r = cli("verify", "--url", family.url, "--sample", "2", "--model-id", "m1", "--seed", "4", "--json",
            "--s3-endpoint-url", family.endpoint, "--cache-dir", str(tmp_path / "verify"), timeout=900)
    assert r.returncode == 0, r.stderr
    verdicts = json.loads(r.stdout)
    assert verdicts[0]["model_id"] == "m1" and len(verdicts) == 3
    assert len({v["model_id"] for v in verdicts}) == 3
    for v in verdicts:
        assert v["status"] == "passed", v["summary"]
        assert v["source"].endswith(f"/members/{v['model_id']}/v1")
        assert v["target_digest"] == family.digests[v["model_id"]] == v["source_digest"]
    # a member answering with another member's weights is caught: m0's answers against m1's reference
    wrong = verify_target(family.url, source=member_uri(family.repo, NAME, "m1", "v1"), endpoint_url=family.endpoint,
                          cache_dir=tmp_path / "verify", model=("m0", family.digests["m0"]))
    assert not wrong.passed
    r = cli("verify", "--url", family.url, "--model-id", "nobody", "--s3-endpoint-url", family.endpoint)
    assert r.returncode == 2 and "--model-id nobody: not a member of the family" in r.stderr


def test_loads_evictions_hits_and_load_time_reach_prometheus(family: Family, local_ray: LocalRay) -> None:
    from eks_inference import metric_names as names
    from tests.integration.serving.test_metrics_emitted import wait_for

    for mid in ("m0", "m0", "m1", "m2"):  # with room for two: loads, a hit, then an eviction
        if mid not in family.digests:
            continue
        assert ask(family.url, mid)[0] == 200
    url = local_ray.metrics_url
    assert url is not None
    tags = {"application": NAME, "processor": "cpu"}
    assert wait_for(url, names.exported(names.FAMILY_LOADS), **tags) >= 1
    assert wait_for(url, names.exported(names.FAMILY_EVICTIONS), **tags) >= 1
    assert wait_for(url, names.exported(names.FAMILY_HITS), **tags) >= 1
    assert wait_for(url, names.exported(names.FAMILY_LOAD_TIME_MS), **tags) > 0
    assert wait_for(url, names.RAY_PREFIX + names.FAMILY_LOAD_MS + "_count", **tags) >= 1
    assert wait_for(url, names.RAY_PREFIX + names.FAMILY_HELD_BYTES, **tags) > 0
