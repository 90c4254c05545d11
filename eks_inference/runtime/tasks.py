"""Task heads: what a forward returns per task, and how raw outputs become answers.

Every task is wrapped in a module with the same signature, ``forward(input_ids, attention_mask,
token_type_ids) -> tuple[Tensor, ...]``, so one tracing path (``torch.jit.trace`` for cpu/cuda,
``torch_neuronx.trace`` for neuron) and one backend interface serve them all. Pooling and normalisation
live inside the graph: the artifact returns finished embeddings and a replica copies 384 floats, not
``seq × hidden`` activations, off the device.

Post-processing (numpy only) is separate so that it runs the same on every backend.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eks_inference.config import Task

MAX_ANSWER_TOKENS = 30


def pooling_mode(model_dir: Path) -> str:
    """``mean`` or ``cls`` from a sentence-transformers pooling config; mean when there is none."""
    for cfg in [*sorted(model_dir.glob("*_Pooling/config.json")), model_dir / "pooling_config.json"]:
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            if data.get("pooling_mode_cls_token"):
                return "cls"
            return "mean"
    return "mean"


class _Head(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.uses_token_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             token_type_ids: torch.Tensor) -> Any:
        if self.uses_token_types:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids, return_dict=True)
        return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)


class EmbeddingHead(_Head):
    """Mean (or CLS) pooled, L2-normalised sentence embeddings, always returned as fp32."""

    def __init__(self, model: nn.Module, mode: str = "mean") -> None:
        super().__init__(model)
        self.mode = mode

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor]:
        hidden = self._run(input_ids, attention_mask, token_type_ids).last_hidden_state.float()
        if self.mode == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return (nn.functional.normalize(pooled, p=2.0, dim=-1),)


class ClassificationHead(_Head):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor]:
        return (self._run(input_ids, attention_mask, token_type_ids).logits.float(),)


class QuestionAnsweringHead(_Head):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._run(input_ids, attention_mask, token_type_ids)
        return out.start_logits.float(), out.end_logits.float()


def load_task_module(model_dir: Path, task: Task, *, attn_implementation: str = "sdpa") -> nn.Module:
    """The fp32 eager head for ``task``, loaded from local files only (no model hub)."""
    import transformers

    kw: dict[str, Any] = {"local_files_only": True, "attn_implementation": attn_implementation}
    if task is Task.EMBEDDING:
        model = transformers.AutoModel.from_pretrained(model_dir, **kw)
        head: nn.Module = EmbeddingHead(model, pooling_mode(model_dir))
    elif task is Task.CLASSIFICATION:
        head = ClassificationHead(transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, **kw))
    else:
        head = QuestionAnsweringHead(transformers.AutoModelForQuestionAnswering.from_pretrained(model_dir, **kw))
    return head.eval()


def labels_of(model_dir: Path) -> list[str]:
    cfg = json.loads((model_dir / "config.json").read_text())
    id2label = cfg.get("id2label") or {}
    n = len(id2label) or int(cfg.get("num_labels", 2))
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# Post-processing (numpy)
# ---------------------------------------------------------------------------------------------------

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def classification_outputs(logits: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    probs = softmax(logits.astype(np.float64))
    out = []
    for row in probs:
        best = int(row.argmax())
        out.append({"label": labels[best], "score": float(row[best]),
                    "scores": {labels[i]: float(p) for i, p in enumerate(row)}})
    return out


def best_span(start: np.ndarray, end: np.ndarray, context_mask: np.ndarray,
              max_tokens: int = MAX_ANSWER_TOKENS) -> tuple[int, int, float]:
    """Highest-probability (start, end) token span inside the context with start <= end < start + max_tokens.

    Probabilities are softmaxes over context tokens only, so the score is comparable across inputs.
    """
    idx = np.flatnonzero(context_mask)
    if idx.size == 0:
        return 0, 0, 0.0
    ps = softmax(start[idx].astype(np.float64))
    pe = softmax(end[idx].astype(np.float64))
    scores = np.triu(np.outer(ps, pe))
    scores = np.tril(scores, max_tokens - 1)
    flat = int(scores.argmax())
    i, j = divmod(flat, scores.shape[1])
    return int(idx[i]), int(idx[j]), float(scores[i, j])
