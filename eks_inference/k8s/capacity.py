"""What the system node group holds, and whether the pods planned for it fit: checked at synth.

The system group's steady load (operators, the Cluster Autoscaler itself, Ray heads) must fit at its desired
size: the autoscaler runs on these very nodes, and pods that wait for it to start would wait
for themselves. Passing peaks (the second Ray head of each RayService during a NewCluster upgrade) may use the
nodes the autoscaler adds up to ``max_size``. This module counts what the group's nodes offer and what is asked of
them, the way the kubelet and the scheduler count it: by requests, against allocatable.

Allocatable follows the EKS AL2023 AMI's ``nodeadm`` (awslabs/amazon-eks-ami,
nodeadm/internal/kubelet/config.go): kube-reserved CPU is 6 % of the first core, 1 % of the second, 0.5 %
of cores three and four and 0.25 % above; kube-reserved memory is 11 MiB per pod slot plus 255 MiB; the
hard eviction threshold keeps another 100 MiB. Pod slots are counted at 110 (the most ``nodeadm`` gives a
node of this size), which reserves the most memory: the check errs towards "does not fit".

A load test's pods run on a node group of their own, sized by the same count
(:func:`eks_inference.k8s.load_test_nodes.load_test_node_group`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eks_inference.config import ConfigError, NodeGroupSpec
from eks_inference.k8s.pod import Resources

MAX_PODS = 110
EVICTION_HARD_MIB = 100


@dataclass(frozen=True)
class PodRequest:
    """What one pod asks of a node (the sum over its containers, init containers aside)."""

    name: str
    cpu_m: int
    memory_mib: int

    @classmethod
    def of(cls, name: str, resources: Resources) -> PodRequest:
        return cls(name, cpu_millicores(resources.cpu), memory_mebibytes(resources.memory))


def cpu_millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else round(float(quantity) * 1000)


def memory_mebibytes(quantity: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return round(float(quantity[:-2]) * factor)
    return round(int(quantity) / (1 << 20))


KUBERAY_OPERATOR = Resources(cpu="100m", cpu_limit="1", memory="512Mi")
METRICS_SERVER = Resources(cpu="100m", cpu_limit="500m", memory="200Mi")
NEURON_SCHEDULER_EXTENSION = Resources(cpu="50m", cpu_limit="500m", memory="128Mi")
NEURON_KUBE_SCHEDULER = Resources(cpu="100m", cpu_limit="1", memory="256Mi")
"""Requests of the operators the cluster runs on system nodes; InferenceCluster sets exactly these in the
Helm values, so what is counted here is what the scheduler sees."""


@dataclass(frozen=True)
class Shape:
    vcpus: int
    memory_mib: int


# Burstable families size their small instances differently from the rest.
_T_SIZES = {"nano": (2, 512), "micro": (2, 1024), "small": (2, 2048), "medium": (2, 4096), "large": (2, 8192),
            "xlarge": (4, 16384), "2xlarge": (8, 32768)}
_GIB_PER_VCPU = {"m": 4, "c": 2, "r": 8}
_METAL = {"m7g.metal": (64, 262144), "m6g.metal": (64, 262144), "c7g.metal": (64, 131072),
          "m7i.metal-24xl": (96, 393216), "m7i.metal-48xl": (192, 786432), "m6i.metal": (128, 524288)}


def instance_shape(instance_type: str) -> Shape:
    """vCPUs and memory of an EC2 instance type of the families a system group may use."""
    if instance_type in _METAL:
        return Shape(*_METAL[instance_type])
    m = re.match(r"^([a-z]+)[0-9]+[a-z]*\.([0-9]*)(x?large|medium|small|micro|nano)$", instance_type)
    if not m:
        raise ConfigError(f"instance type {instance_type!r}: its vCPUs and memory are unknown here; "
                          "use a listed system instance type such as m7i.large")
    cls, mult, size = m.group(1), m.group(2), m.group(3)
    if cls.startswith("t"):
        key = f"{mult}{size}"
        if key not in _T_SIZES:
            raise ConfigError(f"instance type {instance_type!r}: size {key!r} is not a burstable size; "
                              f"use one of {', '.join(_T_SIZES)}")
        return Shape(*_T_SIZES[key])
    vcpus = {"medium": 1, "large": 2, "xlarge": 4 * int(mult or 1)}.get(size)
    if vcpus is None or cls[0] not in _GIB_PER_VCPU:
        raise ConfigError(f"instance type {instance_type!r}: its vCPUs and memory are unknown here; "
                          "use a listed system instance type such as m7i.large")
    return Shape(vcpus, vcpus * _GIB_PER_VCPU[cls[0]] * 1024)


def _reserve_in_range(total: int, start: int, end: int, per_10000: int) -> int:
    if total <= start:
        return 0
    return (min(total, end) - start) * per_10000 // 10000


def kube_reserved_cpu_m(vcpus: int) -> int:
    total = vcpus * 1000
    ranges = [(0, 1000, 600), (1000, 2000, 100), (2000, 4000, 50), (4000, total, 25)]
    return sum(_reserve_in_range(total, a, b, pct) for a, b, pct in ranges)


def allocatable(shape: Shape) -> tuple[int, int]:
    """(CPU millicores, memory MiB) a node offers to pods."""
    memory = shape.memory_mib - (11 * MAX_PODS + 255) - EVICTION_HARD_MIB
    return shape.vcpus * 1000 - kube_reserved_cpu_m(shape.vcpus), memory


PER_NODE = (
    PodRequest("aws-node (vpc-cni and its network policy agent)", 50, 0),
    PodRequest("kube-proxy", 100, 0),
    PodRequest("eks-pod-identity-agent and other node agents (margin)", 50, 64),
)
"""DaemonSet pods on every node; the vpc-cni and kube-proxy figures are the requests of their EKS manifests."""

COREDNS = (PodRequest("coredns", 100, 70), PodRequest("coredns", 100, 70))
"""EKS's CoreDNS Deployment (two replicas); counted on system nodes, where it usually lands."""


