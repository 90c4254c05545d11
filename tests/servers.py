"""Session-wide real servers on 127.0.0.1, started once and shared by every test directory that needs them
(``tests/integration/``, ``tests/system/``); ``tests/conftest.py`` registers these fixtures.

* ``moto_s3_endpoint`` — a ``moto_server`` subprocess (a real S3 HTTP API, not an in-process mock) on a free
  port; returns its base URL. Dummy AWS credentials are set for this process *and* for Ray workers.
* ``local_ray`` — a private Ray + Serve (``eks_inference.serving.local.LocalRay``) on a free port, with the
  same Ray environment the clusters get; deploy ``serveConfigV2`` documents with ``local_ray.deploy(cfg)``
  (rendered with ``http_port=local_ray.http_port``), wait with ``local_ray.wait_ready(name)``, remove with
  ``local_ray.remove(name)``. ``local_serve`` returns its base URL.
* ``serving_cache``, ``minilm``, ``minilm_bf16`` — the bundled model served once per session (fp32, and bf16
  even where the CPU only emulates it), with the helpers below to render, deploy and call models.

Environment variables are set at import, before anything imports Ray: Ray reads its settings at import and
its workers inherit the environment of ``ray.init``; among them a metrics report interval of 1 s, so that a test
reading the local Prometheus endpoint (``local_ray.metrics_url``) sees traffic a second after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import DType, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.local import LocalRay, free_port, ray_environment
from eks_inference.serving.serve_config import render_serve_config

# Ray processes hand their metrics to the node's agent every second (its floor; local mode uses 2 s, Ray's default
# is 10 s), so tests that read metrics after traffic wait about a second for them.
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
ray_environment()
for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)

BUNDLED = "bundled:all-minilm-l6-v2"
# How long a model may take to start (fetch, compile, load) before a test gives up: a ceiling for a hang, not a
# measure of speed. A busy 2-core machine compiles the bundled model in minutes; pyproject's per-test timeout is
# larger still.
START_CEILING_S = 900


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def _decode(raw: bytes) -> dict[str, Any] | str:
    try:
        return json.loads(raw)  # type: ignore[no-any-return]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode(errors="replace")


def post(url: str, body: bytes | dict[str, Any], *, timeout: float = 300, headers: dict[str, str] | None = None,
         ) -> tuple[int, dict[str, Any] | str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, _decode(raw)


def get(url: str, timeout: float = 30) -> tuple[int, Any]:
    """(status, decoded body); status 0 with the reason when nothing answered within ``timeout``, so that a loop
    polling for a condition polls on: a busy machine's proxy can hold a request to an application that is still
    starting for longer than that."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError as e:  # refused, reset, or timed out (URLError is one)
        return 0, f"no answer: {e!r}"
    return status, _decode(raw)


def model_config(ray: LocalRay, cache: Path, *, name: str, task: Task = Task.EMBEDDING, model_uri: str = BUNDLED,
                 artifact_uri: str | None = None, s3_endpoint_url: str | None = None, cache_dir: Path | None = None,
                 allow_emulated_bf16: bool = False, **serving: Any) -> dict[str, Any]:
    spec = ModelSpec(name=name, task=task, processors=(Processor.CPU,), serving=ServingSpec(**serving))
    return render_serve_config(spec, Processor.CPU, model_uri=model_uri,
                               artifact_uri=artifact_uri or str(cache / "repo"),
                               cache_dir=str(cache_dir or cache / "replica-cache"), http_host="127.0.0.1",
                               http_port=ray.http_port, s3_endpoint_url=s3_endpoint_url, max_input_chars=5000,
                               allow_emulated_bf16=allow_emulated_bf16)


def deploy_model(ray: LocalRay, cache: Path, *, name: str, timeout_s: float = START_CEILING_S, **kw: Any,
                 ) -> dict[str, Any]:
    cfg = model_config(ray, cache, name=name, **kw)
    ray.deploy(cfg)
    ray.wait_ready(name, timeout_s=timeout_s)
    return cfg


def minilm_config(ray: LocalRay, cache: Path) -> dict[str, Any]:
    return model_config(ray, cache, name="minilm", max_batch_size=8, max_inputs=16, batch_wait_timeout_s=0.002)


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url, 60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[LocalRay]:
    # Logical CPUs above the physical 2: several small test applications share the machine.
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port(), num_cpus=16).start()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def local_serve(local_ray: LocalRay) -> str:
    return local_ray.url


@pytest.fixture(scope="session")
def serving_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifact store shared by the session's apps: the bundled model compiles once per dtype."""
    return tmp_path_factory.mktemp("serving-cache")


@pytest.fixture(scope="session")
def minilm(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    """The bundled model, fp32, one replica; yields its base URL."""
    local_ray.deploy(minilm_config(local_ray, serving_cache))
    local_ray.wait_ready("minilm", timeout_s=START_CEILING_S)
    yield f"{local_ray.url}/minilm"
    local_ray.remove("minilm")


@pytest.fixture(scope="session")
def minilm_bf16(local_ray: LocalRay, serving_cache: Path) -> Iterator[str]:
    """The bundled model in bf16, even where the CPU only emulates it (small buckets: emulated bf16 is slow)."""
    deploy_model(local_ray, serving_cache, name="minilm-bf16", dtype=DType.BF16, max_batch_size=4,
                 max_seq_length=64, batch_wait_timeout_s=0.0, allow_emulated_bf16=True)
    yield f"{local_ray.url}/minilm-bf16"
    local_ray.remove("minilm-bf16")
