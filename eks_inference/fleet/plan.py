"""Plan a fleet (``eks-inference plan``): from a price-performance report to the fleet that serves a target load.

For each target the figure it rests on is the *lower bound* of its capacity at the SLO
(:mod:`eks_inference.measure.capacity`): the highest offered rate shown, with 95 % confidence, to meet the SLO
percentile; a node's capacity is that rate divided by the nodes that served it. The node count and cost at the
interval's upper bound are printed beside it, so the price of the uncertainty is in view. When the interval is
wider than ``max_width`` of its estimate the target is refused, saying how to narrow it (more repeats, longer
steps, a finer search), unless told to accept it; a report written before intervals existed is planned from its
best SLO-meeting step only when told to accept that. The fleet must carry the target load with
headroom even after losing a whole Availability Zone::

    per zone = ceil(R / (C × (1 − H) × (Z − 1)))        nodes = Z × per zone

(R requests/s, C requests/s per node, H headroom, Z zones), so each zone holds the same count and any
Z − 1 of them still run at most 1 − H of their capacity. The arithmetic is exact (fractions of the decimal
values, not floats), so a load that is an exact multiple of a zone's capacity does not round up to one
node more. Monthly cost is nodes × USD per hour × 730; the cluster's fixed costs (EKS control plane, a NAT
gateway per zone, the system node group) are named separately, from the same dated tables as
``docs/costs.md``.

A target is refused, with the reason, when it has no price, no SLO-meeting step, or no passing
verification: a fleet sized from a fast wrong answer is no plan.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from eks_inference import storage
from eks_inference.config import ConfigError
from eks_inference.costs import EKS_CONTROL_PLANE_HOURLY, HOURS_PER_MONTH, NAT_GATEWAY_HOURLY, OTHER_PRICES_DATE
from eks_inference.measure.capacity import capacity_at_slo
from eks_inference.measure.results import REPORT_FORMAT
from eks_inference.measure.steps import slo_verdict
from eks_inference.measure.working_set import hit_curve, hit_ratio_at
from eks_inference.tables.prices import DEFAULT_PRICES, DEFAULT_REGION, PriceTable, PricingKind, pricing_kind

DEFAULT_HEADROOM = 0.3
DEFAULT_AZS = 3
DEFAULT_SYSTEM_INSTANCE_TYPE = "m7i.large"
DEFAULT_MAX_WIDTH = 0.25
"""A capacity interval wider than this share of its estimate is not a figure to buy nodes from (by default)."""
EXIT_PLANNED, EXIT_NONE_PLANNED = 0, 1


@dataclass(frozen=True, kw_only=True)
class PlanInputs:
    target_rps: float
    slo_p99_ms: float
    headroom: float = DEFAULT_HEADROOM
    azs: int = DEFAULT_AZS
    system_instance_type: str = DEFAULT_SYSTEM_INSTANCE_TYPE
    system_nodes: int | None = None
    """Default: one per zone (operators and Ray heads spread over the zones too)."""
    max_width: float = DEFAULT_MAX_WIDTH
    """Refuse a target whose capacity interval is wider than this share of its estimate."""
    accept_wide: bool = False
    """Plan such a target anyway (from the lower bound), and a report without intervals from its best step."""
    slo_percentile: str = "p99"
    """The percentile the SLO applies to."""
    prices: PriceTable | None = None
    """Instance prices to plan at (``--pricing``: a kind's table); default the report's own price per instance."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_rps) and self.target_rps > 0):
            raise ConfigError(f"--target-rps: {self.target_rps:g} is not a positive rate; give requests/s, "
                              "e.g. 100000")
        if not (math.isfinite(self.slo_p99_ms) and self.slo_p99_ms > 0):
            raise ConfigError(f"--slo-p99-ms: {self.slo_p99_ms:g} is not a positive latency; give ms, e.g. 250")
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"--headroom: {self.headroom:g} is outside [0, 1); give the spare fraction, e.g. 0.3")
        if isinstance(self.azs, bool) or not isinstance(self.azs, int) or self.azs < 2:
            raise ConfigError(f"--azs: {self.azs!r} cannot lose a zone and still serve; give 2 or more, e.g. 3")
        if self.system_nodes is not None and self.system_nodes < 0:
            raise ConfigError(f"--system-nodes: {self.system_nodes} is negative; give 0 or more")
        if not (math.isfinite(self.max_width) and self.max_width > 0):
            raise ConfigError(f"--max-width: {self.max_width:g} is not a positive share; give e.g. 0.25 for 25 %")

    @property
    def system_count(self) -> int:
        return self.azs if self.system_nodes is None else self.system_nodes


