"""Group client results into series and steps, price them and rank targets.

Pure functions over parsed result files. Each step is merged and judged by :mod:`eks_inference.measure.steps`,
the same code that judges a step at the end of ``loadtest run``, so the run and the report can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.costs import parse_fractions, price_fractions
from eks_inference.measure.capacity import capacity_at_slo
from eks_inference.measure.contention import describe as describe_contention
from eks_inference.measure.repeats import judge, summarize_repeats
from eks_inference.measure.spec import TargetInfo
from eks_inference.measure.steps import CLIENT_SATURATED_CPU, ClientStep, slo_verdict
from eks_inference.tables.prices import DEFAULT_REGION, PriceTable, fleet_hourly, usd_per_million

DEFAULT_SLO_P99_MS = 100.0


@dataclass(frozen=True, kw_only=True)
class Point:
    """One step of one run of one target, merged over its clients."""

    summary: Mapping[str, Any]
    sources: tuple[str, ...]
    slo_met: bool
    slo_reason: str


@dataclass(frozen=True, kw_only=True)
class TargetReport:
    """One run of one target: its curve and its price-performance at the best step that met the SLO.

    Runs stay apart: two runs of a target (yesterday's and today's, or before and after a change) are two
    series, each with its own best step and rank. Merging them would draw one zig-zag line through both
    and pick a "best" step from whichever run happened to be luckier.
    """

    target: TargetInfo
    run_id: str | None
    label: str
    points: tuple[Point, ...]
    best: Point | None
    region: str
    region_assumed: bool
    price_per_instance_hour: float | None
    hourly_usd: float | None
    usd_per_million_inferences: float | None
    rank: int | None = None
    cost_split: Mapping[str, float | None] | None = None
    """USD per hour by part (``workers``, ``head``, ``sidecars``) when the target carries its placement; else
    ``workers`` alone (whole nodes × price)."""
    unpriced_types: tuple[str, ...] = ()
    """Instance types of its placement that the price table does not hold."""
    capacity: Mapping[str, Any] | None = None
    """Capacity at the SLO as estimate and interval (:func:`eks_inference.measure.capacity.capacity_at_slo`)."""
    verification: Mapping[str, Any] | None = None
    """The run's verdict (``status`` passed | failed | not-checked, ``worst``, ``summary``), see
    :func:`series_verification`; None when the run was not verified."""

    @property
    def verification_status(self) -> str:
        v = self.verification
        status = v.get("status") if isinstance(v, Mapping) else None
        return status if status in ("passed", "failed") else "not-checked"

    @property
    def verified(self) -> str:
        """``yes``, ``FAILED: worst input`` or ``not checked``: the report's "verified" column."""
        status = self.verification_status
        if status == "passed":
            return "yes"
        if status == "failed":
            worst = (self.verification or {}).get("worst") or {}
            return f"FAILED: {worst.get('text') or worst.get('probe') or 'see the verdict'}"
        return "not checked"

    @property
    def unranked_reason(self) -> str | None:
        """Why it has no rank (the same words in every format), or None when ranked."""
        if self.rank is not None:
            return None
        if not self.points:
            return "nothing was measured"
        if self.verification_status == "failed":
            return "its answers FAILED verification"
        if self.best is None:
            return "no step met the SLO"
        if self.verification_status != "passed":
            return "not verified (measure with loadtest run --verify)"
        if self.target.priced_type is None:
            return "no instance type to price"
        return f"no price for {', '.join(self.unpriced_types) or self.target.priced_type}"

    @property
    def rankable(self) -> bool:
        return (self.best is not None and self.usd_per_million_inferences is not None
                and self.verification_status == "passed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "run_id": self.run_id,
            "label": self.label,
            "rank": self.rank,
            "unranked_reason": self.unranked_reason,
            "verified": self.verified,
            "verification": dict(self.verification) if self.verification else None,
            "region": self.region,
            "region_assumed": self.region_assumed,
            "priced_instance_type": self.target.priced_type,
            "price_basis": price_basis(self.target),
            "price_per_instance_hour": self.price_per_instance_hour,
            "hourly_usd": self.hourly_usd,
            "cost_split": dict(self.cost_split) if self.cost_split is not None else None,
            "best": dict(self.best.summary) if self.best else None,
            "best_inferences_per_s": self.best.summary["inferences_per_s"] if self.best else None,
            "usd_per_million_inferences": self.usd_per_million_inferences,
            "capacity": dict(self.capacity) if self.capacity is not None else None,
            "steps": [{**p.summary, "slo_met": p.slo_met, "slo_reason": p.slo_reason,
                       "sources": list(p.sources)} for p in self.points],
        }


