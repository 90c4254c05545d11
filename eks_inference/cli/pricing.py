"""``--pricing KIND``, shared by the commands that price: which kind of rate a cost uses, and where its rates live."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eks_inference.config import CDK_JSON, ConfigError, read_project_context
from eks_inference.tables.prices import PRICING_KEY, PriceTable, PricingKind, load_prices, pricing_kind


def add_pricing_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pricing", choices=[k.value for k in PricingKind], default=PricingKind.ON_DEMAND.value,
                   help="which rate prices the instance-hours; every cost printed names it. On-Demand list prices "
                        f"ship with the project; the others come from {PRICING_KEY!r} in cdk.json (or --prices "
                        "FILE with that \"kind\"), and a kind without rates is refused")
    p.add_argument("--cdk-json", type=Path, default=Path(CDK_JSON),
                   help=f"the project file whose context holds {PRICING_KEY!r}")


def pricing_rates(cdk_json: Path) -> Mapping[str, Any]:
    """The user's rates per kind from ``cdk.json``; none when there is no project file (a report built elsewhere)."""
    if not cdk_json.is_file():
        return {}
    rates = read_project_context(cdk_json).get(PRICING_KEY) or {}
    if not isinstance(rates, Mapping):
        raise ConfigError(f"{cdk_json}: context {PRICING_KEY!r} is {type(rates).__name__}, not an object; write "
                          "{\"spot\": {...}, \"savings-plan\": {...}, \"reserved\": {...}}")
    return rates


def prices_from_args(a: argparse.Namespace, path: str | None = None) -> PriceTable:
    return load_prices(path, kind=pricing_kind(a.pricing), rates=pricing_rates(a.cdk_json))
