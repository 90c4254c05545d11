"""The inference engine: tokenize → pad to a compiled shape → backend forward → answers.

Synchronous and free of Ray, FastAPI and pydantic: the Ray Serve replica runs it on its forward thread,
the benchmarks run it bare ("raw") and inside plain HTTP servers, and the GPU benchmark imports it on a
machine without Ray. Long inputs are truncated to ``max_seq_length`` tokens and reported per input.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eks_inference.config import Task
from eks_inference.runtime.backends import Backend
from eks_inference.runtime.bucketing import padded_shape, split_sizes
from eks_inference.runtime.tasks import best_span, classification_outputs, labels_of

EMBEDDING_DECIMALS = 7

Item = str | tuple[str, str]
"""A text (embedding, classification) or a (question, context) pair (question answering)."""


@dataclass
class Encoded:
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    rows: int
    truncated: list[bool]
    offsets: list[list[tuple[int, int]]] | None = None
    sequence_ids: list[list[int | None]] | None = None


class Encoder:
    """Rust fast tokenizer, driven directly: no per-call Python padding, truncation reported per input.

    Loaded through ``AutoTokenizer`` (never ``BertTokenizer(vocab_file=...)``, which transformers 5 ignores).
    """

    def __init__(self, model_dir: Path, *, max_seq_length: int, pairs: bool = False) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if not getattr(tok, "is_fast", False):
            raise ValueError(f"model {model_dir.name!r} has no fast tokenizer (tokenizer.json); serving needs one")
        self.tokenizer = tok.backend_tokenizer
        self.tokenizer.no_padding()
        self.pairs = pairs
        self.max_seq_length = max_seq_length
        self.tokenizer.enable_truncation(max_seq_length, strategy="only_second" if pairs else "longest_first")
        self.pad_id = int(tok.pad_token_id or 0)

    def encode(self, items: Sequence[Item], batch_buckets: Sequence[int], seq_buckets: Sequence[int]) -> Encoded:
        try:
            encs = self.tokenizer.encode_batch(list(items), add_special_tokens=True)
        except Exception:
            if not self.pairs:
                raise
            # a question longer than max_seq_length leaves no room for "only_second": cut both instead
            trunc = self.tokenizer.truncation or {}
            self.tokenizer.enable_truncation(int(trunc.get("max_length", self.max_seq_length)),
                                             strategy="longest_first")
            try:
                encs = self.tokenizer.encode_batch(list(items), add_special_tokens=True)
            finally:
                self.tokenizer.enable_truncation(int(trunc.get("max_length", self.max_seq_length)),
                                                 strategy="only_second")
        longest = max(len(e.ids) for e in encs)
        b, s = padded_shape(len(encs), longest, batch_buckets, seq_buckets)
        ids = np.full((b, s), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, s), dtype=np.int64)
        types = np.zeros((b, s), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        if b > len(encs):  # padded rows repeat row 0: fully masked rows are undefined in some kernels
            ids[len(encs):] = ids[0]
            mask[len(encs):] = mask[0]
            types[len(encs):] = types[0]
        out = Encoded(ids, mask, types, len(encs), [len(e.overflowing) > 0 for e in encs])
        if self.pairs:
            out.offsets = [list(e.offsets) for e in encs]
            out.sequence_ids = [list(e.sequence_ids) for e in encs]
        return out


    def encode_exact(self, items: Sequence[Item], batch: int, seq: int) -> Encoded:
        """Encode to exactly (batch, seq), truncating at ``seq`` tokens (tracing and compile checks)."""
        self.tokenizer.enable_truncation(seq, strategy="only_second" if self.pairs else "longest_first")
        try:
            return self.encode(items, [batch], [seq])
        finally:
            self.tokenizer.enable_truncation(self.max_seq_length,
                                             strategy="only_second" if self.pairs else "longest_first")


class Engine:
    """One model on one backend. Thread-safe for one forward at a time (the backend holds a lock)."""

    def __init__(self, *, model_dir: Path, task: Task, backend: Backend, batch_buckets: Sequence[int],
                 seq_buckets: Sequence[int], max_seq_length: int, max_batch_size: int | None = None) -> None:
        self.task = task
        self.backend = backend
        self.batch_buckets = tuple(batch_buckets)
        self.seq_buckets = tuple(s for s in seq_buckets if s <= max_seq_length) or (max_seq_length,)
        if self.seq_buckets[-1] < max_seq_length:
            raise ValueError(f"max_seq_length {max_seq_length} exceeds the compiled sequence buckets {seq_buckets}")
        self.max_seq_length = max_seq_length
        self.max_batch_size = max_batch_size or self.batch_buckets[-1]
        self.encoder = Encoder(model_dir, max_seq_length=max_seq_length, pairs=task is Task.QUESTION_ANSWERING)
        self.labels = labels_of(model_dir) if task is Task.CLASSIFICATION else []
        self.forward_ema_s: dict[int, float] = {}
        self._stats_lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self.run_ema_s = 0.0
        """EMA of one chunk end to end (tokenize, forward, post-process): the engine's share of latency."""
        self.on_forward: Callable[..., None] | None = None
        """Called after each forward with ``rows``, ``batch``, ``seq``, ``real_tokens`` and ``seconds`` (the
        replica's metrics); None in raw benchmarks."""

    def estimate_forward_s(self, rows: int) -> float:
        """EMA of measured forward time at the batch bucket ``rows`` pads to (0 before the first)."""
        b = next((x for x in self.batch_buckets if x >= rows), self.batch_buckets[-1])
        if b in self.forward_ema_s:
            return self.forward_ema_s[b]
        known = sorted(self.forward_ema_s.items())
        if not known:
            return 0.0
        # scale the nearest measured bucket linearly: good enough to size a batching wait
        nb, t = min(known, key=lambda kv: abs(kv[0] - b))
        return t * b / nb

    def run(self, items: Sequence[Item]) -> tuple[list[Any], list[bool]]:
        """Answers and per-input truncation flags, in input order."""
        outputs: list[Any] = []
        truncated: list[bool] = []
        start = 0
        for n in split_sizes(len(items), self.max_batch_size):
            o, t = self._run_chunk(items[start:start + n])
            outputs.extend(o)
            truncated.extend(t)
            start += n
        return outputs, truncated

    def _run_chunk(self, items: Sequence[Item]) -> tuple[list[Any], list[bool]]:
        t_start = time.perf_counter()
        enc = self.encoder.encode(items, self.batch_buckets, self.seq_buckets)
        t0 = time.perf_counter()
        raw = self.backend.forward(enc.input_ids, enc.attention_mask, enc.token_type_ids)
        dt = time.perf_counter() - t0
        b = enc.input_ids.shape[0]
        with self._stats_lock:
            prev = self.forward_ema_s.get(b)
            self.forward_ema_s[b] = dt if prev is None else 0.8 * prev + 0.2 * dt
            self.batches += 1
            self.items += enc.rows
        if self.on_forward is not None:
            self.on_forward(rows=enc.rows, batch=b, seq=int(enc.input_ids.shape[1]),
                            real_tokens=int(enc.attention_mask[: enc.rows].sum()), seconds=dt)
        answers = self._postprocess(raw, enc, items)
        run = time.perf_counter() - t_start
        self.run_ema_s = run if self.run_ema_s == 0.0 else 0.9 * self.run_ema_s + 0.1 * run
        return answers, enc.truncated

    def _postprocess(self, raw: tuple[np.ndarray, ...], enc: Encoded, items: Sequence[Item]) -> list[Any]:
        n = enc.rows
        if self.task is Task.EMBEDDING:
            # 7 decimals: finer than float32 resolves on unit vectors, half the JSON of float64 reprs
            return np.round(raw[0][:n].astype(np.float64), EMBEDDING_DECIMALS).tolist()
        if self.task is Task.CLASSIFICATION:
            return classification_outputs(raw[0][:n], self.labels)
        assert enc.offsets is not None and enc.sequence_ids is not None
        out = []
        for i in range(n):
            seq_ids = enc.sequence_ids[i]
            ctx = np.zeros(enc.input_ids.shape[1], dtype=bool)
            ctx[: len(seq_ids)] = [sid == 1 for sid in seq_ids]
            s, e, score = best_span(raw[0][i], raw[1][i], ctx)
            context = items[i][1]
            if not ctx.any():
                out.append({"answer": "", "score": 0.0, "start": 0, "end": 0})
                continue
            c0, c1 = enc.offsets[i][s][0], enc.offsets[i][e][1]
            out.append({"answer": context[c0:c1], "score": score, "start": c0, "end": c1})
        return out

    def warmup(self) -> None:
        """One forward per sequence bucket at the smallest and largest batch bucket (first-call costs)."""
        probe: Item = ("warm up?", "warm up") if self.task is Task.QUESTION_ANSWERING else "warm up"
        for s in self.seq_buckets:
            for b in sorted({self.batch_buckets[0], min(self.max_batch_size, self.batch_buckets[-1])}):
                ids = np.full((b, s), self.encoder.pad_id, dtype=np.int64)
                mask = np.ones((b, s), dtype=np.int64)
                self.backend.forward(ids, mask, np.zeros_like(ids))
        self.run([probe])
        self.batches = self.items = 0
