"""What an environment costs per hour as configured: instance hours per node group, NAT gateways, EKS.

Instance prices come from the load tester's dated price table (``eks_inference/tables/prices.py``), so the
report's cost per million inferences and this estimate never disagree about a node. The two per-hour charges
that table does not hold are kept here, dated. Everything else (EBS volumes, data transfer and NAT data
processing, CloudWatch Logs, KMS keys, S3, ECR) depends on use and is left out, and said to be.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from eks_inference.config import (
    AUTOSCALER_SIDECAR_CPU_MILLIS,
    AUTOSCALER_SIDECAR_MEMORY_MIB,
    HEAD_CPU_MILLIS,
    HEAD_MEMORY_MIB,
    CapacityType,
    ConfigError,
    ModelSpec,
    NodeGroupSpec,
    PlatformConfig,
    Processor,
    worker_pod_requests,
)
from eks_inference.tables.instance_types import HOST_FAMILIES, INSTANCE_TYPES, InstanceType
from eks_inference.tables.prices import DEFAULT_PRICES, ELASTICACHE_NODES, PriceTable

OTHER_PRICES_DATE = "2026-11-29"
"""When the NAT gateway and EKS control-plane prices below were checked (AWS pricing pages, USD per hour)."""
NAT_GATEWAY_HOURLY = {"us-east-1": 0.045, "us-east-2": 0.045, "us-west-2": 0.045, "eu-west-1": 0.048}
EKS_CONTROL_PLANE_HOURLY = 0.10
"""Per cluster, while its Kubernetes version is in standard support (extended support costs $0.60)."""
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Line:
    """One priced item: ``count`` units at ``unit_hourly`` each, at the group's min, desired and max size."""

    item: str
    detail: str
    unit_hourly: float | None
    counts: tuple[int, int, int]
    note: str = ""

    def hourly(self, i: int) -> float | None:
        if self.counts[i] == 0:
            return 0.0
        return None if self.unit_hourly is None else self.unit_hourly * self.counts[i]


@dataclass(frozen=True)
class EnvironmentCost:
    env_name: str
    region: str
    lines: tuple[Line, ...]

    def total(self, i: int) -> float:
        """Sum over priced lines at size ``i`` (0 min, 1 desired, 2 max); unpriced lines are listed apart."""
        return sum(h for line in self.lines if (h := line.hourly(i)) is not None)

    @property
    def unpriced(self) -> list[Line]:
        return [line for line in self.lines if line.unit_hourly is None and any(line.counts)]


