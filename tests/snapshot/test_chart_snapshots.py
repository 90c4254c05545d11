"""Snapshots of every synthesized chart: a reviewable diff whenever a manifest changes.

Refresh after an intended change with ``UPDATE_SNAPSHOTS=1 make test`` and review the diff.
"""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from tests.conftest import cdk_context
from tests.unit.k8s_support import config, render, snapshot_path


@pytest.mark.parametrize("env_name", ["dev", "prod"])
@pytest.mark.parametrize("chart", ["serving", "loadtest"])
def test_chart_snapshot(env_name: str, chart: str) -> None:
    # No environment asks for a load-test run by default; snapshot the Jobs a run would start.
    block = cdk_context()["eks-inference:environments"][env_name]["loadtest"]
    _, serving, load = render(config(env_name, loadtest={**block, "run_id": block["run_id"] or "run-001"}))
    docs = copy.deepcopy(serving if chart == "serving" else load)
    for d in docs:  # the embedded YAML string is unreadable in a diff; snapshot it parsed
        if d["kind"] == "RayService":
            d["spec"]["serveConfigV2"] = {"parsed": yaml.safe_load(d["spec"]["serveConfigV2"])}
    text = yaml.safe_dump_all(docs, sort_keys=True)
    path = snapshot_path(f"{chart}-{env_name}")
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"{path.name} was missing and has been written; review and commit it")
    assert text == path.read_text(), f"{path.name} changed; run UPDATE_SNAPSHOTS=1 make test and review the diff"


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_front_door_snapshot(env_name: str) -> None:
    """The Gateway, its load balancer settings, the routes and target groups (subnets as the stack passes them)."""
    import cdk8s

    from eks_inference.k8s.front_door_chart import FrontDoorChart
    from eks_inference.k8s.serving_chart import plan_targets
    from tests.unit.k8s_support import IMAGES, REPOSITORY, gcs_store

    cfg = config(env_name)
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region, gcs_store=gcs_store(cfg))
    chart = FrontDoorChart(cdk8s.App(), "front-door", door=cfg.front_door, targets=targets,
                           subnet_ids=["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"])
    text = yaml.safe_dump_all(chart.manifests(), sort_keys=True)
    path = snapshot_path(f"front-door-{env_name}")
    if os.environ.get("UPDATE_SNAPSHOTS") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"{path.name} was missing and has been written; review and commit it")
    assert text == path.read_text(), f"{path.name} changed; run UPDATE_SNAPSHOTS=1 make test and review the diff"
