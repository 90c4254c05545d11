"""Model-aware routing of a family on a real local Ray, over HTTP: through Serve's Python proxy (the path a
``routing: model-aware`` family's RayService takes), every request for a member goes to the replica that holds it.

What Serve guarantees, and what is asserted (Ray 2.60): the proxy reads ``serve_multiplexed_model_id``
(``ray/serve/_private/proxy.py``) and its request router restricts the candidates for a request to the replicas that
report holding or loading that model (``ray/serve/_private/request_router/request_router.py``,
``apply_multiplex_routing``); with one such replica, power-of-two-choices picks it
(``ray/serve/_private/request_router/pow_2_router.py``, ``choose_replicas``), and it takes the request unless it
already holds ``max_ongoing_requests``, which requests sent one at a time never reach. A model no replica holds goes
to a replica holding the fewest. Replicas push their model ids every 0.1 s (``ray/serve/multiplex.py``,
``_push_model_ids_info``), so the test lets that settle before it repeats the members, eight requests at a time. With
room for every member on each replica (no eviction), each member is then loaded exactly once in the whole deployment:
no repeated request is cold, and no two replicas hold the same member. Through HAProxy (model-blind) the same repeats
reach replicas that do not hold their member, and the test fails there.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from eks_inference.compile.family import derive_member, family_uri, publish_member
from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import FamilyRouting, FamilySpec, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.family import COLD_HEADER, MODEL_ID_HEADER
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config

from .conftest import get

pytestmark = pytest.mark.integration

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]
NAME = "fam-aware"
MEMBERS = ["m0", "m1", "m2", "m3"]
REPLICAS = 2
REPEATS = 6
CONCURRENCY = 8
"""Repeats in flight at once: far below a replica's ``max_ongoing_requests``, so a holder never counts as full."""
SETTLE_S = 3.0
"""After the first round: 30 of the replicas' 0.1 s pushes, for the ids to reach the proxy's router on a busy
machine."""


def ask(url: str, model_id: str) -> tuple[dict[str, Any], str]:
    req = urllib.request.Request(f"{url}/predict", data=b'{"inputs": ["the quick brown fox"]}',
                                 headers={"content-type": "application/json", MODEL_ID_HEADER: model_id})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read()), r.headers[COLD_HEADER]


def info_of_holder(url: str, model_id: str) -> dict[str, Any]:
    """``/info`` of the replica the router sends ``model_id`` to (``/info`` itself loads nothing)."""
    req = urllib.request.Request(f"{url}/info", headers={MODEL_ID_HEADER: model_id})
    with urllib.request.urlopen(req, timeout=60) as r:
        info: dict[str, Any] = json.loads(r.read())
    return info


def replica_infos(url: str, k: int) -> dict[str, dict[str, Any]]:
    """Each replica's ``/info`` by replica id. A request without a model id goes to a replica holding the fewest
    members, every time while their counts differ, so each member's holder is asked through the member's id too."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(20):
        status, info = get(f"{url}/info")
        assert status == 200, info
        seen[info["replica"]] = info
        for mid in MEMBERS:
            info = info_of_holder(url, mid)
            seen[info["replica"]] = info
        if len(seen) == k:
            return seen
    raise AssertionError(f"/info reached {sorted(seen)} of {k} replicas")


@pytest.fixture(scope="module")
def aware_family(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A model-aware family of four tiny members on two replicas, each with room for all four; yields its URL
    through Serve's Python proxy."""
    from eks_inference.serving.model_cache import graph_bytes

    work = tmp_path_factory.mktemp("family-routing")
    base = write_synthetic_model(work / "base", task=Task.EMBEDDING, words=WORDS)
    repo = str(work / "repo")
    dirs = {mid: derive_member(base, work / mid, seed=i, scale=0.5) for i, mid in enumerate(MEMBERS)}
    for mid, d in dirs.items():
        publish_member(d, repo, family=NAME, model_id=mid, task="embedding")
    spec = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,),
                     family=FamilySpec(memory_budget="64MiB", routing=FamilyRouting.MODEL_AWARE),
                     serving=ServingSpec(max_batch_size=8, max_inputs=16, max_seq_length=32, num_threads=1,
                                         batch_wait_timeout_s=0.002, num_replicas=REPLICAS))
    cfg = render_serve_config(spec, Processor.CPU, model_uri=family_uri(repo, NAME),
                              artifact_uri=str(work / "artifacts"), cache_dir=str(work / "replica-cache"),
                              http_host="127.0.0.1", http_port=local_ray.http_port)
    import transformers

    one = int(graph_bytes([transformers.BertModel.from_pretrained(dirs["m0"])]))
    cfg["applications"][0]["args"]["family"]["memory_budget_bytes"] = int((len(MEMBERS) + 0.5) * one)
    local_ray.deploy(cfg)
    local_ray.wait_ready(NAME, timeout_s=900)
    url = f"{local_ray.python_proxy_url}/{NAME}"
    deadline = time.monotonic() + 120  # the Python proxy learns the route a moment after HAProxy does
    while get(f"{url}/healthz")[0] != 200:
        assert time.monotonic() < deadline, f"{url}/healthz did not answer 200 through Serve's Python proxy"
        time.sleep(0.5)
    yield url
    local_ray.remove(NAME)


def test_model_aware_routing_sends_each_members_requests_to_the_replica_that_holds_it(aware_family: str) -> None:
    url = aware_family
    for mid in MEMBERS:  # held nowhere yet: each first request loads its member on some replica
        body, cold = ask(url, mid)
        assert body["model_id"] == mid and cold == "1", body
    time.sleep(SETTLE_S)
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:  # a blind balancer spreads concurrent requests
        repeats = list(pool.map(lambda mid: (mid, *ask(url, mid)), [m for _ in range(REPEATS) for m in MEMBERS]))
    cold_repeats = [mid for mid, _, cold in repeats if cold != "0"]
    assert cold_repeats == [], f"repeated requests loaded {cold_repeats} again on another replica"
    infos = replica_infos(url, REPLICAS)
    held = sorted(m["model_id"] for info in infos.values() for m in info["held"])
    assert held == MEMBERS, f"each member held by exactly one replica; held: {held}"
    loads = sum(info["stats"]["loads"] for info in infos.values())
    hits = sum(info["stats"]["hits"] for info in infos.values())
    assert (loads, hits) == (len(MEMBERS), REPEATS * len(MEMBERS))
    for info in infos.values():  # every repeat landed on its member's holder
        for m in info["held"]:
            assert m["hits"] == REPEATS + 1, (info["replica"], m)
