"""The engine (tokenize → pad → traced graph → answers) against the eager model, per task; the greedy batcher."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eks_inference.artifacts.resolve import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
from eks_inference.compile.trace import compile_artifact
from eks_inference.config import Task
from eks_inference.runtime.backends import cpu_has_native_bf16, effective_dtype, load_backend
from eks_inference.runtime.engine import Encoder, Engine
from eks_inference.runtime.tasks import best_span, load_task_module
from eks_inference.serving.batcher import GreedyBatcher

BATCH = (1, 2, 4)
SEQ = (16, 32)
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "what", "does", "say", "where",
         "is", "cat", "sat", "on", "mat"]
TEXTS = ["the quick brown fox", "a lazy dog", "where is the cat", "the cat sat on the mat " * 12, "fox"]


def make_engine(tmp: Path, task: Task, *, max_batch_size: int = 4, dtype: str = "fp32") -> Engine:
    from eks_inference.compile.synthetic import write_synthetic_model

    model_dir = write_synthetic_model(tmp / task.value, task=task, words=WORDS, labels=("neg", "neu", "pos"))
    model = resolve_model(str(model_dir), cache_dir=tmp / "cache")
    req = ArtifactRequest(model="tiny", revision="v1", task=task.value, processor="cpu", backend="cpu", dtype=dtype,
                          batch_buckets=BATCH, seq_buckets=SEQ, versions=sdk_versions("cpu"))
    art = resolve_artifact(req, model, cache_dir=tmp / "cache", artifact_uri=None, compile_fn=compile_artifact)
    return Engine(model_dir=model_dir, task=task, backend=load_backend(art.path, art.manifest), batch_buckets=BATCH,
                  seq_buckets=SEQ, max_seq_length=32, max_batch_size=max_batch_size)


@pytest.fixture(scope="module")
def embedding(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return make_engine(tmp_path_factory.mktemp("emb"), Task.EMBEDDING, max_batch_size=2)


def reference(engine: Engine, model_dir: Path, items: list[Any]) -> list[list[np.ndarray]]:
    """The eager fp32 head on the same tokens, one input at a time (no batch padding at all)."""
    head = load_task_module(model_dir, engine.task)
    outs = []
    for item in items:
        enc = engine.encoder.encode([item], [1], [32])
        n = int(enc.attention_mask.sum())
        with torch.inference_mode():
            o = head(*(torch.from_numpy(a[:, :n]) for a in (enc.input_ids, enc.attention_mask, enc.token_type_ids)))
        outs.append([t.numpy()[0] for t in o])
    return outs


def test_embeddings_are_normalised_and_truncation_is_flagged(embedding: Engine) -> None:
    out, truncated = embedding.run(TEXTS)
    assert len(out) == len(TEXTS)
    assert truncated == [False, False, False, True, False]
    np.testing.assert_allclose(np.linalg.norm(np.array(out), axis=1), 1.0, atol=1e-5)


def test_engine_matches_eager_per_task(tmp_path: Path) -> None:
    for task in (Task.EMBEDDING, Task.CLASSIFICATION):
        eng = make_engine(tmp_path, task, max_batch_size=2)
        ref = reference(eng, tmp_path / task.value, TEXTS)
        out, _ = eng.run(TEXTS)
        for got, want in zip(out, ref, strict=True):
            if task is Task.EMBEDDING:
                np.testing.assert_allclose(np.array(got), want[0], atol=1e-5)
            else:
                probs = np.exp(want[0] - want[0].max())
                probs /= probs.sum()
                assert got["label"] == ["neg", "neu", "pos"][int(probs.argmax())]
                assert pytest.approx(list(got["scores"].values()), abs=1e-5) == list(probs)
                assert sum(got["scores"].values()) == pytest.approx(1.0)


def test_batching_and_padding_do_not_change_answers(embedding: Engine) -> None:
    alone = [embedding.run([t])[0][0] for t in TEXTS]
    together, _ = embedding.run(TEXTS)  # chunks of 2, padded to batch bucket 2 and seq buckets
    np.testing.assert_allclose(np.array(together), np.array(alone), atol=1e-5)
    assert embedding.batches > 0 and embedding.items >= len(TEXTS)
    assert embedding.estimate_forward_s(2) > 0


def test_question_answering_returns_a_span_of_the_context(tmp_path: Path) -> None:
    eng = make_engine(tmp_path, Task.QUESTION_ANSWERING)
    items = [("where is the cat", "the cat sat on the mat"), ("what does the fox say", "the quick brown fox " * 20)]
    out, truncated = eng.run(items)
    assert truncated == [False, True]
    long_question, _ = eng.run([("where is the cat " * 20, "the cat sat on the mat")])
    assert set(long_question[0]) == {"answer", "score", "start", "end"}  # cut to fit instead of failing
    for (_, context), ans in zip(items, out, strict=True):
        assert context[ans["start"]:ans["end"]] == ans["answer"]
        assert ans["answer"].strip()
        assert 0.0 < ans["score"] <= 1.0


def test_best_span_respects_context_and_length() -> None:
    start = np.array([9.0, 0, 5, 0, 0, 0])
    end = np.array([9.0, 0, 0, 6, 0, 0])
    ctx = np.array([False, False, True, True, True, False])
    s, e, score = best_span(start, end, ctx)
    assert (s, e) == (2, 3) and 0 < score <= 1
    s, e, _ = best_span(start, end, ctx, max_tokens=1)
    assert e - s == 0
    assert best_span(start, end, np.zeros(6, dtype=bool)) == (0, 0, 0.0)


def test_bundled_tokenizer_really_tokenizes(tmp_path: Path) -> None:
    """transformers 5 silently maps every token to [UNK] with BertTokenizer(vocab_file=...); we must not."""
    model = resolve_model("bundled:all-minilm-l6-v2", cache_dir=tmp_path)
    enc = Encoder(model.path, max_seq_length=16)
    e = enc.encode(["The quick brown fox"], [1], [16])
    ids = e.input_ids[0, : int(e.attention_mask.sum())].tolist()
    assert ids[0] == 101 and ids[-1] == 102
    assert 100 not in ids  # [UNK]
    assert len(ids) == 6


def test_bf16_support_probe_is_a_bool() -> None:
    assert isinstance(cpu_has_native_bf16(), bool)


def test_bf16_is_served_where_the_cpu_has_it_and_fp32_elsewhere() -> None:
    assert effective_dtype("cpu", "bf16", bf16_native=True) == ("bf16", None)
    dtype, why = effective_dtype("cpu", "bf16", bf16_native=False)
    assert dtype == "fp32" and why is not None and "no bf16 instructions" in why
    assert effective_dtype("cpu", "bf16", bf16_native=False, allow_emulated_bf16=True) == ("bf16", None)
    assert effective_dtype("cpu", "fp32", bf16_native=False) == ("fp32", None)
    assert effective_dtype("cuda", "fp16", bf16_native=False) == ("fp16", None)
    assert effective_dtype("neuron", "bf16", bf16_native=False) == ("bf16", None)
    with pytest.raises(ValueError, match="'fp16' is not served on CPU"):
        effective_dtype("cpu", "fp16", bf16_native=True)


def test_neuron_artifacts_need_torch_neuronx(tmp_path: Path) -> None:
    manifest = {"backend": "neuron", "dtype": "bf16", "graphs": [{"file": "g.pt", "batch": 1, "seq": 128}]}
    with pytest.raises(RuntimeError, match="needs torch-neuronx"):
        load_backend(tmp_path, manifest)


def test_greedy_batcher_coalesces_queued_requests_and_survives_errors() -> None:
    calls: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        calls.append(len(items))
        if -1 in items:
            raise ValueError("bad item")
        import time

        time.sleep(0.02)
        return [x * 10 for x in items]

    async def main() -> None:
        b = GreedyBatcher(run, max_batch_size=8)
        results = await asyncio.gather(*(b.submit([i]) for i in range(20)))
        assert [r[0] for r in results] == [i * 10 for i in range(20)]
        assert len(calls) < 20 and max(calls) <= 8, calls
        with pytest.raises(ValueError, match="bad item"):
            await b.submit([-1])
        assert await b.submit([3, 4]) == [30, 40]
        with pytest.raises(ValueError, match="exceed max_batch_size"):
            await b.submit(list(range(9)))
        await b.close()

    asyncio.run(main())
