"""Render the cdk8s charts with fixed images and bucket, and validate manifests against real schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cdk8s
import kubernetes_validate
import yaml
from jsonschema import Draft7Validator

from eks_inference.config import ENVIRONMENTS_KEY, KUBERNETES_VERSION, PlatformConfig, Processor, load_config
from eks_inference.k8s.load_test_chart import LoadTestChart, LoadTestPlan
from eks_inference.k8s.ray_service import GcsFaultTolerance
from eks_inference.k8s.serving_chart import ServingChart, ServingTarget, plan_targets
from tests.conftest import ROOT, cdk_context

CRD_DIR = ROOT.parent / "shared" / "kuberay-v1.7.0"
GATEWAY_API_CRDS = ROOT / "tests" / "data" / "crds" / "gateway-api-v1.6.0"
LBC_CRDS = ROOT / "tests" / "data" / "crds" / "aws-load-balancer-controller-v3.5.0"
"""Kept in the repository (tests/data/crds/README.md names each file's upstream release)."""
IMAGES = {p: f"111122223333.dkr.ecr.us-west-2.amazonaws.com/eks-inference:{p.value}-0123abcd" for p in Processor}
LOADTEST_IMAGE = "111122223333.dkr.ecr.us-west-2.amazonaws.com/eks-inference:loadtest-0123abcd"
REPOSITORY = "s3://eks-inference-models-example"
GCS_STORE_HOST = "master.eks-inference-gcs.abc123.use1.cache.amazonaws.com"


def config(env_name: str = "dev", **changes: Any) -> PlatformConfig:
    envs = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY])
    envs[env_name].update(changes)
    return load_config(env_name, envs)


def render(cfg: PlatformConfig) -> tuple[list[ServingTarget], list[dict[str, Any]], list[dict[str, Any]]]:
    """(targets, serving manifests, load-test manifests) exactly as InferenceStack would add them."""
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region,
                           gcs_store=gcs_store(cfg))
    app = cdk8s.App()
    serving = ServingChart(app, "serving", targets=targets, api_server_cidrs=[cfg.vpc_cidr])
    plan = LoadTestPlan(spec=cfg.loadtest, image=LOADTEST_IMAGE, results_uri=f"{REPOSITORY}/results",
                        region=cfg.region, front_door=cfg.front_door)
    load = LoadTestChart(app, "loadtest", plan=plan, targets=targets)
    return targets, serving.manifests(), list(load.to_json())


def gcs_store(cfg: PlatformConfig) -> GcsFaultTolerance:
    """The store the stacks would provision, at a fixed address (its subnets: the VPC, as for the API server)."""
    return GcsFaultTolerance(host=GCS_STORE_HOST, cidrs=(cfg.vpc_cidr,))


def kubernetes_version() -> str:
    return f"{KUBERNETES_VERSION}.0"


def validate_core(manifest: dict[str, Any]) -> None:
    """kubernetes-validate --strict against the cluster's Kubernetes minor (raises on any error)."""
    kubernetes_validate.validate(manifest, kubernetes_version(), strict=True)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields wherever the CRD lists properties and does not preserve unknown ones."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = _strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _strict(schema["additionalProperties"])
    return schema


def crd_validator(kind_file: str, version: str = "v1", directory: Path = CRD_DIR) -> Draft7Validator | None:
    path = directory / kind_file
    if not path.is_file():
        return None
    crd = yaml.safe_load(path.read_text())
    (ver,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(ver["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return Draft7Validator(schema)


def crd_errors(validator: Draft7Validator, manifest: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def snapshot_path(name: str) -> Path:
    return ROOT / "tests" / "snapshot" / "__snapshots__" / f"{name}.yaml"
