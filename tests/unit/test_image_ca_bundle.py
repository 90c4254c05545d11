"""Every serving image carries the CA bundle the Ray heads trust for the GCS store (``RAY_REDIS_CA_CERT``): the final
stage of each serving Dockerfile fails its build when the bundle is missing, before it drops to the image's user."""

from __future__ import annotations

import subprocess

import pytest

from eks_inference.constructs.model_image import IMAGES, image_kind
from eks_inference.k8s.ray_service import SYSTEM_CA_BUNDLE
from tests.conftest import ROOT

SERVING_DOCKERFILES = sorted({ROOT / folder / "Dockerfile" for image, (folder, _) in IMAGES.items()
                              if image_kind(image) == "serving"})


def final_stage_instructions(text: str) -> list[str]:
    """The instructions after the last ``FROM``, continuation lines joined, comments dropped."""
    instructions: list[str] = []
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("FROM "):
            instructions = []
        instructions.append(line)
    return instructions


@pytest.mark.parametrize("dockerfile", SERVING_DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_final_stage_refuses_to_build_without_the_ca_bundle(dockerfile) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a serving Dockerfile WHEN its final stage is read THEN a RUN checks the bundle before USER
    steps = final_stage_instructions(dockerfile.read_text())
    (check,) = [i for i, s in enumerate(steps) if s.startswith("RUN ") and f"test -s {SYSTEM_CA_BUNDLE}" in s]
    (user,) = [i for i, s in enumerate(steps) if s.startswith("USER ")]
    assert check < user
    assert "exit 1" in steps[check]


def test_the_check_fails_without_the_file_and_passes_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # GIVEN the graviton image's check, pointed at a scratch path WHEN the file is absent, then present THEN 1, then 0
    steps = final_stage_instructions((ROOT / "model_images/graviton/Dockerfile").read_text())
    (command,) = [s[4:] for s in steps if s.startswith("RUN ") and SYSTEM_CA_BUNDLE in s]
    bundle = tmp_path / "ca-certificates.crt"
    script = command.replace(SYSTEM_CA_BUNDLE, str(bundle))
    missing = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "install ca-certificates" in missing.stderr
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert subprocess.run(["bash", "-o", "pipefail", "-c", script], timeout=30).returncode == 0
