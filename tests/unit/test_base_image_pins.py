"""Bases by content: every ``FROM`` of every image is pinned by digest, or is the Neuron build argument that synth fills
from ``images.neuron_base``, which config requires pinned wherever ``require_pinned_images`` (the default) is on."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk import App, Stack

from eks_inference.config import (
    ENVIRONMENTS_KEY,
    NEURON_BASE_TAG,
    PIN_COMMAND,
    PINNED_IMAGE_RE,
    ConfigError,
    ImageBases,
    parse_platform,
)
from eks_inference.constructs.model_image import BASE_BUILD_ARGS, IMAGES, ModelImage
from tests.conftest import ROOT, cdk_context

DIGEST = "sha256:" + "0123456789abcdef" * 4
PINNED_NEURON = f"{NEURON_BASE_TAG}@{DIGEST}"
DOCKERFILES = sorted((ROOT / "model_images").glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[int, str, str]]:
    """(line, KEYWORD, arguments) with continuation lines joined and comments dropped."""
    out, buf, start = [], [], 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        start = start if buf else n
        buf.append(s.removesuffix("\\").strip())
        if not s.endswith("\\"):
            keyword, _, args = " ".join(buf).partition(" ")
            out.append((start, keyword.upper(), args.strip()))
            buf = []
    return out


def configured_arg(path: Path) -> str | None:
    """The build argument synth fills for the image built from ``path`` (``BASE_BUILD_ARGS``), if any."""
    names = {BASE_BUILD_ARGS[i][0] for i, (folder, _) in IMAGES.items()
             if i in BASE_BUILD_ARGS and ROOT / folder / "Dockerfile" == path}
    assert len(names) <= 1, names
    return next(iter(names), None)


def test_every_image_is_built_by_the_stack() -> None:
    assert {p.relative_to(ROOT).parent.as_posix() for p in DOCKERFILES} == {f for f, _ in IMAGES.values()}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_from_is_pinned_by_digest_or_is_the_base_config_pins(path: Path) -> None:
    """GIVEN every Dockerfile under model_images/ WHEN each FROM is read THEN it is an earlier stage, a base pinned by
    digest (``name:tag@sha256:<64 hex>``), or exactly the build argument that synth fills from config for that image,
    declared before the first FROM with the Neuron DLC's tag as its default (for hand builds)."""
    arg, stages, global_args = configured_arg(path), set(), {}
    for line, keyword, args in instructions(path):
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        if keyword != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        base = words[0]
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if base.lower() in stages:
            continue
        if arg and base == f"${{{arg}}}":
            assert global_args.get(arg, "").partition("@")[0] == NEURON_BASE_TAG, (
                f"{path.relative_to(ROOT)}: ARG {arg}'s default must be eks_inference.config.NEURON_BASE_TAG")
            continue
        m = PINNED_IMAGE_RE.match(base)
        assert m and m["tag"], (f"{path.relative_to(ROOT)}:{line}: FROM {base} is not pinned by digest; run "
                                f"`{PIN_COMMAND}`")


def _dev(**changes: Any) -> dict[str, Any]:
    block = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY]["dev"])
    block.pop("require_pinned_images", None)  # the default: required
    block.update(changes)
    return block


