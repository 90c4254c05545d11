"""``eks-inference plan``: the command line of :mod:`eks_inference.fleet.plan`."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.cli.pricing import prices_from_args
from eks_inference.config import CDK_JSON, ConfigError
from eks_inference.fleet.plan import (
    DEFAULT_AZS,
    DEFAULT_HEADROOM,
    DEFAULT_MAX_WIDTH,
    DEFAULT_SYSTEM_INSTANCE_TYPE,
    EXIT_NONE_PLANNED,
    EXIT_PLANNED,
    PlanInputs,
    plan,
    read_report,
    render,
)
from eks_inference.tables.prices import PRICING_KEY, PricingKind


def register(sub: Any) -> None:
    p = add_command(
        sub, "plan", summary="size the fleet that serves a target load, from a price-performance report",
        description=textwrap.fill(
            "For each target of a report: per-node capacity = the lower bound of its capacity at the SLO (the highest "
            "offered rate shown with 95 % confidence to meet it) / the nodes that served it; the node count and cost "
            "at the upper bound are printed beside it, and a target whose interval is wider than --max-width of its "
            "estimate is refused unless --accept-wide; nodes = Z × ceil(R / (capacity × (1 - H) × (Z - 1))), so "
            "losing one of Z zones still carries R requests/s with H headroom; monthly cost = nodes × USD/hour × 730, "
            "plus the cluster's fixed "
            "costs (EKS control plane, a NAT gateway per zone, the system node group) named apart. Targets without "
            "a price, without an SLO-meeting step or without a passing verification are refused, saying why. "
            "Exit 1 only when no target can be planned.", width=100),
        example_lines=(
            "eks-inference plan docs/example-report/report.json --target-rps 100000",
            "eks-inference plan out/demo/report --target-rps 5000 --slo-p99-ms 100 --azs 2 --headroom 0.2 --json",
        ),
    )
    p.add_argument("report", metavar="REPORT", help="report.json from `loadtest report`, or the directory holding it")
    p.add_argument("--target-rps", type=float, required=True, help="the load to serve, in requests/s")
    p.add_argument("--slo-p99-ms", type=float,
                   help="latency target; re-picks each target's best step from the report's steps (default: the "
                        "report's SLO)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help="fraction of each node's capacity kept spare after losing a zone")
    p.add_argument("--azs", type=int, default=DEFAULT_AZS, help="zones the fleet spreads over, evenly")
    p.add_argument("--system-instance-type", default=DEFAULT_SYSTEM_INSTANCE_TYPE,
                   help="instance type of the system node group, for the fixed costs")
    p.add_argument("--system-nodes", type=int, help="nodes of the system node group (default: one per zone)")
    p.add_argument("--slo-percentile", choices=("p50", "p90", "p95", "p99", "p999"),
                   help="the percentile the SLO applies to (default: the report's, else p99)")
    p.add_argument("--max-width", type=float, default=DEFAULT_MAX_WIDTH,
                   help="refuse a target whose capacity interval is wider than this share of its estimate")
    p.add_argument("--accept-wide", action="store_true",
                   help="plan such a target anyway, from its lower bound (and a report without intervals from its "
                        "best step)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--pricing", choices=[k.value for k in PricingKind],
                   help="re-price every target's instance-hours at this kind's rates (default: the report's own "
                        f"prices and kind); rates other than On-Demand come from {PRICING_KEY!r} in cdk.json")
    p.add_argument("--cdk-json", type=Path, default=Path(CDK_JSON),
                   help=f"the project file whose context holds {PRICING_KEY!r}")
    p.set_defaults(func=cmd_plan)


def cmd_plan(a: argparse.Namespace) -> int:
    doc, where = read_report(a.report)
    slo = a.slo_p99_ms if a.slo_p99_ms is not None else float(doc.get("slo_p99_ms") or 0) or None
    if slo is None:
        raise ConfigError("--slo-p99-ms: the report records no SLO; give one, e.g. 250")
    inputs = PlanInputs(target_rps=a.target_rps, slo_p99_ms=slo, headroom=a.headroom, azs=a.azs,
                        system_instance_type=a.system_instance_type, system_nodes=a.system_nodes,
                        max_width=a.max_width, accept_wide=a.accept_wide,
                        slo_percentile=a.slo_percentile or str(doc.get("slo_percentile") or "p99"),
                        prices=None if a.pricing is None else prices_from_args(a))
    result = plan(doc, inputs, source=where)
    if a.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(render(result))
    if not result.planned:
        print("eks-inference plan: error: no target of the report can be planned (see the reasons above)",
              file=sys.stderr)
        return EXIT_NONE_PLANNED
    return EXIT_PLANNED
