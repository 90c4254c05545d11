"""Day two of the node groups: a deploy that changes only a group's bounds leaves its running nodes alone.

Two synths of dev, before and after a bounds change, deployed one after the other onto the model of CloudFormation
and EKS in tests/system/nodegroup_update.py (its docstring cites what each party does), with the Cluster Autoscaler
moving the counts in between.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import synth_variant
from tests.system.nodegroup_update import Eks, Stack, as_constant_desired_size


def cluster_template(outdir: Path) -> dict[str, Any]:
    (path,) = outdir.glob("*-Cluster.template.json")
    return dict(json.loads(path.read_text()))


def new_bounds(env: dict[str, Any]) -> None:
    """inferentia's max_size 6 → 8 (a bound alone); graviton's min_size 1 → 4, above what it runs (its
    desired_size, only the size a new group starts at, has to go with it: config keeps it within the bounds)."""
    for g in env["node_groups"]:
        if g["name"] == "inferentia":
            g["max_size"] = 8
        if g["name"] == "graviton":
            g["min_size"] = 4
            g.pop("desired_size", None)


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    base = tmp_path_factory.mktemp("bounds")
    before = cluster_template(synth_variant(base / "before", lambda env: None))
    after = cluster_template(synth_variant(base / "after", new_bounds))
    return before, after


def deployed_and_autoscaled(before: dict[str, Any]) -> Stack:
    """GIVEN dev deployed, then grown by the Cluster Autoscaler: two inf2 nodes for Ray workers, three Graviton."""
    stack = Stack(Eks())
    stack.deploy(before)
    assert {g: stack.eks.groups[stack.group_name(g)].desired for g in ("system", "graviton", "inferentia")} == {
        "system": 2, "graviton": 1, "inferentia": 0}  # the sizes new groups start at (cdk.json)
    stack.eks.autoscale(stack.group_name("inferentia"), 2)
    stack.eks.autoscale(stack.group_name("graviton"), 3)
    stack.eks.calls.clear()
    return stack


def test_a_bounds_change_leaves_the_running_nodes_alone(templates: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """WHEN the new bounds deploy THEN inferentia keeps its two nodes under max 8, graviton rises to its new
    minimum of 4 (what a minimum is for; EKS would refuse min 4 over a desired 3), and the system group, whose
    bounds stayed, gets no call at all."""
    before, after = templates
    stack = deployed_and_autoscaled(before)
    stack.deploy(after)
    inf, grav = stack.group_name("inferentia"), stack.group_name("graviton")
    assert stack.eks.groups[inf].desired == 2 and stack.eks.groups[inf].max_size == 8
    assert stack.eks.groups[grav].desired == 4 and stack.eks.groups[grav].min_size == 4
    assert sorted(stack.eks.calls) == [
        ("UpdateNodegroupConfig", grav, {"desiredSize": 4, "maxSize": 8, "minSize": 4}),
        ("UpdateNodegroupConfig", inf, {"desiredSize": 2, "maxSize": 8, "minSize": 0}),
    ]
    stack.eks.calls.clear()
    stack.deploy(after)
    assert stack.eks.calls == []  # the same template again: nothing moves


def test_a_constant_desired_size_would_reset_them(templates: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The model sees the fault it guards against: WHEN the same change deploys with DesiredSize a number, as
    aws_eks_v2 renders it on its own, THEN inferentia's two nodes go (back to 0, under its Ray workers)."""
    before, after = templates
    stack = Stack(Eks())
    stack.deploy(as_constant_desired_size(before))
    stack.eks.autoscale(stack.group_name("inferentia"), 2)
    stack.deploy(as_constant_desired_size(after))
    assert stack.eks.groups[stack.group_name("inferentia")].desired == 0
