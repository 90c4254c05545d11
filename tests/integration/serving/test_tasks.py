"""Classification and extractive QA through real Ray Serve (tiny BERTs built from a config)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import Processor, ServingSpec, Task
from eks_inference.runtime.tasks import load_task_module
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config
from tests.servers import START_CEILING_S

from .conftest import get, post

pytestmark = pytest.mark.integration

WORDS = ["the", "cat", "sat", "on", "mat", "where", "is", "what", "did", "dog", "do", "great", "awful", "film"]


@pytest.fixture(scope="module")
def task_apps(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[dict[str, tuple[str, Path]]]:
    from eks_inference.config import ModelSpec

    root = tmp_path_factory.mktemp("tasks")
    apps = {}
    for name, task in (("tiny-cls", Task.CLASSIFICATION), ("tiny-qa", Task.QUESTION_ANSWERING)):
        model_dir = write_synthetic_model(root / name, task=task, words=WORDS, labels=("negative", "positive"))
        spec = ModelSpec(name=name, task=task, processors=(Processor.CPU,),
                         serving=ServingSpec(max_batch_size=4, max_seq_length=32, cpus_per_replica=0.5))
        local_ray.deploy(render_serve_config(spec, Processor.CPU, model_uri=str(model_dir),
                                             artifact_uri=str(root / "repo"), cache_dir=str(root / "cache"),
                                             http_host="127.0.0.1", http_port=local_ray.http_port))
        apps[name] = (f"{local_ray.url}/{name}", model_dir)
    for name in apps:  # both start in parallel
        local_ray.wait_ready(name, timeout_s=START_CEILING_S)
    yield apps
    for name in apps:
        local_ray.remove(name)


def test_classification_returns_label_and_scores_of_the_model(task_apps: dict[str, tuple[str, Path]]) -> None:
    url, model_dir = task_apps["tiny-cls"]
    status, body = post(f"{url}/predict", {"inputs": ["great film", "awful film", "the cat sat"]})
    assert status == 200 and isinstance(body, dict)
    head = load_task_module(model_dir, Task.CLASSIFICATION)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    for text, out in zip(["great film", "awful film", "the cat sat"], body["outputs"], strict=True):
        enc = tok(text, return_tensors="pt")
        with torch.inference_mode():
            logits = head(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0][0].numpy()
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        assert set(out["scores"]) == {"negative", "positive"}
        assert out["label"] == ["negative", "positive"][int(probs.argmax())]
        assert out["scores"]["positive"] == pytest.approx(float(probs[1]), abs=1e-5)
        assert out["score"] == max(out["scores"].values())
    assert get(f"{url}/info")[1]["task"] == "classification"


def test_question_answering_returns_spans_of_the_context(task_apps: dict[str, tuple[str, Path]]) -> None:
    url, _ = task_apps["tiny-qa"]
    items = [{"question": "where is the cat", "context": "the cat sat on the mat"},
             {"question": "what did the dog do", "context": "the dog sat on the mat " * 10}]
    status, body = post(f"{url}/predict", {"inputs": items})
    assert status == 200 and isinstance(body, dict)
    assert body["truncated"] == [False, True]
    for item, out in zip(items, body["outputs"], strict=True):
        assert item["context"][out["start"]:out["end"]] == out["answer"] and out["answer"]
        assert 0 < out["score"] <= 1
    status, err = post(f"{url}/predict", {"inputs": ["not a pair"]})
    assert status == 422 and isinstance(err, dict) and err["error"]["code"] == "invalid_input"
    _, spec = get(f"{url}/openapi.json")
    item = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert item["properties"]["inputs"]["items"]["required"] == ["question", "context"]
