"""RegistryScanning in a bare stack, and scan on push in every synthesized environment that builds images."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from eks_inference.config import ConfigError, ImageScanning, load_config
from eks_inference.constructs.registry_scanning import ASSET_REPOSITORIES, RegistryScanning
from tests.conftest import Assembly, cdk_context

EVERY = {"Filter": "*", "FilterType": "WILDCARD"}


def bare(scanning: ImageScanning) -> tuple[Stack, RegistryScanning | None]:
    stack = Stack(App(), "Bare")
    return stack, RegistryScanning.unless_account(stack, "RegistryScanning", scanning=scanning)


def test_basic_scans_every_pushed_image_of_the_registry() -> None:
    """GIVEN the default WHEN synthesized THEN the registry scans on push, basic, every repository: the CDK asset
    repository included, and no repository loses a scan it had by its own setting."""
    stack, _ = bare(ImageScanning.BASIC)
    Template.from_stack(stack).has_resource_properties("AWS::ECR::RegistryScanningConfiguration", {
        "ScanType": "BASIC", "Rules": [{"ScanFrequency": "SCAN_ON_PUSH", "RepositoryFilters": [EVERY]}]})


def test_enhanced_rescans_the_asset_repositories_and_scans_every_push() -> None:
    stack, _ = bare(ImageScanning.ENHANCED)
    Template.from_stack(stack).has_resource_properties("AWS::ECR::RegistryScanningConfiguration", {
        "ScanType": "ENHANCED", "Rules": [
            {"ScanFrequency": "CONTINUOUS_SCAN",
             "RepositoryFilters": [{"Filter": ASSET_REPOSITORIES, "FilterType": "WILDCARD"}]},
            {"ScanFrequency": "SCAN_ON_PUSH", "RepositoryFilters": [EVERY]}]})


def test_account_leaves_the_registry_alone() -> None:
    stack, scanning = bare(ImageScanning.ACCOUNT)
    assert scanning is None
    Template.from_stack(stack).resource_count_is("AWS::ECR::RegistryScanningConfiguration", 0)
    with pytest.raises(ConfigError, match=r"RegistryScanning scanning: .*ACCOUNT.* sets nothing; give "
                                          r"ImageScanning.BASIC or ENHANCED, or build no RegistryScanning"):
        RegistryScanning(Stack(App(), "Other"), "RegistryScanning", scanning=ImageScanning.ACCOUNT)


def test_the_bootstrap_repository_name_matches_the_asset_filter() -> None:
    """The CDK bootstrap template names the assets repository cdk-<qualifier>-container-assets-<account>-<region>."""
    import re

    pattern = "^" + re.escape(ASSET_REPOSITORIES).replace(r"\*", "[a-z0-9-]+") + "$"
    assert re.match(pattern, "cdk-hnb659fds-container-assets-111122223333-us-west-2")


@pytest.mark.parametrize("value", ["basic", "enhanced", "account"])
def test_config_reads_image_scanning(value: str) -> None:
    envs = cdk_context()["eks-inference:environments"]
    assert load_config("dev", {"dev": {**envs["dev"], "image_scanning": value}}).image_scanning is ImageScanning(value)
    assert load_config("dev", envs).image_scanning is ImageScanning.BASIC


def test_config_refuses_an_unknown_image_scanning() -> None:
    envs = cdk_context()["eks-inference:environments"]
    with pytest.raises(ConfigError, match=r"image_scanning: 'inspector' is not allowed; use one of basic, enhanced, "
                                          r"account"):
        load_config("dev", {"dev": {**envs["dev"], "image_scanning": "inspector"}})


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_environment_that_builds_images_scans_them_on_push(assemblies: dict[str, Assembly],
                                                                   env_name: str) -> None:
    """GIVEN an example environment (its images built by cdk deploy) WHEN synthesized THEN its Inference stack sets
    the registry to scan every pushed image."""
    template: dict[str, Any] = assemblies[env_name].template("-Inference")
    assets = [r for r in assemblies[env_name].manifest["artifacts"].values()
              if r["type"] == "cdk:asset-manifest"]
    assert assets, "the example environments build their images"
    (config,) = [r["Properties"] for r in template["Resources"].values()
                 if r["Type"] == "AWS::ECR::RegistryScanningConfiguration"]
    assert config == {"ScanType": "BASIC", "Rules": [{"ScanFrequency": "SCAN_ON_PUSH", "RepositoryFilters": [EVERY]}]}
