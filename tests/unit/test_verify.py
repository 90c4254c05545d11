"""Verification logic without a server: the probe set, the per-task tolerances, the verdict and its table."""

from __future__ import annotations

import math
from typing import Any

import pytest

from eks_inference.config import Task
from eks_inference.verify.check import Comparison, Verdict, VerifyError, _chunks, base_url, render_table
from eks_inference.verify.compare import Tolerances, compare
from eks_inference.verify.probes import LADDER_WORDS, PROBE_SET_VERSION, ladder_text, probes_for
from eks_inference.verify.reference import infer_task
from eks_inference.verify.stored import Reference, reference_prefix


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def test_the_probe_set_is_fixed_and_covers_the_edges() -> None:
    """Stored references are keyed by the probe-set version: the probes must come out the same every time."""
    assert PROBE_SET_VERSION == 1
    a, b = probes_for(Task.EMBEDDING, 128), probes_for(Task.EMBEDDING, 128)
    assert a == b
    ids = [p.id for p in a]
    assert len(ids) == len(set(ids))
    for edge in ("empty", "space", "one-char", "german", "chinese", "emoji", "invisible", "at-limit", "over-limit"):
        assert edge in ids
    at = next(p for p in a if p.id == "at-limit")
    over = next(p for p in a if p.id == "over-limit")
    assert isinstance(at.item, str) and at.item.split() == ["the"] * 126  # + [CLS] [SEP] = 128 tokens
    assert isinstance(over.item, str) and len(over.item.split()) == 127
    assert [len(ladder_text(w).split()) for w in LADDER_WORDS] == list(LADDER_WORDS)
    assert max(p.chars for p in a) < 5000  # fits the smallest max_input_chars the tests serve with
    assert next(p for p in probes_for(Task.EMBEDDING, 64) if p.id == "at-limit").item.count("the") == 62
    qa = probes_for(Task.QUESTION_ANSWERING, 128)
    assert all(isinstance(p.item, tuple) for p in qa)
    assert {"long-question", "answer-last-long", "empty-question"} <= {p.id for p in qa}
    with pytest.raises(ValueError):
        probes_for(Task.EMBEDDING, 0)


def _probes(n: int = 3) -> list[Any]:
    return probes_for(Task.EMBEDDING, 128)[:n]


def test_embeddings_need_cosine_099_on_every_input_and_matching_truncation() -> None:
    probes = _probes()
    ref = [unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])]
    close = [unit([1.0, 0.1, 0.0]), unit([0.0, 1.0, 0.05]), unit([0.0, 0.0, 1.0])]  # cos 0.995, 0.9988, 1
    c = compare(Task.EMBEDDING, probes, close, [False] * 3, ref, [False] * 3)
    assert c.passed and c.worst is not None and c.worst.probe.id == probes[0].id
    assert c.worst.score == pytest.approx(1 / math.sqrt(1.01))
    off = [unit([1.0, 0.2, 0.0]), *ref[1:]]  # cos 0.9806
    c = compare(Task.EMBEDDING, probes, off, [False] * 3, ref, [False] * 3)
    assert not c.passed and c.worst is not None and c.worst.probe.id == probes[0].id
    assert "cosine 0.9806 < 0.99" in c.worst.detail
    c = compare(Task.EMBEDDING, probes, ref, [False, True, False], ref, [False] * 3)  # right numbers, wrong flag
    assert not c.passed and c.worst is not None and c.worst.probe.id == probes[1].id
    assert "server says it truncated" in c.worst.detail
    c = compare(Task.EMBEDDING, probes, ref, [False] * 3, ref, [False, False, True])
    assert not c.passed and "the server says it did not" in (c.worst.detail if c.worst else "")
    c = compare(Task.EMBEDDING, probes, [[1.0, 0.0], *ref[1:]], [False] * 3, ref, [False] * 3)
    assert not c.passed and c.worst is not None and "2 dimensions, the reference has 3" in c.worst.detail
    c = compare(Task.EMBEDDING, probes, [[float("nan")] * 3, *ref[1:]], [False] * 3, ref, [False] * 3)
    assert not c.passed and c.worst is not None and "not a vector of finite numbers" in c.worst.detail
    assert not compare(Task.EMBEDDING, [], [], [], [], []).passed  # nothing checked is no pass
    with pytest.raises(ValueError):
        compare(Task.EMBEDDING, probes, ref[:2], [False] * 2, ref, [False] * 3)


def _cls(label: str, scores: dict[str, float]) -> dict[str, Any]:
    return {"label": label, "score": scores[label], "scores": scores}


