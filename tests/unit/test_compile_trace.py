"""`eks-inference compile` / `publish`: traced artifacts, manifests, and the neuron path's guard."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eks_inference.artifacts.resolve import (
    MANIFEST,
    ArtifactRequest,
    hash_tree,
    parse_manifest,
    resolve_model,
    sdk_versions,
    verify_local,
)
from eks_inference.cli import main
from eks_inference.config import Task

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eks_inference.compile.synthetic import write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("m"), task=Task.EMBEDDING, words=WORDS)


def compile_to(tmp: Path, model_dir: Path, **changes: object) -> tuple[Path, dict]:
    from eks_inference.compile.trace import compile_artifact

    req = ArtifactRequest(model="tiny", revision="r3", task="embedding", processor="graviton", backend="cpu",
                          dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=(16, 32), versions=sdk_versions("cpu"))
    req = ArtifactRequest(**{**req.__dict__, **changes})  # type: ignore[arg-type]
    model = resolve_model(str(model_dir), cache_dir=tmp)
    out = tmp / "out"
    m = compile_artifact(model_dir=model_dir, out_dir=out, writer="w-test", request=req,
                         weights_digest=model.digest, cache_key=req.key(model.digest))
    return out, m


def test_manifest_describes_and_hashes_every_file(tiny: Path, tmp_path: Path) -> None:
    out, m = compile_to(tmp_path, tiny)
    assert m["kind"] == "artifact" and m["format"] == 1
    assert m["model"]["name"] == "tiny" and m["model"]["revision"] == "r3" and m["model"]["task"] == "embedding"
    assert (m["processor"], m["backend"], m["dtype"]) == ("graviton", "cpu", "fp32")
    assert m["batch_buckets"] == [1, 2, 4] and m["seq_buckets"] == [16, 32]
    assert m["versions"]["torch"] == importlib.metadata.version("torch")
    assert m["versions"]["transformers"] == importlib.metadata.version("transformers")
    assert m["files"] == hash_tree(out)
    assert m["graphs"] == [{"file": "w-test/graph.pt", "batch": None, "seq": None}]
    assert m["checks"]["min_cosine_vs_fp32"] >= 0.9999
    verify_local(out, m["files"], origin=str)
    assert m["cache_key"].startswith("graviton-fp32-b4-s32-")


def test_traced_graph_loads_with_jit_load_and_matches_eager_at_any_bucket(tiny: Path, tmp_path: Path) -> None:
    from eks_inference.runtime.tasks import load_task_module

    out, m = compile_to(tmp_path, tiny)
    graph = torch.jit.load(str(out / m["graphs"][0]["file"]))
    head = load_task_module(tiny, Task.EMBEDDING)
    for b, s in ((1, 16), (4, 32), (3, 7)):
        ids = torch.randint(5, 40, (b, s))
        mask = torch.ones_like(ids)
        mask[0, s // 2:] = 0
        tt = torch.zeros_like(ids)
        with torch.inference_mode():
            np.testing.assert_allclose(graph(ids, mask, tt)[0].numpy(), head(ids, mask, tt)[0].numpy(), atol=1e-5)


def test_bf16_artifact_is_checked_against_fp32(tiny: Path, tmp_path: Path) -> None:
    _, m = compile_to(tmp_path, tiny, dtype="bf16")
    assert m["dtype"] == "bf16"
    assert 0.99 <= m["checks"]["min_cosine_vs_fp32"] < 1.0


def test_neuron_compile_is_real_code_that_asks_for_torch_neuronx(tiny: Path, tmp_path: Path) -> None:
    from eks_inference.compile.trace import CompileError

    with pytest.raises(CompileError, match="needs torch-neuronx"):
        compile_to(tmp_path, tiny, processor="inferentia", backend="neuron", seq_buckets=(32,))


def test_cuda_compile_needs_a_gpu(tiny: Path, tmp_path: Path) -> None:
    from eks_inference.compile.trace import CompileError

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CompileError, match="needs CUDA"):
        compile_to(tmp_path, tiny, processor="gpu", backend="cuda", dtype="fp16")


def test_min_row_cosine() -> None:
    from eks_inference.compile.trace import min_row_cosine

    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert min_row_cosine([a], [a]) == pytest.approx(1.0)
    assert min_row_cosine([a], [np.array([[1.0, 0.0], [1.0, 0.0]])]) == pytest.approx(0.0)


def test_cli_compile_then_publish_model_and_artifact(tiny: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    assert main(["publish", str(tiny), "--to", str(repo), "--name", "tiny", "--revision", "v2"]) == 0
    published = json.loads(capsys.readouterr().out)
    assert published["status"] == "published"
    model_dir = repo / "models" / "tiny" / "v2"
    assert parse_manifest((model_dir / MANIFEST).read_bytes(), "", kind="model")["files"] == hash_tree(tiny)

    out = tmp_path / "compiled"
    assert main(["compile", str(model_dir), "--name", "tiny", "--revision", "v2", "--batch-buckets", "1,2",
                 "--max-seq-length", "32", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["source"] == "compiled" and res["cache_key"].startswith("cpu-fp32-b2-s32-")

    assert main(["publish", "--artifact", res["path"], "--to", str(repo)]) == 0
    pub = json.loads(capsys.readouterr().out)
    assert pub["status"] == "published"
    key_dir = repo / "artifacts" / "tiny" / "v2" / res["cache_key"]
    m = parse_manifest((key_dir / MANIFEST).read_bytes(), str(key_dir), kind="artifact")
    verify_local(key_dir, m["files"], origin=str)
    assert main(["publish", "--artifact", res["path"], "--to", str(repo)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "already-published"

    # a second compile with --publish-to finds the published artifact instead of compiling
    assert main(["compile", str(model_dir), "--name", "tiny", "--revision", "v2", "--batch-buckets", "1,2",
                 "--max-seq-length", "32", "--out", str(tmp_path / "again"), "--publish-to", str(repo)]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "remote-cache"


def test_cli_rejects_bad_buckets(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(tiny), "--name", "tiny", "--batch-buckets", "4,2", "--out", str(tmp_path)]) == 2
    assert "--batch-buckets: [4, 2] is not strictly increasing" in capsys.readouterr().err
