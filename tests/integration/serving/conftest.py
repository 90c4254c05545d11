"""Serving integration fixtures: the bundled model served once per session, plus helpers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import DType, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config

BUNDLED = "bundled:all-minilm-l6-v2"


def post(url: str, body: bytes | dict[str, Any], *, timeout: float = 60, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any] | str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def get(url: str, timeout: float = 30) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


@pytest.fixture(scope="session")
def serving_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifact store shared by the session's apps: the bundled model compiles once per dtype."""
    return tmp_path_factory.mktemp("serving-cache")


def model_config(ray: LocalRay, cache: Path, *, name: str, task: Task = Task.EMBEDDING, model_uri: str = BUNDLED,
                 artifact_uri: str | None = None, s3_endpoint_url: str | None = None, cache_dir: Path | None = None,
                 allow_emulated_bf16: bool = False, **serving: Any) -> dict[str, Any]:
    spec = ModelSpec(name=name, task=task, processors=(Processor.CPU,), serving=ServingSpec(**serving))
    return render_serve_config(spec, Processor.CPU, model_uri=model_uri,
                               artifact_uri=artifact_uri or str(cache / "repo"),
                               cache_dir=str(cache_dir or cache / "replica-cache"), http_host="127.0.0.1",
                               http_port=ray.http_port, s3_endpoint_url=s3_endpoint_url, max_input_chars=5000,
                               allow_emulated_bf16=allow_emulated_bf16)


def deploy_model(ray: LocalRay, cache: Path, *, name: str, timeout_s: float = 400, **kw: Any) -> dict[str, Any]:
    cfg = model_config(ray, cache, name=name, **kw)
    ray.deploy(cfg)
    ray.wait_ready(name, timeout_s=timeout_s)
    return cfg


def minilm_config(ray: LocalRay, cache: Path) -> dict[str, Any]:
    return model_config(ray, cache, name="minilm", max_batch_size=8, max_inputs=16, batch_wait_timeout_s=0.002)


@pytest.fixture(scope="session")
def minilm(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    """The bundled model, fp32, one replica; yields its base URL."""
    local_ray.deploy(minilm_config(local_ray, serving_cache))
    local_ray.wait_ready("minilm", timeout_s=400)
    yield f"{local_ray.url}/minilm"
    local_ray.remove("minilm")


@pytest.fixture(scope="session")
def minilm_bf16(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    """The bundled model in bf16, even where the CPU only emulates it (small buckets: emulated bf16 is slow)."""
    deploy_model(local_ray, serving_cache, name="minilm-bf16", dtype=DType.BF16, max_batch_size=4,
                 max_seq_length=64, batch_wait_timeout_s=0.0, allow_emulated_bf16=True)
    yield f"{local_ray.url}/minilm-bf16"
    local_ray.remove("minilm-bf16")