def test_classification_needs_the_label_on_99_percent_and_probabilities_within_005() -> None:
    probes = probes_for(Task.EMBEDDING, 128)[:4]
    ref = [_cls("pos", {"pos": 0.9, "neg": 0.1}), _cls("neg", {"pos": 0.2, "neg": 0.8}),
           _cls("pos", {"pos": 0.52, "neg": 0.48}), _cls("neg", {"pos": 0.3, "neg": 0.7})]
    flags = [False] * 4
    same = [_cls("pos", {"pos": 0.88, "neg": 0.12}), ref[1], _cls("neg", {"pos": 0.49, "neg": 0.51}), ref[3]]
    c = compare(Task.CLASSIFICATION, probes, same, flags, ref, flags)
    assert c.passed and c.label_agreement == 1.0  # the flip on probe 3 is a near tie in the reference
    drifted = [_cls("pos", {"pos": 0.8, "neg": 0.2}), *ref[1:]]
    c = compare(Task.CLASSIFICATION, probes, drifted, flags, ref, flags)
    assert not c.passed and c.worst is not None and "differs by 0.1000 > 0.05" in c.worst.detail
    flipped = [ref[0], _cls("pos", {"pos": 0.6, "neg": 0.4}), *ref[2:]]
    c = compare(Task.CLASSIFICATION, probes, flipped, flags, ref, flags)
    assert not c.passed and c.label_agreement == 0.75
    assert c.worst is not None and c.worst.probe.id == probes[1].id and "label 'pos', the reference says 'neg'" in (
        c.worst.detail)
    # with a looser agreement rule a lone flip whose probabilities are in bounds is counted, not fatal
    loose = Tolerances(min_label_agreement=0.7, max_score_delta=0.5)
    assert compare(Task.CLASSIFICATION, probes, flipped, flags, ref, flags, loose).passed
    c = compare(Task.CLASSIFICATION, probes, [{"label": "x"}, *ref[1:]], flags, ref, flags)
    assert not c.passed and "not a classification answer" in (c.worst.detail if c.worst else "")


def test_question_answering_needs_the_same_span() -> None:
    probes = probes_for(Task.QUESTION_ANSWERING, 128)[:2]
    ref = [{"answer": "Paris", "score": 0.9, "start": 0, "end": 5}, {"answer": "1889", "score": 0.8, "start": 80,
                                                                    "end": 84}]
    other = [ref[0], {"answer": "330 metres", "score": 0.85, "start": 108, "end": 118}]
    assert compare(Task.QUESTION_ANSWERING, probes, [dict(r, score=0.5) for r in ref], [False] * 2, ref,
                   [False] * 2).passed  # the span decides, not the score
    c = compare(Task.QUESTION_ANSWERING, probes, other, [False] * 2, ref, [False] * 2)
    assert not c.passed and c.worst is not None and c.worst.probe.id == "year"
    assert "span 108:118 '330 metres', the reference's is 80:84 '1889'" in c.worst.detail


def _verdict(c: Comparison) -> Verdict:
    return Verdict(url="http://127.0.0.1:1/m", task=Task.EMBEDDING, max_seq_length=128, target_dtype="bf16",
                   source="bundled:x", source_digest="a" * 64, target_digest="a" * 64,
                   reference="computed in-process (fp32, eager torch)", comparison=c)


def test_the_verdict_names_its_worst_input_and_prints_a_table() -> None:
    probes = _probes()
    ref = [unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0]), unit([0.0, 0.0, 1.0])]
    bad = [ref[0], unit([0.5, 1.0, 0.0]), ref[2]]
    v = _verdict(compare(Task.EMBEDDING, probes, bad, [False] * 3, ref, [False] * 3))
    assert v.status == "failed" and v.worst is not None and v.worst.probe.id == probes[1].id
    assert v.worst_text().startswith(f"{probes[1].id} (") and "cosine 0.8944 < 0.99" in v.worst_text()
    assert v.summary().startswith("FAILED: 2 of 3 probes agree with the fp32 reference (cosine")
    doc = v.to_dict()
    assert doc["status"] == "failed" and doc["worst"]["probe"] == probes[1].id and len(doc["rows"]) == 3
    table = render_table(v).splitlines()
    assert table[0].startswith("Verification of http://127.0.0.1:1/m (embedding, bf16, max_seq_length 128)")
    assert table[4].startswith(f"✘ {probes[1].id}")  # worst first
    assert table[-1] == v.summary()


def test_requests_mix_short_and_long_probes_within_the_limits() -> None:
    chunks = _chunks(31, 8)
    assert [len(c) for c in chunks] == [8, 8, 8, 7] and sorted(i for c in chunks for i in c) == list(range(31))
    assert chunks[0][:2] == [0, 4]  # strided: each request holds short texts and ladder texts alike
    assert _chunks(3, 16) == [[0, 1, 2]]


def test_urls_and_reference_keys() -> None:
    assert base_url(" http://h:8000/minilm/ ") == "http://h:8000/minilm"
    with pytest.raises(VerifyError, match="not an http"):
        base_url("h:8000/minilm")
    assert reference_prefix("ab" * 32, 128) == ".references/probes-v1-abababababababab/seq-128"
    ref = Reference(task=Task.EMBEDDING, max_seq_length=64, weights_digest="d", outputs=[[1.0]], truncated=[False],
                    probe_ids=["short"])
    back = Reference.from_doc(ref.to_doc(), "x")
    assert (back.task, back.max_seq_length, back.outputs, back.truncated, back.probe_ids) == (
        Task.EMBEDDING, 64, [[1.0]], [False], ["short"])
    assert back.basis == "stored: x"


def test_the_task_of_a_model_directory(tmp_path: Any) -> None:
    import json

    for archs, task in ((["BertModel"], Task.EMBEDDING), (["BertForSequenceClassification"], Task.CLASSIFICATION),
                        (["BertForQuestionAnswering"], Task.QUESTION_ANSWERING), ([], None)):
        (tmp_path / "config.json").write_text(json.dumps({"architectures": archs}))
        assert infer_task(tmp_path) is task