def serving_floor(group: NodeGroupSpec, models: Sequence[ModelSpec]) -> int:
    """Nodes a serving group keeps while every model on its processor runs its ``min_replicas``.

    The Cluster Autoscaler never shrinks a group below what its pods hold, so an accelerator group at
    ``min_size: 0`` still costs a node per whole-node replica once its models have started.
    """
    if group.processor is None or not group.enabled:
        return 0
    nodes = 0
    for m in models:
        if group.processor not in m.processors:
            continue
        lo, _ = m.serving.replicas
        per_node = max(1, worker_pod_requests(m.serving, group.processor).per_node(group.smallest_instance)) \
            if m.shares_node else 1
        nodes += -(-lo // per_node)
    return nodes


def _group_line(group: NodeGroupSpec, region: str, prices: PriceTable, models: Sequence[ModelSpec] = ()) -> Line:
    itype = group.instance_types[0]
    if not group.enabled:
        return Line(f"node group {group.name}", f"{itype} (disabled)", prices.hourly(itype, region), (0, 0, 0))
    floor = min(group.max_size, serving_floor(group, models))
    lowest = max(group.min_size, floor)
    desired = max(floor, group.desired_size if group.desired_size is not None else group.min_size)
    note = {CapacityType.SPOT: f"a Spot group priced at {prices.kind.label} rates",
            CapacityType.CAPACITY_BLOCK: "a Capacity Block, paid upfront at its own rate: not this one"}.get(
        group.capacity_type, "")
    if group.capacity_reservation_id and group.capacity_type is CapacityType.ON_DEMAND:
        note = f"reservation {group.capacity_reservation_id} is billed while it lasts, used or not"
    if floor > group.min_size:
        note = "; ".join(filter(None, [note, f"min_size {group.min_size}, but the models' min_replicas keep {floor} "
                                             "running once served"]))
    if len(group.instance_types) > 1:
        note = "; ".join(filter(None, [note, f"priced as {itype}, the first listed type"]))
    return Line(f"node group {group.name}", itype, prices.hourly(itype, region),
                (lowest, desired, group.max_size), note)


def environment_cost(config: PlatformConfig, prices: PriceTable = DEFAULT_PRICES,
                     extra_groups: Sequence[tuple[NodeGroupSpec, str]] = ()) -> EnvironmentCost:
    """``extra_groups``: node groups the stacks add beside the configured ones (the load-test clients'), each with a
    note; no model is served there."""
    lines = [_group_line(g, config.region, prices, config.models) for g in config.node_groups]
    for group, note in extra_groups:
        line = _group_line(group, config.region, prices)
        lines.append(Line(line.item, line.detail, line.unit_hourly, line.counts,
                          "; ".join(filter(None, [line.note, note]))))
    n = config.nat_gateways
    lines.append(Line("NAT gateways", "hourly charge, before data processing", NAT_GATEWAY_HOURLY.get(config.region),
                      (n, n, n)))
    lines.append(Line("EKS control plane", "standard support", EKS_CONTROL_PLANE_HOURLY, (1, 1, 1)))
    if config.ray.gcs_fault_tolerance:  # the GCS store: a primary and its replicas, whatever the load
        r = config.ray
        lines.append(Line("GCS store (ElastiCache)", f"{r.redis_node_type}, a primary and {r.redis_replicas} "
                          f"replica{'s' if r.redis_replicas != 1 else ''}",
                          ELASTICACHE_NODES.hourly(r.redis_node_type, config.region), (1 + r.redis_replicas,) * 3))
    return EnvironmentCost(config.env_name, config.region, tuple(lines))


# ---------------------------------------------------------------------------------------------------
# What one target occupies: every pod, wherever it runs, priced at its share of its node
# ---------------------------------------------------------------------------------------------------

class CostRole(str, Enum):
    """The parts of a target's cost the report shows apart."""

    WORKERS = "workers"
    HEAD = "head"
    SIDECARS = "sidecars"


@dataclass(frozen=True)
class PodShare:
    """``count`` pods of one kind, each holding ``share`` of a node of ``instance_type``.

    ``basis`` says what set the share: ``cpu`` or ``memory`` (the larger of the pod's CPU and memory requests
    over the node's allocatable: the scarcer of the two is what keeps other pods off), ``whole node`` (a
    replica whose anti-affinity keeps other replicas off its node), or ``room left in a worker's node`` (a head
    placed beside a whole-node replica: carved out of that node, not added to it).
    """

    role: CostRole
    pod: str
    node_group: str
    instance_type: str
    count: int
    cpu_m: int
    memory_mib: int
    share: float
    basis: str

    @property
    def node_fraction(self) -> float:
        """Nodes of ``instance_type`` this line accounts for."""
        return self.count * self.share

    def to_dict(self) -> dict[str, object]:
        return {"role": self.role.value, "pod": self.pod, "node_group": self.node_group,
                "instance_type": self.instance_type, "count": self.count, "cpu_m": self.cpu_m,
                "memory_mib": self.memory_mib, "share": round(self.share, 6), "basis": self.basis}


def node_share(cpu_m: int, memory_mib: int, node: InstanceType) -> tuple[float, str]:
    """A pod's share of one node: the larger of its CPU and memory requests over the node's allocatable, and
    which of the two it was."""
    cpu = cpu_m / node.allocatable_cpu_millis
    mem = memory_mib / node.allocatable_memory_mib
    return (cpu, "cpu") if cpu >= mem else (mem, "memory")


@dataclass(frozen=True)
class Placement:
    """Every pod of one target (model × processor) and the node it runs on, as the serving chart places them."""

    target: str
    pods: tuple[PodShare, ...]

    def fractions(self) -> tuple[tuple[CostRole, str, float], ...]:
        """``(role, instance type, nodes)`` summed per role and type: what a load-test result carries."""
        out: dict[tuple[CostRole, str], float] = {}
        for p in self.pods:
            out[(p.role, p.instance_type)] = out.get((p.role, p.instance_type), 0.0) + p.node_fraction
        return tuple((role, itype, n) for (role, itype), n in out.items())

    def to_arg(self) -> str:
        """``ROLE=TYPE:NODES,...``, the form ``loadtest run --placement`` takes."""
        return format_fractions(self.fractions())


def format_fractions(fractions: Sequence[tuple[CostRole | str, str, float]]) -> str:
    return ",".join(f"{CostRole(r).value}={t}:{round(n, 6):g}" for r, t, n in fractions)


def parse_fractions(text: str, *, where: str = "--placement") -> tuple[tuple[CostRole, str, float], ...]:
    """The inverse of :func:`format_fractions`; one ConfigError naming every bad entry."""
    out, bad = [], []
    roles = ", ".join(r.value for r in CostRole)
    for part in filter(None, (x.strip() for x in text.split(","))):
        role, _, rest = part.partition("=")
        itype, _, nodes = rest.rpartition(":")
        try:
            n = float(nodes)
            ok = role in {r.value for r in CostRole} and bool(itype) and n >= 0 and math.isfinite(n)
        except ValueError:
            ok = False
        if not ok:
            bad.append(f"{where}: {part!r} is not ROLE=TYPE:NODES; use a role of {roles}, e.g. "
                       "'head=m7i.large:0.52'")
            continue
        out.append((CostRole(role), itype, n))
    if bad:
        raise ConfigError("\n".join(bad))
    return tuple(out)


def price_fractions(fractions: Sequence[tuple[CostRole, str, float]], prices: PriceTable, region: str,
                    ) -> tuple[float | None, dict[str, float | None], list[str]]:
    """(USD per hour in all, USD per hour per role, instance types without a price). The total is None when any
    line has no price: a partial sum would rank a target cheaper for what it left out."""
    split: dict[str, float | None] = {}
    missing: list[str] = []
    for role, itype, n in fractions:
        unit = prices.hourly(itype, region)
        if unit is None:
            missing.append(itype)
        prev = split.get(role.value, 0.0)
        split[role.value] = None if unit is None or prev is None else prev + unit * n
    total = None if missing else sum(v for v in split.values() if v is not None)
    return total, split, sorted(set(missing))


def target_placement(config: PlatformConfig, model: ModelSpec, processor: Processor) -> Placement:
    """Where every pod of one target runs and what share of its node it holds, from the config alone (the same
    figures the serving chart renders, which a test checks against the synthesized RayService).

    Workers: ``min_replicas`` pods on the processor's group, a whole node each unless the model shares nodes.
    Head: the Ray container and the autoscaler sidecar on :meth:`PlatformConfig.head_node_group`. A head that
    lands beside a whole-node replica (same group, and room for it there) is carved out of that node's cost
    rather than added: the target pays for that node once.
    """
    workers_group = config.node_group_for(processor)
    head_group = config.head_node_group(processor)
    # Priced as the first listed type, the one On-Demand capacity launches (as environment_cost prices a group).
    wnode, hnode = INSTANCE_TYPES[workers_group.instance_types[0]], INSTANCE_TYPES[head_group.instance_types[0]]
    req = worker_pod_requests(model.serving, processor)
    lo, _ = model.serving.replicas
    w_cpu, w_mem = req.cpu * 1000, req.memory_gib * 1024
    head_parts = ((CostRole.HEAD, "head (Ray container)", HEAD_CPU_MILLIS, HEAD_MEMORY_MIB),
                  (CostRole.SIDECARS, "head (autoscaler sidecar)", AUTOSCALER_SIDECAR_CPU_MILLIS,
                   AUTOSCALER_SIDECAR_MEMORY_MIB))
    head_cpu = sum(p[2] for p in head_parts)
    head_mem = sum(p[3] for p in head_parts)
    beside = (not model.shares_node and head_group is workers_group and lo >= 1
              and w_cpu + head_cpu <= wnode.allocatable_cpu_millis
              and w_mem + head_mem <= wnode.allocatable_memory_mib)
    pods: list[PodShare] = []
    carved = 0.0
    for role, name, cpu, mem in head_parts:
        share, basis = node_share(cpu, mem, hnode)
        if beside:
            basis = f"room left in a worker's node ({basis})"
            carved += share
        pods.append(PodShare(role, name, head_group.name, hnode.name, 1, cpu, mem, share, basis))
    if model.shares_node:
        share, basis = node_share(w_cpu, w_mem, wnode)
        worker = PodShare(CostRole.WORKERS, "worker", workers_group.name, wnode.name, lo, w_cpu, w_mem, share, basis)
    else:
        worker = PodShare(CostRole.WORKERS, "worker", workers_group.name, wnode.name, lo, w_cpu, w_mem,
                          1.0 - carved / lo if lo else 1.0,
                          "whole node" + (" less the head's room" if carved else ""))
    return Placement(f"{model.name}-{processor.value}", (worker, *pods))


# ---------------------------------------------------------------------------------------------------
# Pricing a machine that is not an EC2 instance (the local demo): the closest instance type
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostCpu:
    """What a machine's CPU is, as far as pricing it goes."""

    vendor: str | None
    """``intel``, ``amd`` or ``arm``; None when /proc/cpuinfo names none of them."""
    model: str
    cores: int
    threads_per_core: int

    def describe(self) -> str:
        return (f"{self.model or self.vendor or 'unknown CPU'}, {self.cores} core{'s' if self.cores != 1 else ''} x "
                f"{self.threads_per_core} thread{'s' if self.threads_per_core != 1 else ''}")


_ARM_IMPLEMENTERS = {"0x41": "Arm Neoverse", "0x61": "Apple", "0xc0": "Ampere"}


def parse_cpuinfo(text: str, logical_cpus: int | None = None) -> HostCpu:
    """Vendor, model, physical cores and threads per core from the text of ``/proc/cpuinfo``.

    x86 names its vendor (``vendor_id``) and, per package, ``siblings`` (logical CPUs) and ``cpu cores``
    (physical): their ratio is the threads per core. Arm names an implementer code and no siblings (one thread a
    core). ``logical_cpus`` (what the process may use) overrides the count of ``processor`` entries.
    """
    entries: list[dict[str, str]] = []
    for block in text.strip().split("\n\n"):
        d: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                d[key.strip().lower()] = value.strip()
        if d:
            entries.append(d)
    procs = [e for e in entries if "processor" in e and e["processor"].isdigit()] or entries[:1]
    first = procs[0] if procs else {}
    logical = logical_cpus or len(procs) or 1
    vendor_id = first.get("vendor_id", "")
    implementer = first.get("cpu implementer", "").lower()
    vendor: str | None
    if vendor_id == "GenuineIntel":
        vendor, model = "intel", first.get("model name", "Intel")
    elif vendor_id in ("AuthenticAMD", "HygonGenuine"):
        vendor, model = "amd", first.get("model name", "AMD")
    elif implementer:
        vendor = "arm"
        model = first.get("model name") or _ARM_IMPLEMENTERS.get(implementer, f"Arm implementer {implementer}")
    else:
        vendor, model = None, first.get("model name", "")
    tpc = 1
    try:
        siblings, cores = int(first["siblings"]), int(first["cpu cores"])
        if cores > 0 and siblings >= cores:
            tpc = max(1, siblings // cores)
    except (KeyError, ValueError):
        pass
    return HostCpu(vendor=vendor, model=model, cores=max(1, logical // tpc), threads_per_core=tpc)


def closest_instance_type(host: HostCpu, prices: PriceTable = DEFAULT_PRICES,
                          region: str | None = None) -> tuple[str, str]:
    """The priced instance type closest to ``host`` and the words that say why.

    Same vendor's compute family (:data:`~eks_inference.tables.instance_types.HOST_FAMILIES`), then the smallest
    size with at least the host's physical cores (a vCPU of c7i is a hyperthread, of c7a and c7g a core), among
    the sizes the price table prices. ConfigError when the vendor is unknown: nothing would be closest.
    """
    if host.vendor not in HOST_FAMILIES:
        seen = host.model or "no vendor_id or CPU implementer in /proc/cpuinfo"
        raise ConfigError(f"--price-as host: this machine's CPU vendor is unknown ({seen}); give an EC2 type, "
                          "e.g. --price-as c7i.large")
    family, tpc = HOST_FAMILIES[host.vendor]
    sizes = sorted((t for t in INSTANCE_TYPES.values()
                    if t.name.split(".", 1)[0] == family and prices.hourly(t.name, region) is not None),
                   key=lambda t: t.vcpus)
    if not sizes:
        raise ConfigError(f"--price-as host: the price table has no {family} price; give --prices FILE with one")
    best = next((t for t in sizes if t.vcpus // tpc >= host.cores), sizes[-1])
    cores = best.vcpus // tpc
    return best.name, (f"closest to this host: {host.describe()}; {best.name} has {best.vcpus} vCPUs on {cores} "
                       f"core{'s' if cores != 1 else ''}")


def host_cpu(path: str = "/proc/cpuinfo") -> HostCpu:
    """This machine's CPU (the CPUs this process may run on, not every one the machine has)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    return parse_cpuinfo(text, logical)