def _errors(block: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_platform("dev", block)
    return list(e.value.errors)


def test_an_environment_that_builds_the_neuron_image_from_a_tag_is_refused_with_the_command_that_pins_it() -> None:
    """GIVEN dev serving on Inferentia2 with require_pinned_images at its default WHEN images.neuron_base is not set
    THEN synth's config check refuses it in one line that names the field, the tag, and the commands that give the
    digest; pinned, it passes."""
    (line,) = _errors(_dev())
    assert line.startswith("environment 'dev' images.neuron_base: not set, so the Inferentia2 image would build from "
                           f"the tag {NEURON_BASE_TAG}")
    assert f"`{PIN_COMMAND} --env dev`" in line and f"`crane digest {NEURON_BASE_TAG}`" in line
    assert "require_pinned_images: false" in line
    config = parse_platform("dev", _dev(images={"neuron_base": PINNED_NEURON}))
    assert config.images.neuron_base == PINNED_NEURON and config.require_pinned_images


def test_the_rule_applies_only_where_the_neuron_image_is_built() -> None:
    no_inferentia = _dev()
    no_inferentia["models"][0]["processors"] = ["graviton"]
    assert parse_platform("dev", no_inferentia).images == ImageBases()
    assert parse_platform("dev", _dev(image_uris={"inferentia": "111122223333.dkr.ecr.us-west-2.amazonaws.com/i:1"}))
    assert not parse_platform("dev", _dev(require_pinned_images=False)).require_pinned_images


@pytest.mark.parametrize("value", [
    NEURON_BASE_TAG, "public.ecr.aws/neuron/pytorch-inference-neuronx@sha256:abc", f"{NEURON_BASE_TAG}@md5:{'0' * 32}",
    f"{NEURON_BASE_TAG.upper()}@{DIGEST}", 42,
])
def test_a_neuron_base_not_named_by_content_is_refused(value: Any) -> None:
    """Set, images.neuron_base must name a digest: a tag, a short or foreign digest or a non-string is refused (and
    the missing-digest rule does not also fire)."""
    (line,) = _errors(_dev(images={"neuron_base": value}))
    assert line.startswith(f"images.neuron_base: {value!r} is not pinned by digest; write "
                           "<repository>:<tag>@sha256:<64 hex>")


def test_digest_only_and_unknown_keys() -> None:
    assert parse_platform("dev", _dev(images={"neuron_base": f"public.ecr.aws/neuron/x@{DIGEST}"}))
    (line,) = _errors(_dev(images={"neuron": PINNED_NEURON}))
    assert line.startswith("images: 'neuron' is not a known field")
    (line,) = _errors(_dev(require_pinned_images="yes"))
    assert line == ("environment 'dev' require_pinned_images: 'yes' is not true or false; write true (refuse bases "
                    "named by tag alone) or false")


def test_the_examples_opt_out_only_while_the_neuron_base_is_unpinned() -> None:
    """The example environments build the Neuron image, whose digest could not be read where they were written. Each
    opts out of require_pinned_images for that reason alone: with the opt-out removed, the Neuron base is the one
    complaint; and once an example pins it, it must require pinning again."""
    for env, block in cdk_context()[ENVIRONMENTS_KEY].items():
        if block.get("images", {}).get("neuron_base"):
            assert block.get("require_pinned_images", True) is True, f"{env}: pinned, so require_pinned_images"
            continue
        assert block["require_pinned_images"] is False
        required = {k: v for k, v in block.items() if k != "require_pinned_images"}
        with pytest.raises(ConfigError) as e:
            parse_platform(env, required)
        assert [ln.split(":")[0] for ln in e.value.errors] == [f"environment {env!r} images.neuron_base"]


def test_synth_hands_the_configured_base_to_the_neuron_build_only(tmp_path: Path) -> None:
    """GIVEN the Inferentia2 and Graviton images built with images.neuron_base set WHEN synthesized THEN the Neuron
    asset's build arguments carry exactly that reference as NEURON_BASE (what its FROM reads, and part of the asset
    hash), and the Graviton asset has none; without a configured base, the Neuron asset has none either (the
    Dockerfile's default, which config refuses where pinning is required)."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bases")
    bases = ImageBases(neuron_base=PINNED_NEURON)
    images = {
        "pinned": ModelImage(stack, "Inferentia", image="inferentia", bases=bases),
        "graviton": ModelImage(stack, "Graviton", image="graviton", bases=bases),
        "default": ModelImage(Stack(app, "Default"), "Inferentia", image="inferentia"),
    }
    app.synth()
    sources = {}
    for key, image in images.items():
        manifest = json.loads((tmp_path / f"{image.node.scopes[1].node.id}.assets.json").read_text())
        sources[key] = manifest["dockerImages"][image.identity]["source"]
    assert sources["pinned"]["dockerBuildArgs"] == {"NEURON_BASE": PINNED_NEURON}
    assert "dockerBuildArgs" not in sources["graviton"] and "dockerBuildArgs" not in sources["default"]
    assert images["pinned"].identity != images["default"].identity
    dockerfile = (ROOT / sources["pinned"]["dockerFile"]).read_text()
    assert re.search(r"^FROM \$\{NEURON_BASE\}$", dockerfile, re.MULTILINE)


def test_the_workflows_check_the_pins_before_any_image_is_built() -> None:
    """The pull request's tests and each environment's synth job (which the deploy job, the one that builds images,
    needs) run the pin check, with network and without a token, before synthesizing."""
    check = "python scripts/pin_base_images.py check"
    workflows = ROOT / ".github" / "workflows"
    for name, job, before in (("pull-request.yml", "test", "make setup-test lint"),
                              ("deploy-environment.yml", "synth", "cdk synth")):
        spec = yaml.safe_load((workflows / name).read_text())["jobs"][job]
        runs = [step.get("run", "") for step in spec["steps"]]
        at = runs.index(check)
        assert at < next(i for i, r in enumerate(runs) if before in r), name
        assert "id-token" not in spec.get("permissions", {}), name
    deploy = yaml.safe_load((workflows / "deploy-environment.yml").read_text())["jobs"]["deploy"]
    assert deploy["needs"] == "synth"
