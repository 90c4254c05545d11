"""Publish a member of a model family, and derive deterministic members from one model for demos and tests.

``publish_member`` uploads the member's weights as any model revision (create-only, a manifest of sha256 sums, the
digest printed) under ``models/{family}/members/{model_id}/{revision}/``, and only then writes the family's next
index generation naming that digest (:mod:`eks_inference.artifacts.family_index`): a replica that reads the new
index finds every file it names already there. Replicas serve a member on its first request; nothing is deployed.

``derive_member`` writes a model directory whose weights are the base model's plus seeded noise (every float tensor
``w`` becomes ``w + scale * std(w) * N(0, 1)`` from a generator seeded with ``seed``): the same seed gives the same
bytes, hence the same digest, on any machine, and different seeds give models whose answers differ measurably, so a
replica that served one member's request with another's weights is caught by ``verify``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from eks_inference.artifacts.family_index import (
    MEMBERS_DIR,
    FamilyIndex,
    Member,
    add_member,
    check_model_id,
    member_prefix,
)
from eks_inference.artifacts.resolve import bundled_model_path
from eks_inference.compile.publish import ReferencesFn, publish_model
from eks_inference.config import ConfigError
from eks_inference.storage import join, open_store

WEIGHTS_FILE = "model.safetensors"
COMPILE_FAMILY_LABEL = "eks-inference/compile-family"
"""On each family's member-compile CronJob (:mod:`eks_inference.k8s.compile_chart`): the family whose members it
compiles, one CronJob per processor; :func:`compile_now_command` finds them by it."""
SERVING_NAMESPACE = "eks-inference"
"""Where the serving chart puts the RayServices and the compile CronJobs (``k8s.serving_chart.NAMESPACE``; the
publisher runs where cdk8s is not installed, so the name is repeated here and a test keeps the two equal)."""


def compile_now_command(family: str, namespace: str = SERVING_NAMESPACE) -> str:
    """The one shell command that runs the family's member-compile CronJobs now instead of at their next schedule:
    a Job from each (one per processor), which compiles every member whose artifact is missing."""
    return (f"for c in $(kubectl -n {namespace} get cronjobs -l {COMPILE_FAMILY_LABEL}={family} "
            "-o jsonpath='{.items[*].metadata.name}'); do "
            f"kubectl -n {namespace} create job --from=cronjob/$c $c-$(date +%s); done")


@dataclass(frozen=True)
class PublishedMember:
    family: str
    model_id: str
    uri: str
    status: str
    digest: str
    bytes: int
    generation: int
    """The index generation that names the member."""
    references: tuple[str, ...] = field(default=())


def family_uri(repository_uri: str, family: str) -> str:
    return join(repository_uri, "models", family)


def publish_member(source: str | Path, repository_uri: str, *, family: str, model_id: str, revision: str = "v1",
                   task: str | None = None, endpoint_url: str | None = None,
                   references: ReferencesFn | None = None) -> PublishedMember:
    """Publish ``source`` as member ``model_id`` of ``family``, then index it."""
    check_model_id(model_id)
    res = publish_model(source, repository_uri, name=f"{family}/{MEMBERS_DIR}/{model_id}",
                        revision=revision, task=task, endpoint_url=endpoint_url, references=references)
    assert res.digest is not None
    index: FamilyIndex = add_member(open_store(family_uri(repository_uri, family), endpoint_url=endpoint_url),
                                    family, Member(model_id, revision, res.digest, res.bytes), task=task)
    return PublishedMember(family, model_id, res.uri, res.status, res.digest, res.bytes, index.generation,
                           res.references)


def member_uri(repository_uri: str, family: str, model_id: str, revision: str) -> str:
    """Where a member's revision lives (the layout :func:`publish_member` writes)."""
    return join(family_uri(repository_uri, family), member_prefix(model_id, revision))


def derive_member(base: str | Path, dest: str | Path, *, seed: int, scale: float = 0.05) -> Path:
    """A copy of the model directory ``base`` (or ``bundled:NAME``) with seeded noise on its weights."""
    import torch
    from safetensors.torch import load_file, save_file

    src = bundled_model_path(str(base).removeprefix("bundled:")) if str(base).startswith("bundled:") else Path(base)
    if not (src / WEIGHTS_FILE).is_file():
        raise ConfigError(f"derive: {str(base)!r} has no {WEIGHTS_FILE}; give a Hugging Face model directory")
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.name != WEIGHTS_FILE and not p.name.startswith("."):
            shutil.copyfile(p, out / p.name)
        elif p.is_dir() and not p.name.startswith("."):
            shutil.copytree(p, out / p.name, dirs_exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = load_file(str(src / WEIGHTS_FILE))
    derived = {}
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and t.numel() > 1:
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float32)
            t = (t.float() + scale * t.float().std() * noise).to(t.dtype)
        derived[name] = t.contiguous()
    save_file(derived, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    return out


__all__ = ["COMPILE_FAMILY_LABEL", "PublishedMember", "compile_now_command", "derive_member", "family_uri",
           "member_prefix", "member_uri", "publish_member"]
