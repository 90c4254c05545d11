"""On-demand EC2 prices, dated and overridable, and the price-performance arithmetic.

The ranking is only as good as its prices, and prices change: the table says when and where it was
taken, any entry can be overridden from a JSON file (``--prices``), and an instance type the table
does not know is priced "n/a" instead of being guessed, so a local run (processor ``cpu`` on a laptop)
still gets a report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from eks_inference.errors import ConfigError

DEFAULT_REGION = "us-east-1"
MAX_PRICE_AGE_DAYS = 180
"""Older prices than this get a warning in the report: list prices move, and new instance generations appear."""

# Linux, shared tenancy, on-demand USD per instance-hour.
_US = {
    "m7g.large": 0.0816, "m7g.xlarge": 0.1632,
    "c7g.xlarge": 0.1450, "c7g.2xlarge": 0.2900, "c7g.4xlarge": 0.5800,
    "inf2.xlarge": 0.7582, "inf2.8xlarge": 1.9679, "inf2.24xlarge": 6.4906,
    "g5.xlarge": 1.0060, "g5.2xlarge": 1.2120,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776,
    "c7i.large": 0.08925, "c7i.xlarge": 0.1785, "c7i.2xlarge": 0.3570,
    # added 2026-11-29 (same pages): the system node groups' type and the prod cpu group's, for plan and costs
    "m7i.large": 0.1008, "m7i.xlarge": 0.2016, "c7i.4xlarge": 0.7140,
    # added 2026-12-06 (same pages): the families a local machine is priced as (AMD, Graviton) in its small sizes
    "c7a.medium": 0.05131, "c7a.large": 0.10262, "c7a.xlarge": 0.20524, "c7a.2xlarge": 0.41048,
    "c7g.medium": 0.0363, "c7g.large": 0.0725,
}
_EU_WEST_1 = {
    "m7g.large": 0.0914, "m7g.xlarge": 0.1827,
    "c7g.xlarge": 0.1613, "c7g.2xlarge": 0.3226, "c7g.4xlarge": 0.6451,
    "inf2.xlarge": 0.8338, "inf2.8xlarge": 2.1643, "inf2.24xlarge": 7.1396,
    "g5.xlarge": 1.1230, "g5.2xlarge": 1.3530,
    "g6.xlarge": 0.8957, "g6.2xlarge": 1.0880,
    "c7i.large": 0.1008, "c7i.xlarge": 0.2016, "c7i.2xlarge": 0.4032,
    # added 2026-11-29: four times c7i.xlarge (a family's sizes scale linearly in price); m7i not transcribed here
    "c7i.4xlarge": 0.8064,
}


class PricingKind(str, Enum):
    """How instance-hours are bought: each kind is a table of its own, and every cost names the kind it used.

    Only On-Demand list prices ship with the project. Spot prices move by zone and hour, and Savings Plans and
    Reserved Instances depend on the term, the payment option and the commitment a buyer signed: those rates come
    from the user (``eks-inference:pricing`` in ``cdk.json``, or ``--prices FILE`` with a ``kind``), never from a
    guess of ours.
    """

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    SAVINGS_PLAN = "savings-plan"
    RESERVED = "reserved"

    @property
    def label(self) -> str:
        return {"on-demand": "On-Demand", "spot": "Spot", "savings-plan": "Savings Plan",
                "reserved": "Reserved"}[self.value]


PRICING_KEY = "eks-inference:pricing"
"""The ``cdk.json`` context key holding the user's Spot, Savings Plan and Reserved rates, one entry per kind."""