def price_basis(target: TargetInfo) -> str | None:
    """How its cost was priced, in words a reader of the report needs next to the figure."""
    if target.price_as:
        ran = target.instance_type or "another machine"
        note = f"; {target.price_note}" if target.price_note else ""
        return f"priced as {target.price_as} (measured on {ran}, not on that instance{note})"
    if target.placement:
        return (f"every pod it runs, at its share of its node ({target.placement}): the nodes its workers hold, "
                "and its head and sidecars wherever they run")
    if target.instance_type:
        return f"the instance type it ran on ({target.instance_type})"
    return None


def target_hourly(target: TargetInfo, prices: PriceTable, region: str,
                  ) -> tuple[float | None, float | None, dict[str, float | None], tuple[str, ...]]:
    """(price of one instance of its type, USD per hour in all, USD per hour by part, unpriced types).

    With a placement (in-cluster targets) every pod is priced at its share of its node; without one (a local
    run, an older result) the target is ``nodes`` whole instances of its priced type, all of it ``workers``.
    """
    unit = prices.hourly(target.priced_type, region)
    if target.placement and not target.price_as:
        total, split, missing = price_fractions(parse_fractions(target.placement, where=f"target {target.name!r} "
                                                                "placement"), prices, region)
        return unit, total, split, tuple(missing)
    hourly = fleet_hourly(unit, target.nodes)
    missing_types = (target.priced_type,) if unit is None and target.priced_type else ()
    return unit, hourly, {"workers": hourly}, missing_types


def _step_key(st: ClientStep) -> tuple[Any, ...]:
    return (st.target.name, st.run_id, st.spec.index, st.spec.mode.value, st.spec.arrival.value,
            st.spec.rate, st.spec.concurrency)


def group_steps(steps: Sequence[ClientStep]) -> tuple[list[list[ClientStep]], list[str]]:
    """Client steps grouped into one list per (target, run, step); duplicates are an error."""
    groups: dict[tuple[Any, ...], list[ClientStep]] = {}
    for st in steps:
        group = groups.setdefault(_step_key(st), [])
        dup = next((g for g in group if (g.client_index, g.spec.repeat) == (st.client_index, st.spec.repeat)), None)
        if dup is not None:
            again = f", repeat {st.spec.repeat}" if st.spec.repeat else ""
            raise ConfigError(
                f"client {st.client_index} of run {st.run_id!r} (target {st.target.name!r}, step {st.spec.index}"
                f"{again}) "
                f"appears twice: {dup.source} and {st.source}; pass each result file once"
            )
        group.append(st)
    warnings = []
    for group in groups.values():
        g0 = group[0]
        found = len({g.client_index for g in group})
        if found < g0.clients:
            warnings.append(
                f"{g0.target.name} run {g0.run_id} step {g0.spec.index}: {found} of {g0.clients} clients' "
                "results found; totals cover only those"
            )
    return list(groups.values()), warnings


SeriesKey = tuple[str, str | None]


def _check_targets(steps: Sequence[ClientStep],
                   extra: Sequence[tuple[TargetInfo, str | None, str]] = ()) -> dict[SeriesKey, TargetInfo]:
    """One description per run of a target; the clients of a run must agree on what they measured."""
    targets: dict[SeriesKey, tuple[TargetInfo, str]] = {}
    for t, run_id, source in [*((st.target, st.run_id, st.source) for st in steps), *extra]:
        key = (t.name, run_id)
        seen = targets.get(key)
        if seen is None:
            targets[key] = (t, source)
            continue
        a = (seen[0].instance_type, seen[0].price_as, seen[0].nodes, seen[0].processor, seen[0].placement)
        b = (t.instance_type, t.price_as, t.nodes, t.processor, t.placement)
        if a != b:
            raise ConfigError(
                f"target {t.name!r} of run {run_id!r} is {a} (instance type, priced as, nodes, processor, "
                f"placement) in "
                f"{seen[1]} but {b} in {source}; the clients of one run must describe the same target"
            )
    return {key: t for key, (t, _) in targets.items()}


