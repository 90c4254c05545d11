"""The load tester against the real thing: the bundled model on Ray Serve, as ``eks-inference local`` runs it.

The stub server proves the client's accounting; this proves it speaks to the actual serving stack
(uvicorn behind Ray's proxy, its ``/info`` document, real model latency) end to end through the CLI.
Ray itself is the session-wide ``local_ray`` of ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import ModelSpec, Processor, ServingSpec
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config

from .conftest import cli

pytestmark = pytest.mark.integration

APP = "minilm-loadtest"


@pytest.fixture(scope="module")
def minilm_url(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("loadtest-serving")
    spec = ModelSpec(name=APP, processors=(Processor.CPU,),
                     serving=ServingSpec(max_batch_size=8, max_inputs=8, batch_wait_timeout_s=0.002))
    cfg = render_serve_config(spec, Processor.CPU, model_uri="bundled:all-minilm-l6-v2",
                              artifact_uri=str(cache / "repo"), cache_dir=str(cache / "replica-cache"),
                              http_host="127.0.0.1", http_port=local_ray.http_port)
    local_ray.deploy(cfg)
    local_ray.wait_ready(APP, timeout_s=400)
    yield f"{local_ray.url}/{APP}"
    local_ray.remove(APP)


def test_run_and_report_against_local_ray_serve(minilm_url: str, tmp_path: Path) -> None:
    r = cli("loadtest", "run", "--url", minilm_url, "--rates", "4,8", "--duration", "3", "--warmup", "1",
            "--inputs-per-request", "2", "--target-name", "local-minilm", "--processor", "cpu",
            "--slo-p99-ms", "1000", "--no-progress", "--json", "--out", f"{tmp_path}/results/", timeout=180)
    assert r.returncode == 0, r.stderr
    summaries: list[dict[str, Any]] = json.loads(r.stdout)
    for s in summaries:
        assert s["errors"] == 0 and s["ok"] == s["requests"] == s["requested_rate"] * 3
        assert s["inferences"] == 2 * s["ok"]
        assert s["latency_ms"]["p50"] > 1.0  # a real forward pass, not a canned answer
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")]
    info = doc["provenance"]["server_info"]
    assert info["model"] == APP and info["processor"] == "cpu"

    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (target,) = report["targets"]
    assert target["target"]["name"] == "local-minilm" and target["best"] is not None
    assert target["usd_per_million_inferences"] is None  # no instance type: priced n/a, not guessed
    assert (tmp_path / "report" / "report.png").stat().st_size > 0
