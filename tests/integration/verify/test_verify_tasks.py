"""Classification and question answering: the same check, with the tolerances of their task.

Tiny random-weight BERTs written from a config (no model hub) behind the bundled model's vocabulary, served by
the fake endpoints of :mod:`.fakes`: answered honestly they pass; with swapped labels or another model's spans
they fail, naming the worst input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.cli import main
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import Task

from . import fakes

pytestmark = pytest.mark.integration


def _model(dest: Path, task: Task, *, seed: int = 0) -> Path:
    d = write_synthetic_model(dest, task=task, vocab_file=fakes.bundled_dir() / "vocab.txt", seed=seed)
    if task is Task.CLASSIFICATION:
        # a random classifier answers ~50/50, a near tie that accepts either label; make it decided (~75/25)
        import torch
        import transformers

        m = transformers.BertForSequenceClassification.from_pretrained(d)
        with torch.no_grad():
            m.classifier.weight.mul_(200.0)
        m.save_pretrained(d)
    return d


def _serve(model_dir: Path, task: Task, *, claims: Path, twist: Any = None) -> fakes.FakeTarget:
    answer = fakes.engine_answer(model_dir, fakes.eager(model_dir, task), task=task, max_seq_length=64)

    def twisted(items: list[Any]) -> tuple[list[Any], list[bool]]:
        outputs, flags = answer(items)
        return (twist(outputs) if twist else outputs), flags

    return fakes.start(twisted, model="m", task=task, max_seq_length=64, model_uri=str(claims))


def _verify(capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, dict[str, Any]]:
    rc = main(["verify", "--url", url, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def _swap(outputs: list[Any]) -> list[Any]:
    out = []
    for o in outputs:
        (a, pa), (b, pb) = o["scores"].items()
        scores = {a: pb, b: pa}
        label = max(scores, key=lambda k: scores[k])
        out.append({"label": label, "score": scores[label], "scores": scores})
    return out


def test_classification(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _model(tmp_path / "cls", Task.CLASSIFICATION)
    honest = _serve(d, Task.CLASSIFICATION, claims=d)
    swapped = _serve(d, Task.CLASSIFICATION, claims=d, twist=_swap)
    try:
        rc, v = _verify(capsys, honest.url)
        assert rc == 0 and v["status"] == "passed" and v["label_agreement"] == 1.0
        rc, v = _verify(capsys, swapped.url)
        assert rc == 1 and v["status"] == "failed" and v["label_agreement"] == 0.0  # decided answers, all flipped
        assert "the reference says" in v["worst"]["detail"] and "differs by" in v["worst"]["detail"]
    finally:
        honest.stop()
        swapped.stop()


def test_question_answering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _model(tmp_path / "qa", Task.QUESTION_ANSWERING)
    other = _model(tmp_path / "qa-other", Task.QUESTION_ANSWERING, seed=5)
    honest = _serve(d, Task.QUESTION_ANSWERING, claims=d)
    wrong = _serve(other, Task.QUESTION_ANSWERING, claims=d)
    try:
        rc, v = _verify(capsys, honest.url)
        assert rc == 0 and v["status"] == "passed", v["summary"]
        assert {r["probe"] for r in v["rows"]} >= {"long-question", "answer-last-long", "at-limit-context"}
        rc, v = _verify(capsys, wrong.url)
        assert rc == 1 and v["status"] == "failed"
        assert v["worst"]["detail"].startswith("span ") and "the reference's is" in v["worst"]["detail"]
    finally:
        honest.stop()
        wrong.stop()