def _labels(keys: Sequence[SeriesKey]) -> dict[SeriesKey, str]:
    """The target's name, with its run where the name alone would be ambiguous."""
    counts: dict[str, int] = {}
    for name, _ in keys:
        counts[name] = counts.get(name, 0) + 1
    return {(name, run): name if counts[name] == 1 or run is None else f"{name} · run {run}" for name, run in keys}


def series_verification(verdicts: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One verdict for a run from its clients' result files: any failure fails it; else any pass passes it
    (with several clients only client 0 checks, the others record its verdict or nothing)."""
    found = [v for v in verdicts if isinstance(v, Mapping) and v.get("status")]
    for status in ("failed", "passed"):
        match = [v for v in found if v["status"] == status]
        if match:
            return dict(match[0])
    return dict(found[0]) if found else None


def build_targets(
    steps: Sequence[ClientStep],
    *,
    slo_p99_ms: float,
    max_error_rate: float,
    prices: PriceTable,
    default_region: str = DEFAULT_REGION,
    targets_without_steps: Sequence[tuple[TargetInfo, str | None, str]] = (),
    verifications: Mapping[SeriesKey, Mapping[str, Any] | None] | None = None,
    slo_percentile: str = "p99",
) -> tuple[list[TargetReport], list[str]]:
    """One series per run of each target, in rank order (cheapest per 1M inferences first), and warnings.

    ``targets_without_steps`` ((target, run id, source) of every input) keeps a run that measured nothing in
    the report, listed last, instead of letting it vanish. ``verifications`` holds each run's verdict
    (:func:`series_verification`): only a run whose answers passed verification is ranked; the others stay
    in the report, unranked, with the reason.
    """
    targets = _check_targets(steps, targets_without_steps)
    labels = _labels(list(targets))
    groups, warnings = group_steps(steps)
    points: dict[SeriesKey, list[Point]] = {key: [] for key in targets}
    for group in groups:
        summary = summarize_repeats(by_repeat(group), percentile=slo_percentile)
        ok, reason = slo_verdict(summary, slo_p99_ms=slo_p99_ms, max_error_rate=max_error_rate,
                                 percentile=slo_percentile)
        summary["slo_confidence"], summary["slo_confidence_reason"] = judge(
            summary, slo_ms=slo_p99_ms, max_error_rate=max_error_rate, percentile=slo_percentile)
        key: SeriesKey = (group[0].target.name, group[0].run_id)
        points[key].append(
            Point(summary=summary, sources=tuple(sorted({g.source for g in group})), slo_met=ok, slo_reason=reason)
        )
        where = f"{labels[key]} step {summary['step']}"
        if summary["unstable"]:
            warnings.append(f"{where}: unstable: {summary['unstable_reason']} (measure it again, or longer)")
        for x in summary["repeats_excluded"]:
            warnings.append(f"{where}: repeat {x['repeat']} left out of its figures: {x['why']}")
        waited = summary["waited_for_connection"]
        if summary["requests"] and waited > 0.01 * summary["requests"]:
            warnings.append(
                f"{where}: {waited} of {summary['requests']} requests waited for a free connection; their latency "
                "includes that wait (raise --connections if the server could have taken them)"
            )
        if summary["client_saturated"]:
            warnings.append(
                f"{where}: a client used >= {CLIENT_SATURATED_CPU:.0%} of a core; its latency may include client "
                "time (add clients)"
            )
        if summary.get("contended"):
            host = describe_contention(summary.get("contention") or {})
            warnings.append(f"{where}: measured on a contended host ({host}); its figures are not the server's "
                            "alone and no capacity rests on it (measure again on a quieter machine)")
    reports = []
    for key, target in targets.items():
        label = labels[key]
        # in order of offered load, so that a sweep or a search reads as a curve
        pts = sorted(points[key], key=lambda p: (p.summary["mode"], p.summary["requested_rate"] or 0,
                                                 p.summary["concurrency"] or 0, p.summary["step"]))
        passing = [p for p in pts if p.slo_met]
        best = max(passing, key=lambda p: p.summary["inferences_per_s"]) if passing else None
        region = target.region or default_region
        unit, hourly, split, unpriced = target_hourly(target, prices, region)
        cost = usd_per_million(hourly, best.summary["inferences_per_s"]) if best else None
        verification = (verifications or {}).get(key)
        report = TargetReport(
            target=target, run_id=key[1], label=label, points=tuple(pts), best=best, region=region,
            region_assumed=target.region is None, price_per_instance_hour=unit, hourly_usd=hourly,
            usd_per_million_inferences=cost, verification=verification, cost_split=split,
            unpriced_types=unpriced,
            capacity=capacity_at_slo([p.summary for p in pts], slo_ms=slo_p99_ms, max_error_rate=max_error_rate,
                                     percentile=slo_percentile, nodes=target.nodes) if pts else None,
        )
        reports.append(report)
        if report.verification_status == "failed":
            warnings.append(f"{label}: its answers FAILED verification ({report.verified}); it is not ranked, "
                            "whatever its speed")
        elif pts and report.verification_status != "passed":
            why = (verification or {}).get("reason") if verification else None
            warnings.append(f"{label}: its answers were not verified{f' ({why})' if why else ''}; it is not ranked "
                            "(measure with `loadtest run --verify`)")
        if not pts:
            warnings.append(f"{label}: nothing was measured (see the run errors); it is not ranked")
        elif best is None:
            warnings.append(f"{label}: no step met the SLO ({slo_percentile} <= {slo_p99_ms:g} ms, errors <= "
                            f"{max_error_rate:.2%}); it is not ranked")
        elif target.priced_type is None:
            warnings.append(f"{label}: no instance type recorded, so its cost is n/a; run it with `loadtest run "
                            "--instance-type TYPE` (the EC2 type it runs on) or `--price-as TYPE` (to price this "
                            "machine as that EC2 type)")
        elif hourly is None:
            missing = unpriced[0] if unpriced else target.priced_type
            warnings.append(f"{label}: the price table of {prices.date} has no price for "
                            f"{', '.join(unpriced) or target.priced_type} in "
                            f"{region}, so its cost is n/a; give one with `loadtest report --prices FILE` "
                            f"({{\"prices\": {{\"{region}\": {{\"{missing}\": USD_PER_HOUR}}}}}})")
    return rank(reports), warnings


def by_repeat(group: Sequence[ClientStep]) -> list[list[ClientStep]]:
    """A step's client records split by repeat (each repeat merged across its clients, then the repeats combined)."""
    out: dict[int, list[ClientStep]] = {}
    for st in group:
        out.setdefault(st.spec.repeat, []).append(st)
    return [out[r] for r in sorted(out)]


def rank(reports: Sequence[TargetReport]) -> list[TargetReport]:
    """Verified and priced ones ranked, cheapest per 1M inferences first; then, unranked, verified ones without
    a price (by throughput), unverified ones, those that failed verification, and those without a passing step.
    """
    def by_throughput(r: TargetReport) -> tuple[float, str]:
        return (-(r.best.summary["inferences_per_s"] if r.best else 0.0), r.label)

    ranked = sorted((r for r in reports if r.rankable), key=lambda r: (r.usd_per_million_inferences, r.label))
    rest = [r for r in reports if not r.rankable]
    unpriced = sorted((r for r in rest if r.best is not None and r.verification_status == "passed"),
                      key=by_throughput)
    unverified = sorted((r for r in rest if r.best is not None and r.verification_status == "not-checked"),
                        key=by_throughput)
    failed = sorted((r for r in rest if r.verification_status == "failed"), key=by_throughput)
    no_slo = sorted((r for r in rest if r.best is None and r.verification_status != "failed"), key=lambda r: r.label)
    return [replace(r, rank=i + 1) for i, r in enumerate(ranked)] + unpriced + unverified + failed + no_slo
