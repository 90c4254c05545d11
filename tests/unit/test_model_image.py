"""ModelImage in a bare stack: an image built at deploy for its processor's architecture from a narrow context, or
an existing URI used as it is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ecr_assets as ecr_assets

from eks_inference.config import ConfigError
from eks_inference.constructs.model_image import IMAGES, ModelImage

INFRASTRUCTURE = ("eks_inference/constructs/", "eks_inference/stacks/", "eks_inference/k8s/", "tests/", ".venv/",
                  "node_modules/", "cdk.out/")
"""What no image may carry: code that imports aws-cdk-lib, and the workspace."""


@dataclass
class Built:
    out: Path
    images: dict[str, ModelImage]
    docker_images: dict[str, Any]
    """The stack's asset manifest entries, by asset hash."""

    def source(self, key: str) -> dict[str, Any]:
        return dict(self.docker_images[self.images[key].identity]["source"])

    def context(self, key: str) -> set[str]:
        root = self.out / self.source(key)["directory"]
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One synth: graviton and cpu (one Dockerfile, each at its default platform), load-test built for arm64 by
    request, and an inferentia image given as an existing URI."""
    out = tmp_path_factory.mktemp("images")
    app = App(outdir=str(out))
    stack = Stack(app, "Images")
    images = {
        "graviton": ModelImage(stack, "Graviton", image="graviton"),
        "cpu": ModelImage(stack, "Cpu", image="cpu"),
        "loadtest": ModelImage(stack, "Loadtest", image="loadtest", platform=ecr_assets.Platform.LINUX_ARM64),
        "inferentia": ModelImage(stack, "Inferentia", image="inferentia",
                                 image_uri="111122223333.dkr.ecr.us-west-2.amazonaws.com/inf:1"),
    }
    app.synth()
    manifest = json.loads((out / "Images.assets.json").read_text())
    return Built(out, images, manifest.get("dockerImages", {}))


@pytest.mark.parametrize(("key", "dockerfile", "platform"), [
    ("graviton", "model_images/graviton/Dockerfile", "linux/arm64"),
    ("cpu", "model_images/graviton/Dockerfile", "linux/amd64"),
    ("loadtest", "model_images/loadtest/Dockerfile", "linux/arm64"),
])
def test_built_image_uses_its_dockerfile_and_platform(built: Built, key: str, dockerfile: str, platform: str) -> None:
    """GIVEN an image to build, with or without a platform WHEN synthesized THEN its asset names its Dockerfile and
    the platform asked for, by default arm64 for graviton only; its identity is the asset hash."""
    image = built.images[key]
    assert image.asset is not None and image.identity == image.asset.asset_hash
    source = built.source(key)
    assert (source["dockerFile"], source["platform"]) == (dockerfile, platform)
    assert built.docker_images[image.identity]["displayName"] == f"eks-inference-{key}"


def test_one_dockerfile_for_two_architectures_is_two_images(built: Built) -> None:
    """GIVEN graviton and cpu, which share a Dockerfile WHEN synthesized THEN they are two images: the identity
    changes with the platform, so a deploy rebuilds each for its own nodes."""
    assert built.images["graviton"].identity != built.images["cpu"].identity
    assert set(built.docker_images) == {built.images[k].identity for k in ("graviton", "cpu", "loadtest")}


@pytest.mark.parametrize("key", ["graviton", "loadtest"])
def test_build_context_holds_what_the_image_needs_and_no_infrastructure(built: Built, key: str) -> None:
    """GIVEN an image to build WHEN its context is staged THEN it holds its Dockerfile, pyproject and its own
    hash-locked requirement files, and nothing that imports aws-cdk-lib, no workspace and no bytecode."""
    folder, locks = IMAGES[key]
    files = built.context(key)
    assert {f"{folder}/Dockerfile", "pyproject.toml", *locks} <= files
    assert not [f for f in files if f.startswith(INFRASTRUCTURE)]
    assert not [f for f in files if f.startswith("model_images/") and not f.startswith(f"{folder}/")]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_existing_uri_is_used_as_is(built: Built) -> None:
    """GIVEN image_uri WHEN the construct is built THEN nothing is built or staged, and the URI is both the image
    and its identity (a new URI is a new image)."""
    image = built.images["inferentia"]
    uri = "111122223333.dkr.ecr.us-west-2.amazonaws.com/inf:1"
    assert image.asset is None and image.node.children == []
    assert image.image_uri == uri and image.identity == uri


def test_an_unknown_image_is_refused() -> None:
    """GIVEN an image name without a Dockerfile WHEN the construct is built THEN the error lists the known ones."""
    with pytest.raises(ConfigError,
                       match=r"^ModelImage: image 'tpu' is not one of \['cpu', 'gpu', 'graviton', 'inferentia', "):
        ModelImage(Stack(App(), "Unknown"), "Tpu", image="tpu")
