"""Compiled Neuron artifacts for the pinned SDK, looked up in the model repository before a deploy.

Replicas never compile (their serve config says ``compile_on_miss: false``): on a miss they wait for the compile
Job. After an SDK upgrade that wait is the length of a Neuron compile of every bucket, on every new replica, and
a compile that fails leaves the new Ray cluster waiting. So the artifacts of the new SDK are compiled and
published first, and a deploy is refused while a model an inf2 group serves has none.

An artifact's cache key hashes the image's package versions, which only the image knows; what this side can read
is the manifest the compile step wrote: its ``processor``, the weights it was compiled from and
``versions.neuronx_cc``. An artifact of the model's revision, for ``inferentia``, from the pinned weights, by the
compiler of :data:`~eks_inference.tables.neuron.NEURON_SDK` counts as published. (A change of bucket shape under
the same SDK is not caught here: the compile Job compiles it in the cluster, as on a first deploy.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eks_inference.artifacts.manifests import MANIFEST
from eks_inference.config import ModelSpec, PlatformConfig, Processor
from eks_inference.ops.assembly import stack_names
from eks_inference.storage import S3Store, Store, join, open_store
from eks_inference.tables.neuron import NEURON_SDK, NeuronSdk

INFERENTIA = Processor.INFERENTIA.value


@dataclass(frozen=True)
class Missing:
    """A model an inf2 group serves with no artifact by the pinned compiler."""

    model: str
    revision: str
    sdk: NeuronSdk
    found: tuple[str, ...]
    """The compiler versions of the Inferentia artifacts that are published for the model (an older SDK's)."""
    command: str

    def line(self) -> str:
        older = f" (published: neuronx-cc {', '.join(self.found)})" if self.found else ""
        return (f"compiled artifacts for Neuron SDK {self.sdk.version} (neuronx-cc {self.sdk.neuronx_cc}) missing for "
                f"model {self.model!r} revision {self.revision!r}{older}: run `{self.command}` in the Inferentia2 "
                "image of that SDK on an inf2 instance before deploying")


def neuron_models(config: PlatformConfig) -> list[ModelSpec]:
    """Models served on an enabled inf2 group."""
    if not any(g.enabled and g.processor is Processor.INFERENTIA for g in config.node_groups):
        return []
    return [m for m in config.models if Processor.INFERENTIA in m.processors]


def compile_command(model: ModelSpec, repository_uri: str) -> str:
    """The ``eks-inference compile`` line that publishes ``model``'s Inferentia artifact to ``repository_uri``."""
    s = model.serving
    cmd = [f"eks-inference compile {join(repository_uri, 'models', model.name, model.revision)}",
           f"--name {model.name} --revision {model.revision} --task {model.task.value} --processor {INFERENTIA}",
           f"--dtype {s.dtype.value} --batch-buckets {','.join(str(b) for b in s.batch_buckets)}",
           f"--max-seq-length {s.max_seq_length}"]
    if model.weights_sha256:
        cmd.append(f"--weights-sha256 {model.weights_sha256}")
    cmd.append(f"--publish-to {repository_uri}")
    return " ".join(cmd)


def published_compilers(store: Store, model: ModelSpec) -> set[str]:
    """``versions.neuronx_cc`` of every Inferentia artifact published for ``model``'s revision and weights."""
    prefix = f"artifacts/{model.name}/{model.revision}"
    found: set[str] = set()
    for rel in store.list(prefix):
        if not rel.endswith(f"/{MANIFEST}") or rel.count("/") != 4:
            continue  # artifacts/NAME/REVISION/KEY/manifest.json only; graph files and leases are skipped
        try:
            m = json.loads(store.read_bytes(rel) or b"")
        except ValueError:
            continue
        if not isinstance(m, dict) or m.get("processor") != INFERENTIA:
            continue
        compiled_from = (m.get("model") or {}).get("weights_digest")
        if model.weights_sha256 and compiled_from != model.weights_sha256:
            continue
        version = (m.get("versions") or {}).get("neuronx_cc")
        if isinstance(version, str):
            found.add(version)
    return found


def missing_artifacts(config: PlatformConfig, repository_uri: str, *, endpoint_url: str | None = None,
                      sdk: NeuronSdk = NEURON_SDK, store: Store | None = None) -> list[Missing]:
    """One :class:`Missing` per model an inf2 group serves that has no artifact by ``sdk``'s compiler."""
    store = store or open_store(repository_uri, endpoint_url=endpoint_url)
    out: list[Missing] = []
    for model in neuron_models(config):
        found = published_compilers(store, model)
        if sdk.neuronx_cc not in found:
            out.append(Missing(model=model.name, revision=model.revision, sdk=sdk, found=tuple(sorted(found)),
                               command=compile_command(model, repository_uri)))
    return out


def plan_lines(config: PlatformConfig, sdk: NeuronSdk = NEURON_SDK) -> list[str]:
    """The Neuron stack a deploy of ``config`` runs, for a plan printed before anything is created."""
    models = neuron_models(config)
    if not models:
        return []
    groups = ", ".join(f"{g.name} on AMI release {g.ami_release_version or 'unpinned (EKS picks it)'}"
                       for g in config.enabled_node_groups if g.processor is Processor.INFERENTIA)
    return [f"Neuron SDK {sdk.version} (neuronx-cc {sdk.neuronx_cc}) for {', '.join(m.name for m in models)}: "
            f"compiled by the compile Jobs, then checked published, before any replica is waited on; {groups}"]


def deployed_repository(cfn: Any, env_name: str) -> str | None:
    """The deployed Inference stack's ``ModelRepositoryUri`` ("" when it has none); None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        stack = cfn.describe_stacks(StackName=stack_names(env_name)[-1])["Stacks"][0]
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []}
    return str(outputs.get("ModelRepositoryUri") or "")


def deployed_lines(config: PlatformConfig, cfn: Any, s3: Any, sdk: NeuronSdk = NEURON_SDK) -> list[str]:
    """For ``diff --deployed`` of an SDK change: what the deployed environment's model repository lacks."""
    uri = deployed_repository(cfn, config.env_name)
    if not uri or not uri.startswith("s3://") or not neuron_models(config):
        return []
    missing = missing_artifacts(config, uri, sdk=sdk, store=S3Store(uri, client=s3))
    if not missing:
        return [f"compiled artifacts for Neuron SDK {sdk.version} are published in {uri} for every model on inf2"]
    return [m.line() for m in missing]


def sdk_change_lines(old_sdk: str | None, new_sdk: str | None, models: Sequence[str]) -> list[str]:
    """What a change of the pinned SDK between two syntheses asks for before the deploy (``diff``)."""
    if old_sdk is None or new_sdk is None or old_sdk == new_sdk or not models:
        return []
    return [f"Neuron SDK {old_sdk} → {new_sdk}: compiled artifacts for SDK {new_sdk} are needed for model {m!r} "
            "before any replica runs it; run `eks-inference compile ... --processor inferentia --publish-to "
            "REPOSITORY` in the new image (`eks-inference preflight` names what is missing), then deploy"
            for m in models]
