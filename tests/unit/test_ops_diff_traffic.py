"""`eks-inference diff` speaks traffic: a change of the front door's route weights reads as what it does to each
model's requests, on the synthesized dev templates with the edit a config change of ``front_door.routes`` makes, and
a canary added to cdk.json, promoted or removed, on dev synthesized with each."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from eks_inference.k8s.rollout import weighted_route
from eks_inference.ops.diff import diff_templates, render_text, summary_line
from eks_inference.ops.effects import route_effects, route_shares
from eks_inference.ops.tree import MISSING
from tests.conftest import Assembly
from tests.unit.test_ops_diff import edit_manifest, edited, kinds


def route(graviton: int, inferentia: int) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "minilm"},
            "spec": {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/minilm"}}], "backendRefs": [
                {"name": "minilm-graviton-serve-svc", "port": 8000, "weight": graviton},
                {"name": "minilm-inferentia-serve-svc", "port": 8000, "weight": inferentia}]}]}}


def test_shares_are_per_path_in_percent_and_a_missing_weight_is_one() -> None:
    r = route(20, 80)
    del r["spec"]["rules"][0]["backendRefs"][1]["weight"]
    assert route_shares(r) == {"/minilm": {"graviton": pytest.approx(100 * 20 / 21),
                                           "inferentia": pytest.approx(100 / 21)}}


def test_a_new_route_an_unchanged_split_and_a_removed_route() -> None:
    assert [e.text for e in route_effects(MISSING, route(20, 80))] == [
        "the front door starts routing /minilm/*: graviton 20%, inferentia 80%"]
    assert [e.kind for e in route_effects(route(20, 80), route(2, 8))] == ["update"]
    assert [e.text for e in route_effects(route(20, 80), MISSING)] == [
        "the front door stops routing /minilm/* once the route is gone"]


def test_a_weight_change_in_the_dev_stack_reads_as_traffic_moved(assemblies: dict[str, Assembly]) -> None:
    """GIVEN dev's route (graviton 80, inferentia 20) WHEN the weights become 50/50 THEN the diff says which share
    moves where, and the summary counts a traffic shift."""

    def reweigh(docs: list[dict[str, Any]]) -> None:
        (r,) = [d for d in docs if d["kind"] == "HTTPRoute"]
        for ref in r["spec"]["rules"][0]["backendRefs"]:
            ref["weight"] = 50

    d = edited(assemblies, "Inference", lambda t: edit_manifest(t, reweigh, holding="minilm", kind="HTTPRoute"))
    assert "traffic" in [k for ks in kinds(d).values() for k in ks]
    text = render_text(d)
    assert "=> graviton 80% → 50%, inferentia 20% → 50% of /minilm/*" in text
    assert "1 traffic shift at the front door" in summary_line(d)


def test_dropping_a_model_deletes_its_route_with_its_manifest(assemblies: dict[str, Assembly]) -> None:
    """Each model's route is a manifest resource of its own: dropping the model deletes the resource, and with it the
    HTTPRoute (kubectl delete), which `kubectl apply --prune` would have left behind."""
    from tests.unit.test_ops_diff import manifest_holding

    def drop(t: dict[str, Any]) -> None:
        lid, _ = manifest_holding(t, "HTTPRoute", "minilm")
        del t["Resources"][lid]

    d = edited(assemblies, "Inference", drop)
    effects = [k for label, ks in kinds(d).items() if "HTTPRoute" in label for k in ks]
    assert effects == ["delete", "traffic"], kinds(d)


@pytest.mark.parametrize(("before", "after", "phrase"), [
    (0, 10, "=> canary start: the new revision takes 10% of /minilm/*: graviton 80% → 72%, graviton-canary 0% → 8%"),
    (10, 100, "=> canary promote: the new revision takes all of /minilm/* (was 10%)"),
    (10, 0, "=> canary end: its 10% of /minilm/* goes back to the current RayServices"),
])
def test_a_canary_start_a_promote_and_a_rollback_read_as_traffic(assemblies: dict[str, Assembly], before: float,
                                                                  after: float, phrase: str) -> None:
    """GIVEN dev's route at one stage of a rollout (``eks-inference rollout`` weights it as
    :func:`eks_inference.k8s.rollout.weighted_route` does) WHEN it moves to the next THEN the diff names the stage."""
    def stage(share: float) -> Any:
        def edit(docs: list[dict[str, Any]]) -> None:
            i = next(i for i, d in enumerate(docs) if d["kind"] == "HTTPRoute")
            docs[i] = weighted_route(docs[i], share)
        return lambda t: edit_manifest(t, edit, holding="minilm", kind="HTTPRoute")

    template = assemblies["dev"].template("Inference")
    old, new = copy.deepcopy(template), copy.deepcopy(template)
    stage(before)(old)
    stage(after)(new)
    d = diff_templates({"EksInference-dev-Inference": old}, {"EksInference-dev-Inference": new})
    text = render_text(d)
    assert phrase in text, text
    assert "1 traffic shift at the front door" in summary_line(d)


def _diff(old: Assembly, new: Assembly) -> tuple[str, str]:
    name = "EksInference-dev-Inference"
    d = diff_templates({name: old.template("Inference")}, {name: new.template("Inference")})
    return render_text(d), summary_line(d)


def test_adding_promoting_and_removing_a_canary_in_cdk_json_read_as_traffic(
        assemblies: dict[str, Assembly], canary_assembly: Assembly, promoted_assembly: Assembly) -> None:
    """GIVEN dev, dev with minilm's canary at v2, and dev with v2 made minilm's revision (what ``eks-inference
    rollout`` writes into cdk.json at each end), each synthesized WHEN each change is diffed THEN the route's change
    reads as a canary start, a promotion (the current RayServices take the canary's revision as its backends go),
    and an end (the canary removed alone)."""
    text, summary = _diff(assemblies["dev"], canary_assembly)
    assert ("=> canary start: the new revision takes 10% of /minilm/*: graviton 80% → 72%, graviton-canary 0% → 8%"
            in text), text
    assert "1 traffic shift at the front door" in summary
    text, summary = _diff(canary_assembly, promoted_assembly)
    assert ("=> canary promote: the current RayServices take the canary's revision v2 and all of /minilm/* "
            "(the canary had 10%)") in text, text
    assert "1 traffic shift at the front door" in summary
    text, summary = _diff(canary_assembly, assemblies["dev"])
    assert "=> canary end: its 10% of /minilm/* goes back to the current RayServices" in text, text
    assert "canary promote" not in text
