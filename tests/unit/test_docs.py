"""The generated docs equal what the code generates now, and the hand-written model guide stays runnable."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex

import pytest

from eks_inference.cli import build_parser
from eks_inference.config import ENVIRONMENTS_KEY, ModelSpec, parse_platform
from eks_inference.costs import EKS_CONTROL_PLANE_HOURLY, NAT_GATEWAY_HOURLY, environment_cost
from eks_inference.docs import SECTIONS, UndocumentedField, configuration_reference, generated_files, main, param_docs
from eks_inference.tables.prices import DEFAULT_PRICES
from tests.conftest import ROOT, cdk_context


@pytest.mark.parametrize("path", sorted(p.name for p in generated_files()))
def test_committed_docs_are_up_to_date(path: str) -> None:
    generated = {p.name: text for p, text in generated_files().items()}[path]
    committed = (ROOT / "docs" / path).read_text()
    assert committed == generated, f"docs/{path} is out of date: run `python -m eks_inference.docs`"


def test_check_mode_passes_on_the_committed_docs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_every_field_is_in_the_reference_with_its_default() -> None:
    text = configuration_reference()
    for cls, _, _ in SECTIONS:
        _, params = param_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name == "env_name":
                continue
            assert f.name in params, f"{cls.__name__}.{f.name} is undocumented"
            row = next(ln for ln in text.splitlines() if ln.startswith(f"| `{f.name}` |"))
            if isinstance(f.default, int | str) and not isinstance(f.default, bool):
                assert f"`{json.dumps(getattr(f.default, 'value', f.default))}`" in row, row


def test_an_undocumented_field_stops_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass
    class Undocumented:
        """No params here."""

        knob: int = 1

    monkeypatch.setattr("eks_inference.docs.SECTIONS", ((Undocumented, "x", "X"),))
    with pytest.raises(UndocumentedField, match=r"Undocumented.knob has no ':param knob:' line"):
        configuration_reference()


# --- Costs: computed from the config and the price table ---------------------------------------------------------


def _dev(**changes: object) -> dict:
    envs = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY])
    envs["dev"].update(changes)
    return envs["dev"]


def test_cost_follows_node_counts_and_prices() -> None:
    block = _dev()
    base = environment_cost(parse_platform("dev", block))
    for g in block["node_groups"]:
        if g["name"] == "graviton":
            g["desired_size"] += 1
    more = environment_cost(parse_platform("dev", block))
    price = DEFAULT_PRICES.hourly("c7g.2xlarge", "us-west-2")
    assert price is not None
    assert more.total(1) == pytest.approx(base.total(1) + price)
    assert more.total(0) == pytest.approx(base.total(0)) and more.total(2) == pytest.approx(base.total(2))


def test_a_group_at_min_zero_still_costs_the_nodes_its_min_replicas_hold() -> None:
    block = _dev()
    lines = {line.item: line for line in environment_cost(parse_platform("dev", block)).lines}
    inf2 = next(g for g in block["node_groups"] if g["name"] == "inferentia")
    minilm = next(m for m in block["models"] if m["name"] == "minilm")
    assert inf2["min_size"] == 0 and "inferentia" in minilm["processors"]
    # one whole-node replica per model at min_replicas (1 by default): one inf2 node, however low min_size is
    assert lines["node group inferentia"].counts[:2] == (1, 1) and "min_replicas keep 1" in lines[
        "node group inferentia"].note
    for m in block["models"]:
        m["processors"] = [p for p in m["processors"] if p != "inferentia"]
    block["models"] = [m for m in block["models"] if m["processors"]]
    lines = {line.item: line for line in environment_cost(parse_platform("dev", block)).lines}
    assert lines["node group inferentia"].counts[:2] == (0, 0)


def test_nat_gateways_control_plane_and_disabled_groups() -> None:
    one = environment_cost(parse_platform("dev", _dev()))
    three = environment_cost(parse_platform("dev", _dev(nat_gateways=3)))
    assert three.total(1) - one.total(1) == pytest.approx(2 * NAT_GATEWAY_HOURLY["us-west-2"])
    lines = {line.item: line for line in one.lines}
    assert lines["EKS control plane"].hourly(1) == EKS_CONTROL_PLANE_HOURLY
    assert lines["node group gpu"].counts == (0, 0, 0) and lines["node group gpu"].hourly(2) == 0.0


def test_unpriced_instance_types_are_named_not_guessed() -> None:
    cost = environment_cost(parse_platform("dev", _dev()))
    unpriced = {line.detail for line in cost.unpriced}
    expected = {g["instance_types"][0] for g in _dev()["node_groups"] if g.get("enabled", True)
                and DEFAULT_PRICES.hourly(g["instance_types"][0], "us-west-2") is None}
    assert unpriced == expected
    costs_md = (ROOT / "docs" / "costs.md").read_text()
    for itype in expected:
        assert f"left out of the totals: node group system ({itype})" in costs_md


# --- The hand-written guide to a second model ---------------------------------------------------------------------

GUIDE = ROOT / "docs" / "adding-a-model.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_model_guide_config_is_valid_in_dev() -> None:
    models = [json.loads(b) for b in _blocks("json")]
    assert {m["task"] for m in models} == {"classification", "question-answering"}
    block = _dev()
    block["models"] = block["models"] + models
    cfg = parse_platform("dev", block)
    assert [m.name for m in cfg.models] == ["minilm", *(m["name"] for m in models)]
    assert all(isinstance(m, ModelSpec) for m in cfg.models)


def test_model_guide_commands_parse() -> None:
    parser = build_parser()
    lines = [ln.strip() for b in _blocks("bash") for ln in b.splitlines()]
    commands = [ln for ln in lines if ln.startswith(("eks-inference", ".venv/bin/eks-inference"))]
    assert len(commands) >= 3
    for line in commands:
        argv = shlex.split(line.split("#")[0])[1:]
        args = parser.parse_args(argv)
        assert callable(args.func), line
