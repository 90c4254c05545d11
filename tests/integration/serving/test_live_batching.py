"""Batching changes live: a new ``max_batch_size`` and batch wait, rendered from the config as a ``cdk.json`` edit
would render them, reach the running replica through ``reconfigure`` (same replica, same process) and change the
batches it forms.

The rendered CPU document differs in ``user_config`` alone (the replica's batch buckets no longer follow
``max_batch_size``), so Serve keeps the replica: Ray 2.60 ``ray/serve/_private/deploy_utils.py``
(``get_app_code_version`` hashes ``import_path``, ``runtime_env`` and ``args``) and ``deployment_state.py``
(a changed ``user_config`` alone is a lightweight update that calls ``reconfigure`` on the running replicas).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eks_inference.serving.local import LocalRay
from tests.servers import START_CEILING_S, get, model_config, post

pytestmark = pytest.mark.integration

NAME = "minilm-live"
CONCURRENT = 16


def _info(url: str) -> dict[str, Any]:
    status, body = get(f"{url}/info")
    return body if status == 200 and isinstance(body, dict) else {}


def _burst(url: str) -> tuple[int, int]:
    """(batches, inputs) the replica formed while CONCURRENT one-input requests were in flight together."""
    before = _info(url)["stats"]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda i: post(f"{url}/predict", {"inputs": [f"sentence number {i} " * 8]}),
                                range(CONCURRENT)))
    assert all(status == 200 for status, _ in results), results
    after = _info(url)["stats"]
    return after["batches"] - before["batches"], after["inputs"] - before["inputs"]


def test_batching_change_applies_to_the_running_replica(local_ray: LocalRay, serving_cache: Path) -> None:
    """GIVEN a replica at max_batch_size 1 (every forward one input) WHEN the config is rendered again with
    max_batch_size 16 and a 50 ms wait and deployed THEN the same replica (id and process) applies it and forms
    batches of more than one input."""
    url = f"{local_ray.url}/{NAME}"
    first = model_config(local_ray, serving_cache, name=NAME, max_batch_size=1, batch_wait_timeout_s=0.0)
    local_ray.deploy(first)
    try:
        local_ray.wait_ready(NAME, timeout_s=START_CEILING_S)
        before = _info(url)
        batches, inputs = _burst(url)
        assert inputs == CONCURRENT and batches == CONCURRENT  # max_batch_size 1: one forward per input

        second = model_config(local_ray, serving_cache, name=NAME, max_batch_size=16, batch_wait_timeout_s=0.05)
        app0, app1 = first["applications"][0], second["applications"][0]
        assert app0["args"] == app1["args"]  # nothing that restarts a replica moved
        local_ray.deploy(second)
        deadline = time.monotonic() + START_CEILING_S  # a ceiling: a busy machine reconfigures slowly
        while (info := _info(url)).get("max_batch_size") != 16 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (info["max_batch_size"], info["batch_wait_timeout_s"]) == (16, 0.05)
        assert (info["replica"], info["pid"]) == (before["replica"], before["pid"])  # reconfigured, not restarted
        assert info["artifact"]["key"] == before["artifact"]["key"]
        batches, inputs = _burst(url)
        assert inputs == CONCURRENT and batches < CONCURRENT, (batches, inputs)  # inputs now share forwards
    finally:
        local_ray.remove(NAME)
