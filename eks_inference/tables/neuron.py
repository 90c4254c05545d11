"""The Neuron stack as pinned: the SDK the Inferentia2 image and its compile step use, and the EKS AMI releases
whose Neuron driver runs it, recorded together.

A compiled Neuron artifact is keyed by the compiler that wrote it (``neuronx-cc``, in the artifact's cache key and
manifest), so a new SDK means new artifacts; a new AMI release brings a new kernel driver to every inf2 node. Both
are reviewed changes: bump :data:`NEURON_SDK` (and the Dockerfile, which a test keeps equal), compile and publish
the artifacts, then deploy (docs/deploy.md, Upgrading the Neuron SDK or AMI). ``eks-inference preflight`` refuses a
deploy whose pinned compiler has no artifact published for a model an inf2 group serves.

Sources, as of :data:`NEURON_DATE`:

- SDK 2.30.0 (released 2026-05-21): the Neuron release content page
  (awsdocs-neuron.readthedocs-hosted.com/en/v2.30.0/release-notes/releasecontent.html) lists neuronx-cc-2.25.3371.0,
  aws-neuronx-dkms-2.28.0.0 and aws-neuronx-runtime-lib-2.32.31.0; the DLC tag
  ``pytorch-inference-neuronx:2.9.0-neuronx-py312-sdk2.30.0-ubuntu24.04`` carries that release.
- AMI release ``1.36.2-20260714``: awslabs/amazon-eks-ami CHANGELOG.md, "AMI Release v20260714", Kubernetes 1.36
  table: ``amazon-eks-node-al2023-x86_64-neuron-1.36-v20260714`` with aws-neuronx-dkms 2.29.0.0 (kernel 6.18).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEURON_DATE = "2026-07-23"
"""When the SDK and AMI entries were last checked against their release notes."""


@dataclass(frozen=True)
class NeuronSdk:
    """One Neuron SDK release, as far as this project depends on it.

    :param version: the SDK release (``2.30.0``): the DLC tag's ``sdkX.Y.Z`` and the image's
        ``NEURON_SDK_VERSION``.
    :param neuronx_cc: the compiler package's version; a compiled artifact's manifest records it under
        ``versions.neuronx_cc`` (read from the image's package metadata), and this is what the check of published
        artifacts compares.
    :param driver: the ``aws-neuronx-dkms`` kernel driver released with it; the nodes' driver must be no older.
    :param runtime: ``aws-neuronx-runtime-lib`` in the image.
    """

    version: str
    neuronx_cc: str
    driver: str
    runtime: str


@dataclass(frozen=True)
class NeuronAmi:
    """One EKS-optimized AL2023 Neuron AMI release (``AL2023_x86_64_NEURON``).

    :param release_version: what a managed node group's ``releaseVersion`` takes (``K8S.PATCH-YYYYMMDD``).
    :param ami_name: the AMI's name in that release.
    :param driver: the ``aws-neuronx-dkms`` version the AMI ships.
    """

    release_version: str
    ami_name: str
    driver: str


NEURON_SDK = NeuronSdk(version="2.30.0", neuronx_cc="2.25.3371.0", driver="2.28.0.0", runtime="2.32.31.0")
"""The one Neuron SDK the Inferentia2 image builds from and its compile step compiles with."""

NEURON_AMIS: dict[str, NeuronAmi] = {
    "1.36.2-20260714": NeuronAmi(release_version="1.36.2-20260714",
                                 ami_name="amazon-eks-node-al2023-x86_64-neuron-1.36-v20260714", driver="2.29.0.0"),
}
"""AMI releases whose Neuron driver is recorded here; an inf2 group's ``ami_release_version`` should be one."""

NEURON_METADATA = "EksInference::Neuron"
"""Template ``Metadata`` key under which the Inference stack records the pinned SDK and the models on inf2."""

NEURON_AMI_RELEASE = "1.36.2-20260714"
"""The release cdk.json pins on every environment's inf2 group, and the one a missing pin's error suggests."""


def version_tuple(version: str) -> tuple[int, ...]:
    """``2.28.0.0`` → (2, 28, 0, 0); anything after the numbers is ignored."""
    return tuple(int(p) for p in re.findall(r"\d+", version.split("-")[0].split("+")[0]))


def driver_gap(ami: NeuronAmi, sdk: NeuronSdk = NEURON_SDK) -> str | None:
    """Why ``ami``'s driver cannot run ``sdk``'s runtime (it is older than the SDK's own driver), or None."""
    if version_tuple(ami.driver) < version_tuple(sdk.driver):
        return (f"AMI release {ami.release_version} ships Neuron driver {ami.driver}, older than the {sdk.driver} "
                f"released with Neuron SDK {sdk.version}")
    return None
