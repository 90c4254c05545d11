"""A model family in config: parsed and validated (one line per mistake), rendered as a RayService per processor
that KubeRay's CRD schema and Ray Serve's own config parsing accept, with pods that fit their groups."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from eks_inference.config import ConfigError, FamilySpec, Processor, parse_bytes, parse_model
from eks_inference.serving.serve_config import (
    FAMILY_IMPORT_PATH,
    model_repository_uris,
    render_serve_config,
)
from tests.unit.k8s_support import REPOSITORY, config, crd_errors, crd_validator, render

FAMILY = {"name": "tenants", "task": "embedding", "processors": ["graviton", "inferentia"],
          "family": {"memory_budget": "4GiB"},
          "serving": {"max_batch_size": 8, "num_threads": 2}}


def dev_with_family(**family: Any) -> Any:
    from eks_inference.config import ENVIRONMENTS_KEY
    from tests.conftest import cdk_context

    models = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY]["dev"]["models"])
    entry = copy.deepcopy(FAMILY)
    entry["family"].update(family)
    return config("dev", models=[*models, entry])


def test_sizes_parse_in_bytes_and_binary_units() -> None:
    assert parse_bytes(1024) == 1024
    assert parse_bytes("4GiB") == 4 << 30
    assert parse_bytes("512 MiB") == 512 << 20
    assert parse_bytes("1.5GiB") == 3 << 29
    assert parse_bytes("lots") is None
    assert parse_bytes(True) is None


def test_a_family_entry_parses_with_its_budget() -> None:
    spec = parse_model(FAMILY)
    assert spec.family == FamilySpec(memory_budget="4GiB")
    assert spec.family.memory_budget_bytes == 4 << 30


def test_each_mistake_in_a_family_is_one_line() -> None:
    bad = {**FAMILY, "weights_sha256": "a" * 64, "family": {"memory_budget": "a lot", "colour": "red"}}
    with pytest.raises(ConfigError) as e:
        parse_model(bad)
    lines = e.value.errors
    assert any("family" in line and "'colour'" in line and "not a known field" in line for line in lines), lines
    with pytest.raises(ConfigError) as e:
        parse_model({**FAMILY, "task": "poetry", "family": {"memory_budget": "a lot"}})
    lines = e.value.errors
    assert len(lines) == 2, lines  # the task and the budget, one line each
    assert any("memory_budget: 'a lot' is not a memory size" in line for line in lines), lines
    with pytest.raises(ConfigError, match=r"weights_sha256.*is set on a family"):
        parse_model({**FAMILY, "weights_sha256": "a" * 64})
    with pytest.raises(ConfigError, match="family: 'big' is not a mapping"):
        parse_model({**FAMILY, "family": "big"})


def test_a_budget_that_leaves_the_pod_no_room_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"family memory_budget: '8GiB' leaves less than 1 GiB of the worker pod"):
        dev_with_family(memory_budget="8GiB")


def test_the_family_serve_config_names_the_family_app_and_its_prefix() -> None:
    spec = parse_model({**FAMILY, "processors": ["cpu"]})
    model_uri, artifact_uri = model_repository_uris(REPOSITORY, spec)
    assert model_uri == f"{REPOSITORY}/models/tenants"
    cfg = render_serve_config(spec, Processor.CPU, model_uri=model_uri, artifact_uri=artifact_uri)
    app = cfg["applications"][0]
    assert app["import_path"] == FAMILY_IMPORT_PATH
    assert app["route_prefix"] == "/tenants"
    assert app["args"]["family"]["memory_budget_bytes"] == 4 << 30
    assert app["args"]["family"]["routing"] == "model-blind"
    assert app["args"]["weights_sha256"] is None

    from eks_inference.serving.local import ray_environment

    ray_environment()
    from ray.serve.schema import ServeDeploySchema

    parsed = ServeDeploySchema.model_validate(cfg)
    assert parsed.applications[0].import_path == FAMILY_IMPORT_PATH


def test_synth_renders_a_valid_ray_service_per_family_and_processor() -> None:
    targets, manifests, _ = render(dev_with_family())
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "RayService"}
    assert {"tenants-graviton", "tenants-inferentia"} <= set(services)
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is None:
        pytest.skip("KubeRay CRDs absent")
    import yaml

    for name in ("tenants-graviton", "tenants-inferentia"):
        rs = services[name]
        assert crd_errors(validator, rs) == []
        serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
        assert serve["applications"][0]["import_path"] == FAMILY_IMPORT_PATH
        assert serve["applications"][0]["args"]["model_uri"] == f"{REPOSITORY}/models/tenants"
    # the family's pods fit their groups: the same capacity check as any model (config raised otherwise), and a
    # family's target gets no compile Job (members are compiled when published)
    import cdk8s

    from eks_inference.k8s.compile_chart import CompileChart

    chart = CompileChart(cdk8s.App(), "compile", targets=targets, region="us-west-2")
    compiled = {j["metadata"]["labels"].get("eks-inference/compile-target") for j in chart.jobs}
    assert not any(c and c.startswith("tenants-") for c in compiled), compiled
