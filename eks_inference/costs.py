"""What an environment costs per hour as configured: instance hours per node group, NAT gateways, EKS.

Instance prices come from the load tester's dated price table (``eks_inference/tables/prices.py``), so the
report's cost per million inferences and this estimate never disagree about a node. The two per-hour charges
that table does not hold are kept here, dated. Everything else (EBS volumes, data transfer and NAT data
processing, CloudWatch Logs, KMS keys, S3, ECR) depends on use and is left out, and said to be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eks_inference.config import CapacityType, ModelSpec, NodeGroupSpec, PlatformConfig, worker_pod_requests
from eks_inference.tables.prices import DEFAULT_PRICES, PriceTable

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
    note = "On-Demand price; Spot is usually lower" if group.capacity_type is CapacityType.SPOT else ""
    if floor > group.min_size:
        note = "; ".join(filter(None, [note, f"min_size {group.min_size}, but the models' min_replicas keep {floor} "
                                             "running once served"]))
    if len(group.instance_types) > 1:
        note = "; ".join(filter(None, [note, f"priced as {itype}, the first listed type"]))
    return Line(f"node group {group.name}", itype, prices.hourly(itype, region),
                (lowest, desired, group.max_size), note)


def environment_cost(config: PlatformConfig, prices: PriceTable = DEFAULT_PRICES) -> EnvironmentCost:
    lines = [_group_line(g, config.region, prices, config.models) for g in config.node_groups]
    n = config.nat_gateways
    lines.append(Line("NAT gateways", "hourly charge, before data processing", NAT_GATEWAY_HOURLY.get(config.region),
                      (n, n, n)))
    lines.append(Line("EKS control plane", "standard support", EKS_CONTROL_PLANE_HOURLY, (1, 1, 1)))
    return EnvironmentCost(config.env_name, config.region, tuple(lines))