def fit(pods: Sequence[PodRequest], *, nodes: int, node_alloc: tuple[int, int],
        per_node: Iterable[PodRequest] = PER_NODE) -> list[PodRequest]:
    """Pods left unscheduled when ``pods`` arrive in order on ``nodes`` identical nodes (empty: all fit).

    Placed as kube-scheduler places them: a pod goes only where its requests fit what is left of allocatable
    (NodeResourcesFit), and among those nodes to the least allocated one, CPU and memory weighted equally
    (kubernetes pkg/scheduler/framework/plugins/noderesources/least_allocated.go). Nothing is moved later, so
    spreading can strand a large pod that a tighter packing would have fitted; counting it that way errs
    towards "does not fit".
    """
    per = list(per_node)
    cpu, mem = node_alloc
    used = [[sum(p.cpu_m for p in per), sum(p.memory_mib for p in per)] for _ in range(nodes)]
    left: list[PodRequest] = []
    for pod in pods:
        best, best_score = None, -1.0
        for u in used:
            c, m = u[0] + pod.cpu_m, u[1] + pod.memory_mib
            if c > cpu or m > mem:
                continue
            score = ((cpu - c) / cpu + (mem - m) / mem) / 2
            if score > best_score:
                best, best_score = u, score
        if best is None:
            left.append(pod)
        else:
            best[0] += pod.cpu_m
            best[1] += pod.memory_mib
    return left


def check_system_group(group: NodeGroupSpec, *, base: Sequence[PodRequest], extra: Sequence[PodRequest],
                       extra_what: str, extra_fix: str, at_max_size: bool = False) -> None:
    """Raise ConfigError unless ``base`` (operators, heads) and ``extra`` (e.g. load-test pods) fit.

    Counted at the group's desired size, or at ``max_size`` for a passing peak the Cluster Autoscaler may add
    nodes for (``at_max_size``). The message names the node count that would fit, within ``max_size`` or beyond.
    """
    nodes = group.desired_size if group.desired_size is not None else group.min_size
    if at_max_size:
        nodes = group.max_size
    shape = min((instance_shape(t) for t in group.instance_types), key=lambda s: (s.vcpus, s.memory_mib))
    alloc = allocatable(shape)
    pods = [*base, *extra]
    left = fit(pods, nodes=nodes, node_alloc=alloc)
    if not left:
        return
    needed = next((n for n in range(nodes + 1, 65) if not fit(pods, nodes=n, node_alloc=alloc)), None)
    cpu_asked = sum(p.cpu_m for p in pods) / 1000
    where = (f"node group {group.name!r} ({nodes} x {group.instance_types[0]}, {alloc[0] / 1000:g} vCPU and "
             f"{alloc[1]} MiB allocatable each)")
    if needed is None:
        size_fix = "use larger instance types for it"
    elif at_max_size:
        size_fix = f"raise its max_size to {needed} (or use larger instance types)"
    elif needed <= group.max_size:
        size_fix = f"raise its desired_size to {needed} (or use larger instance types)"
    else:
        size_fix = f"raise its desired_size and max_size to {needed} (or use larger instance types)"
    raise ConfigError(
        f"{extra_what}: {len(left)} pod(s) ({', '.join(sorted({p.name for p in left}))}) do not fit on {where}; "
        f"{cpu_asked:g} vCPU is requested there in all; {size_fix}, or {extra_fix}"
    )

