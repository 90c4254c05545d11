"""AWS regions and the Availability Zone names they offer, so that synth needs no AWS call.

Without this table the VPC asks AWS which zones an account sees (a context lookup), and ``cdk synth`` fails
offline for every account whose answer is not cached in ``cdk.context.json``. A zone *name* such as
``us-east-1a`` maps to a different physical zone in every account (the zone *ID*, ``use1-az4``, is the same
for everyone), and a few regions show an account only some of their zones; the table records the letters
AWS lists for a region and, where every account sees the same letters, which ones are the default.

Regions launched after :data:`REGIONS_DATE` are not listed; such a region still works with
``availability_zones`` given explicitly (or ``"lookup"``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

REGIONS_DATE = "2026-11-29"
"""When the table was last checked against AWS's list of regions and zones."""


@dataclass(frozen=True)
class RegionZones:
    """The zone letters of one region.

    :param letters: every zone letter AWS lists for the region (``us-east-1`` → ``abcdef``).
    :param default: the letters a new account sees, in order, from which the first ``max_azs`` are the default
        zones; ``""`` where accounts see different subsets (name the zones, or use ``"lookup"``).
    :param note: why the default differs from ``letters``.
    """

    letters: str
    default: str
    note: str = ""


_ABC = RegionZones("abc", "abc")

REGIONS: dict[str, RegionZones] = {
    "us-east-1": RegionZones("abcdef", "abcdef"),
    "us-east-2": _ABC,
    "us-west-1": RegionZones("abc", "", "each account sees two of its three zones, which two depends on the account"),
    "us-west-2": RegionZones("abcd", "abcd"),
    "ca-central-1": RegionZones("abd", "abd"),
    "ca-west-1": _ABC,
    "mx-central-1": _ABC,
    "sa-east-1": _ABC,
    "eu-west-1": _ABC,
    "eu-west-2": _ABC,
    "eu-west-3": _ABC,
    "eu-central-1": _ABC,
    "eu-central-2": _ABC,
    "eu-north-1": _ABC,
    "eu-south-1": _ABC,
    "eu-south-2": _ABC,
    "il-central-1": _ABC,
    "me-central-1": _ABC,
    "me-south-1": _ABC,
    "af-south-1": _ABC,
    "ap-east-1": _ABC,
    "ap-east-2": _ABC,
    "ap-south-1": _ABC,
    "ap-south-2": _ABC,
    "ap-northeast-1": RegionZones("abcd", "acd", "ap-northeast-1b is offered only to accounts created before 2013"),
    "ap-northeast-2": RegionZones("abcd", "abcd"),
    "ap-northeast-3": _ABC,
    "ap-southeast-1": _ABC,
    "ap-southeast-2": _ABC,
    "ap-southeast-3": _ABC,
    "ap-southeast-4": _ABC,
    "ap-southeast-5": _ABC,
    "ap-southeast-7": _ABC,
    "us-gov-east-1": _ABC,
    "us-gov-west-1": _ABC,
    "cn-north-1": RegionZones("abd", "abd"),
    "cn-northwest-1": _ABC,
}


def closest_region(name: str) -> str | None:
    """The listed region a misspelt name most likely meant (``eu-west1`` → ``eu-west-1``), if any is close."""
    matches = difflib.get_close_matches(name.lower().strip(), list(REGIONS), n=1, cutoff=0.6)
    return matches[0] if matches else None


def zone_names(region: str) -> tuple[str, ...]:
    """Every zone name AWS lists for ``region`` (empty for a region the table does not know)."""
    zones = REGIONS.get(region)
    return tuple(f"{region}{letter}" for letter in zones.letters) if zones else ()


def default_zones(region: str, count: int) -> tuple[str, ...] | None:
    """The first ``count`` zones every account of ``region`` sees, or None when the table cannot say."""
    zones = REGIONS.get(region)
    if zones is None or len(zones.default) < count:
        return None
    return tuple(f"{region}{letter}" for letter in zones.default[:count])
