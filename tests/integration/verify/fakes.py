"""Model endpoints on 127.0.0.1 that answer like eks-inference, each with one fault a real deployment can have.

Each wraps a real model in the project's own :class:`~eks_inference.runtime.engine.Engine` (tokenizer,
truncation, pooling, post-processing) over an eager module, behind a small threaded ``http.server`` that
speaks the serving API (``/{model}/info``, ``/healthz``, ``/predict``). The twist is in what it loads or how
it answers:

* ``correct`` — the weights its ``/info`` names, answered honestly;
* ``wrong-vectors`` — right shape, wrong numbers (random unit vectors);
* ``random-model`` — another model: a 2-layer BERT of the same width with random weights, built from a config,
  behind the same tokenizer, while ``/info`` still names the real weights;
* ``perturbed`` — the real weights with noise added (a bad conversion or a corrupt cast);
* ``silent-truncation`` — truncates at a quarter of the ``max_seq_length`` its ``/info`` reports, and says it
  never truncates.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from eks_inference.config import Task
from eks_inference.runtime.bucketing import seq_buckets_for
from eks_inference.runtime.engine import Engine

BUNDLED = "bundled:all-minilm-l6-v2"
TWISTS = ("correct", "wrong-vectors", "random-model", "perturbed", "silent-truncation")


def bundled_dir() -> Path:
    from eks_inference.artifacts.resolve import bundled_model_path

    return bundled_model_path("all-minilm-l6-v2")


def eager(model_dir: Path, task: Task) -> Any:
    from eks_inference.verify.reference import EagerBackend, eager_module

    return EagerBackend(eager_module(model_dir, task))


def random_model_dir(dest: Path, *, layers: int = 2, seed: int = 7) -> Path:
    """The bundled model's tokenizer and pooling with a random-weight BERT of the same width (384)."""
    import torch
    import transformers

    src = bundled_dir()
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "README.md"))
    cfg = transformers.BertConfig.from_pretrained(src)
    cfg.num_hidden_layers = layers
    torch.manual_seed(seed)
    transformers.BertModel(cfg).eval().save_pretrained(dest)
    return dest


def perturbed_engine_backend(task: Task, *, relative_noise: float, seed: int = 3) -> Any:
    """The bundled weights, every tensor plus Gaussian noise of ``relative_noise`` × its own std."""
    import torch

    backend = eager(bundled_dir(), task)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in backend.module.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * relative_noise)
    return backend


@dataclass
class FakeTarget:
    url: str
    server: ThreadingHTTPServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _handler(model: str, info: dict[str, Any], answer: Callable[[list[Any]], tuple[list[Any], list[bool]]],
             task: Task) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == f"/{model}/info":
                self._send(200, info)
            elif self.path == f"/{model}/healthz":
                self._send(200, {"status": "ok", "model": model})
            else:
                self._send(404, {"error": {"code": "not_found", "message": self.path}})

        def do_POST(self) -> None:
            if self.path != f"/{model}/predict":
                self._send(404, {"error": {"code": "not_found", "message": self.path}})
                return
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            inputs = json.loads(raw)["inputs"]
            items = [(x["question"], x["context"]) for x in inputs] if task is Task.QUESTION_ANSWERING else inputs
            with lock:  # one forward at a time, like a replica
                outputs, truncated = answer(items)
            self._send(200, {"model": model, "outputs": outputs, "truncated": truncated})

    return Handler


def start(answer: Callable[[list[Any]], tuple[list[Any], list[bool]]], *, model: str = "fake",
          task: Task = Task.EMBEDDING, max_seq_length: int = 128, model_uri: str = BUNDLED,
          max_inputs: int = 16, extra_info: dict[str, Any] | None = None) -> FakeTarget:
    info = {"model": model, "task": task.value, "processor": "cpu", "backend": "cpu", "dtype": "fp32",
            "model_uri": model_uri, "max_seq_length": max_seq_length,
            "limits": {"max_inputs": max_inputs, "max_input_chars": 20_000, "max_body_bytes": 1 << 20},
            **(extra_info or {})}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model, info, answer, task))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return FakeTarget(f"http://127.0.0.1:{server.server_address[1]}/{model}", server, thread)


def engine_answer(model_dir: Path, backend: Any, *, task: Task, max_seq_length: int
                  ) -> Callable[[list[Any]], tuple[list[Any], list[bool]]]:
    engine = Engine(model_dir=model_dir, task=task, backend=cast(Any, backend), batch_buckets=(1, 2, 4, 8, 16),
                    seq_buckets=seq_buckets_for("cpu", max_seq_length), max_seq_length=max_seq_length)
    return engine.run


def twisted(twist: str, *, tmp: Path, task: Task = Task.EMBEDDING, max_seq_length: int = 128,
            model: str = "fake") -> FakeTarget:
    """A fake target with one of :data:`TWISTS`, claiming to serve the bundled model at ``max_seq_length``."""
    src = bundled_dir()
    kw: dict[str, Any] = {"model": model, "task": task, "max_seq_length": max_seq_length}
    if twist == "correct":
        return start(engine_answer(src, eager(src, task), task=task, max_seq_length=max_seq_length), **kw)
    if twist == "wrong-vectors":
        def wrong(items: list[Any]) -> tuple[list[Any], list[bool]]:
            out = []
            for item in items:
                rng = random.Random(json.dumps(item))  # the same wrong answer for the same input, every time
                v = [rng.gauss(0, 1) for _ in range(384)]
                n = sum(x * x for x in v) ** 0.5
                out.append([x / n for x in v])
            return out, [False] * len(items)

        return start(wrong, **kw)
    if twist == "random-model":
        d = random_model_dir(tmp / "random-model")
        return start(engine_answer(d, eager(d, task), task=task, max_seq_length=max_seq_length), **kw)
    if twist == "perturbed":
        backend = perturbed_engine_backend(task, relative_noise=0.1)
        return start(engine_answer(src, backend, task=task, max_seq_length=max_seq_length), **kw)
    if twist == "silent-truncation":
        inner = engine_answer(src, eager(src, task), task=task, max_seq_length=max(8, max_seq_length // 4))

        def silent(items: list[Any]) -> tuple[list[Any], list[bool]]:
            outputs, _ = inner(items)
            return outputs, [False] * len(items)

        return start(silent, **kw)
    raise ValueError(f"unknown twist {twist!r}; one of {TWISTS}")


@contextlib.contextmanager
def running(twist: str, tmp: Path, **kw: Any) -> Iterator[FakeTarget]:
    target = twisted(twist, tmp=tmp, **kw)
    try:
        yield target
    finally:
        target.stop()