def _exact(x: float | int) -> Fraction:
    """The decimal a person wrote (or a float's shortest repr) as an exact fraction."""
    return Fraction(repr(float(x))) if isinstance(x, float) else Fraction(x)


def nodes_for(target_rps: float, per_node_rps: float, *, headroom: float, azs: int) -> tuple[int, int]:
    """(nodes per zone, nodes) so that any ``azs - 1`` zones carry ``target_rps`` at ``1 - headroom`` load."""
    if per_node_rps <= 0:
        raise ValueError(f"per-node capacity {per_node_rps} is not positive")
    usable = _exact(per_node_rps) * (1 - _exact(headroom)) * (azs - 1)
    per_zone = math.ceil(_exact(target_rps) / usable)
    return per_zone, per_zone * azs


@dataclass(frozen=True, kw_only=True)
class FixedCosts:
    """Per-cluster monthly costs that do not grow with the fleet; None where the price is unknown."""

    region: str
    control_plane: float
    nat_gateways: int
    nat_each: float | None
    system_nodes: int
    system_type: str
    system_each: float | None

    @property
    def total(self) -> float | None:
        if self.nat_each is None or self.system_each is None:
            return None
        return self.control_plane + self.nat_gateways * self.nat_each + self.system_nodes * self.system_each

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "eks_control_plane_usd": self.control_plane,
                "nat_gateways": self.nat_gateways, "nat_gateway_usd_each": self.nat_each,
                "system_nodes": self.system_nodes, "system_instance_type": self.system_type,
                "system_node_usd_each": self.system_each, "total_usd": self.total}

    def text(self) -> str:
        def money(v: float | None) -> str:
            return "n/a" if v is None else f"${v:,.2f}"

        nat = (f"{self.nat_gateways} NAT gateways × {money(self.nat_each)}" if self.nat_each is not None
               else f"{self.nat_gateways} NAT gateways: no price for {self.region}")
        sysn = (f"system node group {self.system_nodes} × {self.system_type} × {money(self.system_each)}"
                if self.system_each is not None else
                f"system node group {self.system_nodes} × {self.system_type}: no price in {self.region}")
        return (f"EKS control plane {money(self.control_plane)}; {nat}; {sysn}; "
                f"total {money(self.total)} per month")


def fixed_costs(region: str, p: PlanInputs) -> FixedCosts:
    month = HOURS_PER_MONTH
    nat = NAT_GATEWAY_HOURLY.get(region)
    sys_price = (p.prices or DEFAULT_PRICES).hourly(p.system_instance_type, region)
    return FixedCosts(region=region, control_plane=EKS_CONTROL_PLANE_HOURLY * month, nat_gateways=p.azs,
                      nat_each=None if nat is None else nat * month, system_nodes=p.system_count,
                      system_type=p.system_instance_type, system_each=None if sys_price is None else sys_price * month)


