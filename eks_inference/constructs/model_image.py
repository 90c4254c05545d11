"""A processor's container image, built and pushed by ``cdk deploy`` — or an existing URI from config."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from eks_inference.config import ConfigError, ImageBases

REPO_ROOT = Path(__file__).resolve().parents[2]

_SERVE_LOCKS = ("requirements-build.lock", "requirements-serve.lock")
# Image name -> (Dockerfile directory, the hash-locked requirement files the image installs with --require-hashes).
IMAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "graviton": ("model_images/graviton", (*_SERVE_LOCKS, "requirements-torch-cpu.lock")),
    "cpu": ("model_images/graviton", (*_SERVE_LOCKS, "requirements-torch-cpu.lock")),
    "inferentia": ("model_images/inferentia2", _SERVE_LOCKS),
    "gpu": ("model_images/gpu", _SERVE_LOCKS),
    "loadtest": ("model_images/loadtest", ("requirements-build.lock", "requirements-loadtest.lock")),
}


_SHARED_MODULES = ("__init__.py", "errors.py", "config.py", "tables", "storage.py", "metric_names.py",
                   "cli/__init__.py", "cli/__main__.py", "cli/help.py")
IMAGE_MODULES: dict[str, tuple[str, ...]] = {
    "serving": (*_SHARED_MODULES, "artifacts", "runtime", "serving", "compile", "cli/serving.py"),
    "loadtest": (*_SHARED_MODULES, "artifacts/__init__.py", "artifacts/manifests.py",
                 "artifacts/family_index.py", "costs.py", "measure", "loadgen",
                 "analysis", "fleet", "verify", "cli/loadtest.py", "cli/verify.py", "cli/plan.py", "cli/pricing.py"),
}
"""What of the package each kind of image carries, relative to ``eks_inference/``. Every Dockerfile copies the whole
package directory (``COPY eks_inference eks_inference``) and names no module: this list, applied to the build
context, decides. Every image has the command line, the validated config with its tables, storage and the metric
names; serving images the model runtime, artifact resolution, serving and compile; the load-test image the load
generator, measurement, analysis, fleet planning and verification (which reads stored references, no torch). Nothing
that imports aws-cdk-lib is in either. ``tests/unit/test_images.py`` follows every import of the shipped code."""


BASE_BUILD_ARGS: dict[str, tuple[str, str]] = {"inferentia": ("NEURON_BASE", "neuron_base")}
"""Image -> (the build argument its Dockerfile's ``FROM`` reads, the :class:`ImageBases` field that sets it). Every
other base is written, with its digest, in the Dockerfile itself."""


def base_build_args(image: str, bases: ImageBases) -> dict[str, str]:
    """The build arguments that name ``image``'s base, from config; empty where config chooses none (the
    Dockerfile's own default then applies, which config validation refuses where ``require_pinned_images``)."""
    arg = BASE_BUILD_ARGS.get(image)
    value = getattr(bases, arg[1]) if arg else None
    return {arg[0]: value} if arg and value else {}


def image_kind(image: str) -> str:
    return "loadtest" if image == "loadtest" else "serving"


def build_context_excludes(image: str) -> list[str]:
    """Docker-ignore patterns that keep the build context to exactly what the image needs.

    The context is the repository root (the package is shared), narrowed to: pyproject, README, the image's
    hash-locked requirement files, the package modules of :data:`IMAGE_MODULES` for that image, and its own
    Dockerfile. Serving images never see load-test code and the other way round, so an edit to one does not rebuild
    the other, and nothing that imports aws-cdk-lib can reach an image.
    """
    folder, locks = IMAGES[image]
    return [
        "*",
        "!pyproject.toml", "!README.md", *[f"!{lock}" for lock in locks],
        *[f"!eks_inference/{m}" for m in IMAGE_MODULES[image_kind(image)]],
        f"!{folder}/Dockerfile",
        "**/__pycache__", "**/*.py[cod]",
    ]


class ModelImage(Construct):
    """One image per processor family, for that family's CPU architecture.

    :param image: ``graviton`` (arm64), ``cpu`` (the same Dockerfile for amd64), ``inferentia``
        (AWS Neuron base), ``gpu`` (CUDA base) or ``loadtest``.
    :param platform: defaults by image (arm64 for graviton, amd64 otherwise).
    :param image_uri: an existing image; skips the build. Default none (build with Docker at deploy).
    :param bases: base images chosen by config (the Inferentia2 image's ``NEURON_BASE``, pinned by digest); default
        none chosen, so the Dockerfile's own default applies.
    """

    def __init__(self, scope: Construct, construct_id: str, *, image: str,
                 platform: ecr_assets.Platform | None = None, image_uri: str | None = None,
                 bases: ImageBases | None = None) -> None:
        super().__init__(scope, construct_id)
        if image not in IMAGES:
            raise ConfigError(f"ModelImage: image {image!r} is not one of {sorted(IMAGES)}; pick one of them")
        self.asset: ecr_assets.DockerImageAsset | None = None
        self.identity: str
        """Plain text that changes exactly when the image does (the asset hash, or the configured URI);
        ``image_uri`` of a built image is a deploy-time token whose text never changes."""
        if image_uri:
            self.image_uri = image_uri
            self.identity = image_uri
            return
        folder, _ = IMAGES[image]
        default_platform = ecr_assets.Platform.LINUX_ARM64 if image == "graviton" else ecr_assets.Platform.LINUX_AMD64
        self.asset = ecr_assets.DockerImageAsset(
            self, "Asset",
            directory=str(REPO_ROOT),
            file=f"{folder}/Dockerfile",
            platform=platform or default_platform,
            exclude=build_context_excludes(image),
            ignore_mode=IgnoreMode.DOCKER,
            display_name=f"eks-inference-{image}",
            build_args=base_build_args(image, bases or ImageBases()) or None,
        )
        self.image_uri = self.asset.image_uri
        self.identity = self.asset.asset_hash