@dataclass(frozen=True, kw_only=True)
class PriceTable:
    """USD per instance-hour by region and instance type.

    :param date: when the prices were taken (ISO date); reports print it next to every cost.
    :param source: where they came from.
    :param note: caveats (snapshot, currency, tenancy).
    :param prices: ``{region: {instance_type: usd_per_hour}}``; region ``"*"`` applies everywhere, which is
        how a local machine or a discount rate is priced.
    :param kind: how the hours are bought; default On-Demand.
    """

    date: str
    source: str
    note: str = ""
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    kind: PricingKind = PricingKind.ON_DEMAND

    @property
    def label(self) -> str:
        """``On-Demand prices of 2025-06-01``: what a cost line says about the rate it used."""
        return f"{self.kind.label} prices of {self.date}"

    def hourly(self, instance_type: str | None, region: str | None) -> float | None:
        """Price of one instance-hour, or None when unknown (reported as n/a, never guessed)."""
        if not instance_type:
            return None
        for reg in (region or DEFAULT_REGION, "*"):
            price = self.prices.get(reg, {}).get(instance_type)
            if price is not None:
                return float(price)
        return None

    def with_overrides(self, doc: Mapping[str, Any], *, source: str) -> PriceTable:
        """Overlay a ``--prices`` document; entries it names replace ours, the rest stay."""
        merged: dict[str, dict[str, float]] = {r: dict(p) for r, p in self.prices.items()}
        for region, entries in _parse_price_doc(doc, source=source).items():
            merged.setdefault(region, {}).update(entries)
        return PriceTable(
            date=str(doc.get("date", self.date)),
            source=str(doc.get("source", f"{self.source}; overrides from {source}")),
            note=str(doc.get("note", self.note)),
            prices=merged,
            kind=self.kind,
        )

    def discounted(self, fraction: float, *, kind: PricingKind, date: str, source: str, note: str = "") -> PriceTable:
        """Every price of this table less ``fraction`` (a Savings Plan's or reservation's discount, as a share)."""
        return PriceTable(date=date, source=source, kind=kind,
                          note=note or f"{fraction:.0%} off the {self.kind.label} prices of {self.date}",
                          prices={r: {t: round(v * (1 - fraction), 6) for t, v in p.items()}
                                  for r, p in self.prices.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "source": self.source, "note": self.note, "kind": self.kind.value,
                "prices": {r: dict(sorted(p.items())) for r, p in sorted(self.prices.items())}}


DEFAULT_PRICES = PriceTable(
    date="2025-06-01",
    source="AWS EC2 On-Demand pricing pages (Linux, shared tenancy), transcribed by hand",
    note=(
        "A snapshot of public list prices, not a quote: no Savings Plans, Spot, reserved (--pricing with your own "
        "rates) or EKS control-plane "
        "($0.10/h per cluster) costs. us-west-2 matches us-east-1 for these types. m7i.large, m7i.xlarge and "
        "c7i.4xlarge were added on 2026-11-29, c7a (medium to 2xlarge), c7g.medium and c7g.large in us-east-1 and "
        "us-west-2 on 2026-12-06. Check current prices and override with --prices FILE."
    ),
    prices={"us-east-1": _US, "us-west-2": dict(_US), "eu-west-1": _EU_WEST_1},
)


def _parse_price_doc(doc: Mapping[str, Any], *, source: str) -> dict[str, dict[str, float]]:
    prices = doc.get("prices")
    if not isinstance(prices, Mapping):
        raise ConfigError(
            f"{source}: no 'prices' object; write {{\"date\": \"YYYY-MM-DD\", \"prices\": "
            "{\"us-east-1\": {\"c7g.xlarge\": 0.145}}}"
        )
    out: dict[str, dict[str, float]] = {}
    for region, entries in prices.items():
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{source}: prices[{region!r}] is not an object of instance type -> USD/hour")
        for itype, value in entries.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(
                    f"{source}: prices[{region!r}][{itype!r}] = {value!r} is not a non-negative number; "
                    "give USD per instance-hour, e.g. 0.145"
                )
            out.setdefault(str(region), {})[str(itype)] = float(value)
    return out


def pricing_kind(value: str | PricingKind | None, *, where: str = "--pricing") -> PricingKind:
    if value is None:
        return PricingKind.ON_DEMAND
    try:
        return PricingKind(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a pricing kind; use one of "
                          f"{', '.join(k.value for k in PricingKind)}") from None


def price_table_for(kind: PricingKind, rates: Mapping[str, Any] | None = None,
                    base: PriceTable = DEFAULT_PRICES) -> PriceTable:
    """The table of ``kind``: On-Demand is ``base``; any other kind comes from ``rates[kind]`` (the
    ``eks-inference:pricing`` context), either as prices per instance-hour or as a discount off On-Demand::

        {"spot": {"date": "2026-12-01", "source": "aws ec2 describe-spot-price-history", "prices": {"us-west-2":
                  {"c7g.2xlarge": 0.11}}},
         "savings-plan": {"date": "2026-12-01", "source": "our 1-year Compute Savings Plan", "discount": 0.3}}

    ConfigError, saying what to add, when the kind has no entry: the project ships no rate but On-Demand's.
    """
    if kind is PricingKind.ON_DEMAND:
        return base
    entry = (rates or {}).get(kind.value)
    where = f"{PRICING_KEY}.{kind.value}"
    if entry is None:
        raise ConfigError(
            f"--pricing {kind.value}: no {kind.label} rates; the project ships On-Demand list prices only, so add "
            f"\"{kind.value}\": {{\"date\": \"YYYY-MM-DD\", \"source\": \"...\", \"discount\": 0.3}} (or \"prices\": "
            f"{{REGION: {{TYPE: USD_PER_HOUR}}}}) under {PRICING_KEY!r} in cdk.json's context")
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: {entry!r} is not an object; write {{\"date\": .., \"source\": .., "
                          "\"discount\": 0.3}} or {\"date\": .., \"source\": .., \"prices\": {...}}")
    problems = [f"{where}: no {k!r}; say {why}" for k, why in (("date", "when the rates were taken (YYYY-MM-DD)"),
                                                               ("source", "where they come from"))
                if not isinstance(entry.get(k), str) or not entry.get(k)]
    discount = entry.get("discount")
    if ("discount" in entry) == ("prices" in entry):
        problems.append(f"{where}: give exactly one of 'discount' (a share off On-Demand, e.g. 0.3) and 'prices'")
    elif "discount" in entry and (isinstance(discount, bool) or not isinstance(discount, int | float)
                                  or not 0 <= discount < 1):
        problems.append(f"{where}.discount: {discount!r} is not a share in [0, 1); write 0.3 for 30 % off")
    if problems:
        raise ConfigError("\n".join(problems))
    date, source, note = str(entry["date"]), str(entry["source"]), str(entry.get("note", ""))
    if "discount" in entry:
        return base.discounted(float(entry["discount"]), kind=kind, date=date, source=source, note=note)
    return PriceTable(date=date, source=source, note=note, kind=kind,
                      prices=_parse_price_doc(entry, source=where))


def load_prices(path: str | Path | None, *, kind: PricingKind = PricingKind.ON_DEMAND,
                rates: Mapping[str, Any] | None = None) -> PriceTable:
    """The table of ``kind`` (:func:`price_table_for`), overlaid with ``path`` when given. A ``--prices`` document
    with a ``kind`` of its own must name the kind asked for, and may stand in for a missing ``rates`` entry."""
    if path is None:
        return price_table_for(kind, rates)
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--prices: {str(p)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--prices: {p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"--prices: {p} must hold a JSON object with 'date', 'source' and 'prices'")
    doc_kind = pricing_kind(doc.get("kind", kind.value), where=f"--prices: {p} kind")
    if doc_kind is not kind:
        raise ConfigError(f"--prices: {p} holds {doc_kind.label} rates, but --pricing is {kind.value}; pass "
                          f"--pricing {doc_kind.value} or give a file of {kind.label} rates")
    if kind is not PricingKind.ON_DEMAND and kind.value not in (rates or {}):
        return PriceTable(date=str(doc.get("date", "")), source=str(doc.get("source", str(p))),
                          note=str(doc.get("note", "")), kind=kind, prices=_parse_price_doc(doc, source=str(p)))
    return price_table_for(kind, rates).with_overrides(doc, source=str(p))


def fleet_hourly(price_per_instance: float | None, nodes: int) -> float | None:
    return None if price_per_instance is None else price_per_instance * nodes


def usd_per_million(hourly_usd: float | None, inferences_per_s: float) -> float | None:
    """Cost of one million inferences when the fleet runs flat out at ``inferences_per_s``."""
    if hourly_usd is None or inferences_per_s <= 0:
        return None
    return hourly_usd / (inferences_per_s * 3600.0) * 1e6


def age_warning(table: PriceTable, *, today: dt.date, max_age_days: int = MAX_PRICE_AGE_DAYS) -> str | None:
    """A warning when the table is older than ``max_age_days`` (or carries no readable date)."""
    try:
        taken = dt.date.fromisoformat(table.date)
    except ValueError:
        return (f"the price table's date {table.date!r} is not an ISO date, so its age is unknown; give current "
                "prices with --prices FILE ({\"date\": \"YYYY-MM-DD\", \"prices\": {...}})")
    age = (today - taken).days
    if age <= max_age_days:
        return None
    return (f"the price table is dated {table.date}, {age} days old (more than {max_age_days}); costs use those "
            "prices — check current ones and override them with --prices FILE "
            "({\"date\": \"YYYY-MM-DD\", \"prices\": {\"REGION\": {\"TYPE\": USD_PER_HOUR}}})")


@dataclass(frozen=True, kw_only=True)
class LogIngestionPrice:
    """CloudWatch Logs ingestion (Standard log class), USD per GB, by region.

    :param date: when the prices were taken.  :param source: where they came from.
    :param usd_per_gb: ``{region: USD per GB ingested}``; GB is 2**30 bytes, as AWS bills data.
    :param event_overhead_bytes: bytes counted per event besides its message (the PutLogEvents batch-size rule).
    """

    date: str
    source: str
    usd_per_gb: Mapping[str, float]
    event_overhead_bytes: int = 26

    def usd_per_million_events(self, event_bytes: float, region: str = DEFAULT_REGION) -> float | None:
        """What ingesting one million events of ``event_bytes`` (message only) costs; None for an unknown region."""
        price = self.usd_per_gb.get(region)
        if price is None:
            return None
        return (event_bytes + self.event_overhead_bytes) * 1e6 / 2**30 * price


CLOUDWATCH_LOGS_INGESTION = LogIngestionPrice(
    date="2026-12-06",
    source="Amazon CloudWatch pricing page, Logs, Standard log class, 'Collect (Data Ingestion)', transcribed by hand",
    usd_per_gb={"us-east-1": 0.50, "us-west-2": 0.50, "eu-west-1": 0.57},
)
"""Storage ($0.03 per GB-month compressed in us-east-1) and Logs Insights queries ($0.005 per GB scanned) come on top;
at a retention of weeks, ingestion dominates."""


@dataclass(frozen=True, kw_only=True)
class CacheNodePrice:
    """ElastiCache On-Demand node-hours (Redis OSS), USD per node per hour, by region and node type.

    :param date: when the prices were taken.  :param source: where they came from.
    :param usd_per_node_hour: ``{region: {node type: USD}}``; a type or region not listed is priced "n/a".
    """

    date: str
    source: str
    usd_per_node_hour: Mapping[str, Mapping[str, float]]

    def hourly(self, node_type: str, region: str) -> float | None:
        return self.usd_per_node_hour.get(region, {}).get(node_type)


_CACHE_US = {"cache.t4g.micro": 0.016, "cache.t4g.small": 0.032, "cache.t4g.medium": 0.065}
ELASTICACHE_NODES = CacheNodePrice(
    date="2026-12-07",
    source="Amazon ElastiCache pricing page, On-Demand nodes, Redis OSS, transcribed by hand",
    usd_per_node_hour={"us-east-1": _CACHE_US, "us-east-2": _CACHE_US, "us-west-2": _CACHE_US,
                       "eu-west-1": {"cache.t4g.micro": 0.018, "cache.t4g.small": 0.036, "cache.t4g.medium": 0.072}},
)
"""The GCS fault-tolerance store's nodes (``ray.redis_node_type``); backups are off, so node-hours are all of it."""