@dataclass(frozen=True, kw_only=True)
class Planned:
    label: str
    target: Mapping[str, Any]
    run_id: str | None
    instance_type: str
    priced_as: bool
    region: str
    usd_per_hour: float
    measured: Mapping[str, Any]
    measured_nodes: int
    per_node_rps: float
    nodes_per_zone: int
    nodes: int
    monthly_usd: float
    fixed: FixedCosts
    basis: str = "the best SLO-meeting step (no interval)"
    """What the per-node capacity is: the capacity interval's lower bound, or a step of a report without intervals."""
    capacity: Mapping[str, Any] | None = None
    per_node_rps_hi: float | None = None
    nodes_at_hi: int | None = None
    nodes_per_zone_at_hi: int | None = None
    monthly_usd_at_hi: float | None = None
    family: Mapping[str, Any] | None = None
    """A family target's working-set sizing (:func:`family_working_set`)."""

    def to_dict(self, rank: int) -> dict[str, Any]:
        m = self.measured
        fixed = self.fixed.total
        return {
            "rank": rank, "target": self.target.get("name"), "label": self.label, "run_id": self.run_id,
            "processor": self.target.get("processor"), "instance_type": self.instance_type,
            "priced_as": self.priced_as, "region": self.region, "usd_per_hour": self.usd_per_hour,
            "capacity_rps_per_node": self.per_node_rps, "nodes_per_zone": self.nodes_per_zone,
            "nodes": self.nodes, "monthly_usd": self.monthly_usd,
            "monthly_usd_with_fixed": None if fixed is None else self.monthly_usd + fixed,
            "basis": self.basis, "capacity": dict(self.capacity) if self.capacity is not None else None,
            "at_upper_bound": {"capacity_rps_per_node": self.per_node_rps_hi, "nodes": self.nodes_at_hi,
                               "nodes_per_zone": self.nodes_per_zone_at_hi, "monthly_usd": self.monthly_usd_at_hi},
            "measured": {"step": m.get("step"), "mode": m.get("mode"), "requested_rate": m.get("requested_rate"),
                         "concurrency": m.get("concurrency"), "throughput_rps": m.get("throughput_rps"),
                         "inferences_per_s": m.get("inferences_per_s"), "p99_ms": m["latency_ms"]["p99"],
                         "nodes": self.measured_nodes},
            "family": dict(self.family) if self.family is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class Refused:
    label: str
    target: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "label": self.label, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class Plan:
    inputs: PlanInputs
    planned: tuple[Planned, ...]
    refused: tuple[Refused, ...]
    source: str
    report: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        p = self.inputs
        regions = sorted({x.region for x in self.planned})
        return {
            "report": self.source, "target_rps": p.target_rps, "slo_p99_ms": p.slo_p99_ms,
            "slo_percentile": p.slo_percentile, "max_width": p.max_width, "accept_wide": p.accept_wide,
            "headroom": p.headroom,
            "azs": p.azs, "hours_per_month": HOURS_PER_MONTH, "prices_date": instance_prices(self)[1],
            "pricing": instance_prices(self)[0].value, "fixed_prices_date": OTHER_PRICES_DATE,
            "targets": [x.to_dict(i + 1) for i, x in enumerate(self.planned)],
            "refused": [r.to_dict() for r in self.refused],
            "fixed": {r: fixed_costs(r, p).to_dict() for r in regions},
        }


def instance_prices(pl: Plan) -> tuple[PricingKind, str | None]:
    """The kind and date of the instance prices a plan used: ``--pricing``'s table, else the report's."""
    if pl.inputs.prices is not None:
        return pl.inputs.prices.kind, pl.inputs.prices.date
    rp = pl.report.get("prices") or {}
    return pricing_kind(rp.get("kind"), where="report prices.kind"), rp.get("date")


def _verification_refusal(t: Mapping[str, Any]) -> str | None:
    v = t.get("verification")
    status = v.get("status") if isinstance(v, Mapping) else None
    if status == "passed":
        return None
    if status == "failed":
        worst = (v.get("worst") or {}).get("text") if isinstance(v, Mapping) else None
        return f"verification FAILED (worst input: {worst or 'see the report'}); fix the target and measure again"
    return "not verified: measure it with `loadtest run --verify` so its answers are checked"


def best_step(steps: Sequence[Mapping[str, Any]], *, slo_p99_ms: float, max_error_rate: float,
              percentile: str = "p99") -> Mapping[str, Any] | None:
    """The report's rule: the highest-throughput step that meets the SLO (re-judged at ``slo_p99_ms``)."""
    passing = [s for s in steps if slo_verdict(s, slo_p99_ms=slo_p99_ms, max_error_rate=max_error_rate,
                                               percentile=percentile)[0]]
    return max(passing, key=lambda s: s["inferences_per_s"]) if passing else None


def _interval_refusal(cap: Mapping[str, Any], inputs: PlanInputs) -> str | None:
    """Why a capacity interval is no figure to buy nodes from, with how to narrow it; None when it is."""
    pct, slo = cap["percentile"], cap["slo_ms"]
    narrow = ("narrow it with more repeats (`loadtest run --repeats 5`), longer steps (--duration) or a finer "
              "search (--search-resolution)")
    if cap["rps_lo"] is None:
        return (f"no rate was shown to meet {pct} <= {slo:g} ms with 95 % confidence (every step failed, or its "
                f"interval straddled the SLO); {narrow}")
    width = cap["relative_width"]
    if inputs.accept_wide or (width is not None and width <= inputs.max_width):
        return None
    lo, est, hi = cap["rps_lo"], cap["rps"], cap["rps_hi"]
    if hi is None:
        return (f"capacity {est:,.4g} req/s has no upper bound (no rate was shown to miss the SLO; the search or "
                f"sweep stopped below it): measure higher rates, or pass --accept-wide to plan from its lower "
                f"bound {lo:,.4g}")
    return (f"capacity interval {lo:,.4g} to {hi:,.4g} req/s is {width:.0%} of its estimate {est:,.4g}, wider than "
            f"{inputs.max_width:.0%}: {narrow}, or pass --accept-wide to plan from its lower bound")


def _model_aware_replicas(ws: Mapping[str, Any], *, target_rps: float, load_ms: float,
                          headroom: float) -> dict[str, Any] | None:
    """The least k whose misses fit k replicas' time, with the hit ratio h(k) of k × B distinct members held; None
    when the step lacks the mix or B."""
    mix, n, per_budget = ws.get("mix"), ws.get("members"), ws.get("members_per_budget")
    if not (isinstance(mix, str) and isinstance(n, int) and n > 0 and isinstance(per_budget, int) and per_budget > 0):
        return None
    try:
        curve = hit_curve(mix, n)
    except ValueError:
        return None
    usable = 1 - _exact(headroom)
    k = 1
    while True:
        h = hit_ratio_at(k, members_per_budget=per_budget, curve=curve)
        loads = _exact(target_rps) * (1 - _exact(h))
        if k * per_budget >= n or loads * _exact(load_ms) / 1000 / k <= usable:
            break
        k += 1
    measured = ws.get("replicas")
    return {"replicas": k, "hit_ratio_at_replicas": h, "loads_per_s_at_target": float(loads),
            "members_per_budget": per_budget, "mix": mix, "members": n,
            "hit_ratio_model_at_measured": (hit_ratio_at(measured, members_per_budget=per_budget, curve=curve)
                                            if isinstance(measured, int) and measured > 0 else None)}


def family_working_set(step: Mapping[str, Any], *, target_rps: float, headroom: float) -> dict[str, Any] | None:
    """A family target's replicas from its measured working set; None for a single model's step.

    A replica loads members one at a time, so the misses at the target rate must fit in the replicas' time with
    headroom (R requests/s, L seconds per load: the step's cold p50 less its warm p50, what a cold answer waited beyond
    a warm one). Behind the model-blind ingress every replica sees the whole mix, so its hit ratio ``h`` (measured at
    the step, with the replica's byte budget) does not rise with more replicas::

        replicas = ceil(R × (1 − h) × L / (1 − H))

    Behind model-aware routing k replicas hold up to k × B distinct members (B to a replica's budget), so the hit
    ratio rises with k: h(k) is the share of requests whose member is among the k × B hottest of the step's mix, and::

        replicas = least k with R × (1 − h(k)) × L / k <= 1 − H

    A step without the routing, or a model-aware one without the mix or B, is sized by the first formula, saying so
    (for a model-aware family an upper bound). Exact arithmetic, as :func:`nodes_for`.
    """
    m = step.get("models")
    if not isinstance(m, Mapping) or m.get("hit_ratio") is None:
        return None
    h = float(m["hit_ratio"])
    cold, warm = (m.get("cold_ms") or {}).get("p50"), (m.get("warm_ms") or {}).get("p50")
    load_ms = max(0.0, float(cold) - float(warm or 0.0)) if cold is not None else 0.0
    ws: Mapping[str, Any] = m["working_set"] if isinstance(m.get("working_set"), Mapping) else {}
    routing = ws.get("routing")
    measured = ws.get("replicas")
    out: dict[str, Any] = {"hit_ratio": h, "load_ms": load_ms, "routing": routing, "measured_replicas": measured}
    if routing == "model-aware":
        aware = _model_aware_replicas(ws, target_rps=target_rps, load_ms=load_ms, headroom=headroom)
        if aware is not None:
            return {**out, **aware, "formula": "least k with R × (1 − h(k)) × L / k <= 1 − H",
                    "basis": (f"model-aware routing: k replicas hold k × {aware['members_per_budget']} distinct "
                              f"members; h(k) the share of the {aware['mix']} mix over {aware['members']} members "
                              "among the k × B hottest")}
        why = "model-aware routing, but the step recorded no mix or members per budget: the model-blind formula, " \
              "an upper bound"
    elif routing == "model-blind":
        why = "model-blind ingress: the measured hit ratio per replica"
    else:
        why = "the step recorded no routing (a report from before it was): the model-blind formula, an upper bound " \
              "for a model-aware family"
    loads = _exact(target_rps) * (1 - _exact(h))
    busy = loads * _exact(load_ms) / 1000 / (1 - _exact(headroom))
    return {**out, "loads_per_s_at_target": float(loads), "replicas": max(1, math.ceil(busy)),
            "formula": "ceil(R × (1 − h) × L / (1 − H))", "basis": why}


def plan(report: Mapping[str, Any], inputs: PlanInputs, *, source: str) -> Plan:
    max_error_rate = float(report.get("max_error_rate", 0.01))
    planned: list[Planned] = []
    refused: list[Refused] = []
    for t in report.get("targets") or []:
        label = str(t.get("label") or t["target"]["name"])
        info = t["target"]

        def refuse(reason: str, label: str = label, info: Mapping[str, Any] = info) -> None:
            refused.append(Refused(label=label, target=info.get("name"), reason=reason))

        why = _verification_refusal(t)
        if why:
            refuse(why)
            continue
        steps = t.get("steps") or []
        pct = inputs.slo_percentile
        measured_nodes = int(info.get("nodes") or 1)
        with_intervals = any(f"{pct}_hi" in (s.get("latency_ms") or {}) for s in steps)
        cap: dict[str, Any] | None = None
        if with_intervals:
            cap = capacity_at_slo(steps, slo_ms=inputs.slo_p99_ms, max_error_rate=max_error_rate, percentile=pct,
                                  nodes=measured_nodes)
            why = _interval_refusal(cap, inputs)
            if why:
                refuse(why)
                continue
            lo = float(cap["rps_lo"])
            at = next((s for s in steps if s.get("mode") == "open" and s.get("requested_rate") == lo), None)
            best: Mapping[str, Any] | None = at
            achieved = float(at["throughput_rps"]) if at else lo
            # the lower bound, never more than the step there achieved
            per_node = min(lo, achieved) / measured_nodes
            per_node_hi = None if cap["rps_hi"] is None else float(cap["rps_hi"]) / measured_nodes
            basis = (f"the lower bound of the capacity interval ({lo:,.4g} req/s offered; 95 % confidence that "
                     f"{pct} <= {inputs.slo_p99_ms:g} ms there)")
        else:
            if not inputs.accept_wide:
                refuse("the report carries no intervals (written before they existed): measure again with "
                       "`loadtest run --repeats 3`, or pass --accept-wide to plan from its best step")
                continue
            best = best_step(steps, slo_p99_ms=inputs.slo_p99_ms, max_error_rate=max_error_rate, percentile=pct)
            if best is None:
                refuse(f"no step met the SLO ({pct} <= {inputs.slo_p99_ms:g} ms, errors <= {max_error_rate:.2%})")
                continue
            per_node = float(best["throughput_rps"]) / measured_nodes
            per_node_hi = None
            basis = "the best SLO-meeting step (no interval: accepted with --accept-wide)"
        priced = t.get("priced_instance_type") or info.get("price_as") or info.get("instance_type")
        price = t.get("price_per_instance_hour")
        if priced is None:
            refuse("no instance type to price (run it with --instance-type or --price-as)")
            continue
        if inputs.prices is not None:
            price = inputs.prices.hourly(str(priced), str(t.get("region") or DEFAULT_REGION))
            if price is None:
                refuse(f"no {inputs.prices.kind.label} price for {priced} in {t.get('region')} (add it to the "
                       f"{inputs.prices.kind.value} rates)")
                continue
        if price is None:
            refuse(f"no price for {priced} in {t.get('region')} (give one with `loadtest report --prices FILE`)")
            continue
        if per_node <= 0:
            refuse("its best step served no requests")
            continue
        per_zone, nodes = nodes_for(inputs.target_rps, per_node, headroom=inputs.headroom, azs=inputs.azs)
        hi_zone, hi_nodes = (nodes_for(inputs.target_rps, per_node_hi, headroom=inputs.headroom, azs=inputs.azs)
                             if per_node_hi else (None, None))
        region = str(t.get("region") or DEFAULT_REGION)
        planned.append(Planned(
            label=label, target=info, run_id=t.get("run_id"), instance_type=str(priced),
            priced_as=bool(info.get("price_as")), region=region, usd_per_hour=float(price),
            measured=best or {"latency_ms": {pct: None}}, measured_nodes=measured_nodes, per_node_rps=per_node,
            nodes_per_zone=per_zone, nodes=nodes, monthly_usd=nodes * float(price) * HOURS_PER_MONTH,
            fixed=fixed_costs(region, inputs), basis=basis, capacity=cap, per_node_rps_hi=per_node_hi,
            nodes_at_hi=hi_nodes, nodes_per_zone_at_hi=hi_zone,
            monthly_usd_at_hi=None if hi_nodes is None else hi_nodes * float(price) * HOURS_PER_MONTH,
            family=family_working_set(best or {}, target_rps=inputs.target_rps, headroom=inputs.headroom)))
    planned.sort(key=lambda x: (x.monthly_usd, x.label))
    return Plan(inputs=inputs, planned=tuple(planned), refused=tuple(refused), source=source, report=report)


# ---------------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------------

def _load(m: Mapping[str, Any]) -> str:
    if m.get("mode") == "closed":
        return f"concurrency {m.get('concurrency')}"
    return f"{m.get('requested_rate'):g}/s offered"


def render(pl: Plan) -> str:
    """Plain text, the same on every terminal (docs/load-testing.md quotes it verbatim)."""
    p = pl.inputs
    r = pl.report
    lines = [
        f"Fleet for {p.target_rps:,.0f} requests/s at {p.slo_percentile} <= {p.slo_p99_ms:g} ms, {p.headroom:.0%} "
        f"headroom, {p.azs} zones (any {p.azs - 1} carry the load); sized from the lower bound of each capacity "
        "interval (95 %)",
        f"from {pl.source} (generated {r.get('generated_at')}; instance prices: {instance_prices(pl)[0].label} "
        f"of {instance_prices(pl)[1]})",
        "",
    ]
    if pl.planned:
        head = ("rank", "series", "processor", "instance type", "req/s per node", "nodes", "USD/month",
                "with fixed", "at upper bound")
        rows = []
        for i, x in enumerate(pl.planned):
            fixed = x.fixed.total
            rows.append((
                str(i + 1), x.label, str(x.target.get("processor") or "?"),
                x.instance_type + (" (priced as)" if x.priced_as else ""), f"{x.per_node_rps:,.1f}",
                f"{x.nodes:,} ({p.azs} × {x.nodes_per_zone:,})", f"${x.monthly_usd:,.0f}",
                "n/a" if fixed is None else f"${x.monthly_usd + fixed:,.0f}",
                "n/a" if x.nodes_at_hi is None or x.monthly_usd_at_hi is None or x.per_node_rps_hi is None else
                f"{x.per_node_rps_hi:,.1f}/node: {x.nodes_at_hi:,} nodes, ${x.monthly_usd_at_hi:,.0f}"))
        widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(head)]
        right = {0, 4, 6, 7, 8}

        def fmt(cells: Sequence[str]) -> str:
            return "  ".join(c.rjust(w) if j in right else c.ljust(w)
                             for j, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

        # table rows are marked so that the prose wrapping below leaves them whole
        lines += [TABLE + fmt(head), TABLE + fmt(["-" * w for w in widths]), *(TABLE + fmt(row) for row in rows), ""]
        lines.append("What each figure rests on:")
        for i, x in enumerate(pl.planned):
            m = x.measured
            run = f", run {x.run_id}" if x.run_id else ""
            cap = x.capacity
            if cap is not None:
                hi = "open" if cap["rps_hi"] is None else f"{cap['rps_hi']:,.4g}"
                width = "" if cap["relative_width"] is None else f", width {cap['relative_width']:.0%}"
                what = (f"capacity {cap['rps']:,.4g} req/s (95 % interval {cap['rps_lo']:,.4g} to {hi}{width}); "
                        f"sized from {cap['rps_lo']:,.4g}")
            else:
                what = f"{x.basis}: step {m.get('step')} ({_load(m)})"
            pct = p.slo_percentile
            at = (f"; at that step {m['throughput_rps']:,.1f} req/s served at {pct} "
                  f"{m['latency_ms'][pct]:,.1f} ms" if m.get("throughput_rps") is not None
                  and m["latency_ms"].get(pct) is not None else "")
            lines.append(
                f"  {i + 1}. {x.label}{run}: {what}{at} on {x.measured_nodes} node"
                f"{'s' if x.measured_nodes != 1 else ''}; {x.instance_type} at ${x.usd_per_hour:g}/h "
                f"({instance_prices(pl)[0].label}) in {x.region}"
                + (" (priced as that type, measured elsewhere)" if x.priced_as else ""))
            if x.family is not None:
                lines.append(_family_line(x.family))
        lines.append("")
        for region in sorted({x.region for x in pl.planned}):
            lines.append(f"Fixed per month ({HOURS_PER_MONTH} h) in {region}, list prices of {OTHER_PRICES_DATE} "
                         f"(system nodes {(p.prices or DEFAULT_PRICES).kind.label}): "
                         f"{fixed_costs(region, p).text()}")
    else:
        lines.append("No target can be planned.")
    if pl.refused:
        lines += ["", "Refused:"]
        lines += [f"  {x.label}: {x.reason}" for x in pl.refused]
    return "\n".join(_wrap(line) for line in lines)


def _family_line(f: Mapping[str, Any]) -> str:
    reps = f"{f['replicas']} replica{'s' if f['replicas'] != 1 else ''}"
    if "hit_ratio_at_replicas" in f:
        at = f["hit_ratio_model_at_measured"]
        seen = (f"; measured {f['hit_ratio']:.1%} on {f['measured_replicas']}, the model gives "
                f"{at:.1%} there" if at is not None else f"; measured {f['hit_ratio']:.1%}")
        return (f"     family: h(k) {f['hit_ratio_at_replicas']:.1%} at {reps}{seen}; {f['load_ms']:,.1f} ms a load, "
                f"{f['loads_per_s_at_target']:,.4g} loads/s at the target: at least {reps} keep up with the misses, "
                f"{f['formula']} ({f['basis']})")
    return (f"     family: hit ratio {f['hit_ratio']:.1%}, {f['load_ms']:,.1f} ms a load, "
            f"{f['loads_per_s_at_target']:,.4g} loads/s at the target: at least {reps} keep up with the misses, "
            f"{f['formula']} ({f['basis']})")


TABLE = "\0"


def _wrap(line: str, width: int = 110) -> str:
    """Prose lines wrapped, continuation lines indented under their text; table rows kept whole."""
    if line.startswith(TABLE):
        return line[len(TABLE):]
    if len(line) <= width:
        return line
    indent = " " * (len(line) - len(line.lstrip()) + 3)
    return textwrap.fill(line, width=width, subsequent_indent=indent, break_on_hyphens=False)


def read_report(location: str) -> tuple[dict[str, Any], str]:
    """``report.json`` from a file, a directory holding it, or an s3:// object or prefix."""
    if storage.is_s3(location):
        key = location if location.endswith(".json") else storage.join(location, "report.json")
        found = storage.read_inputs([key])
        text, where = found[0].text, key
    else:
        path = Path(location)
        if path.is_dir():
            path = path / "report.json"
        if not path.is_file():
            raise ConfigError(f"REPORT: {location!r} is not report.json or a directory holding one; give what "
                              "`eks-inference loadtest report --out DIR` wrote")
        text, where = path.read_text(encoding="utf-8"), location
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"REPORT: {where}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise ConfigError(f"REPORT: {where} is not a price-performance report (no format {REPORT_FORMAT!r}); give "
                          "the report.json that `loadtest report` wrote")
    return doc, where
