"""An insufficient-capacity failure in a stack's events, as one line that says what to try.

A managed node group that cannot launch its instances fails its CloudFormation resource after a long wait, and
the reason buried in the event is EC2's (``InsufficientInstanceCapacity``) wrapped in EKS's health issue
(``AsgInstanceLaunchFailures``) wrapped in CloudFormation's text. For example, from a real stack
(eksctl-io/eksctl#4732)::

    Nodegroup mng-2 failed to stabilize: [{Code: AsgInstanceLaunchFailures,Message: Could not launch On-Demand
    Instances. InsufficientInstanceCapacity - We currently do not have sufficient p2.xlarge capacity in the
    Availability Zone you requested (us-west-2b). Our system will be working on provisioning additional capacity.
    You can currently get p2.xlarge capacity by not specifying an Availability Zone in your request or choosing
    us-west-2a, us-west-2c. Launching EC2 instance failed.,ResourceIds: [eks-mng-2-...]}, ...]

EC2's own text for Spot is "There is no Spot capacity available that matches your request" (EC2 user guide,
"Spot Instance request status", ``capacity-not-available``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_ICE = "InsufficientInstanceCapacity"
_TYPE_ZONE = re.compile(r"sufficient (?P<type>[a-z0-9]+\.[a-z0-9-]+) capacity in the Availability Zone you requested "
                        r"\((?P<zone>[a-z0-9-]+)\)")
_OTHER_ZONES = re.compile(r"or choosing (?P<zones>[a-z0-9-]+(?:, [a-z0-9-]+)*(?: and [a-z0-9-]+)?)")
_GROUP = re.compile(r"Nodegroup (?P<name>[a-z0-9-]+) failed")
_SPOT = re.compile(r"Could not launch Spot Instances|no Spot capacity available", re.IGNORECASE)


def capacity_advice(events: Iterable[Mapping[str, Any]]) -> str | None:
    """The first failed event whose reason is an insufficient-capacity error, as one line; None when there is none."""
    for e in events:
        reason = str(e.get("ResourceStatusReason") or "")
        if not str(e.get("ResourceStatus", "")).endswith("FAILED") or (_ICE not in reason
                                                                         and not _SPOT.search(reason)):
            continue
        g = _GROUP.search(reason)
        group = g.group("name") if g else str(e.get("LogicalResourceId") or "a node group")
        group = re.sub(r"-[0-9a-f]{8}$", "", group)  # the hash the stack appends to a group's name
        tz = _TYPE_ZONE.search(reason)
        other = _OTHER_ZONES.search(reason)
        if _SPOT.search(reason):
            what = "no Spot capacity for its instance types"
            tries = ["more instance_types (other sizes or families of its processor: Spot draws from every pool "
                     "listed)", "capacity_type ON_DEMAND"]
        else:
            itype, zone = (tz.group("type"), tz.group("zone")) if tz else ("its instance type", "a zone")
            what = f"no {itype} capacity in {zone} now"
            tries = [f"availability_zones without {zone}"
                     + (f" (EC2 offers {other.group('zones').replace(' and ', ', ')} now)" if other else ""),
                     f"another size beside {itype} in instance_types",
                     "a capacity_reservation_id (an On-Demand Capacity Reservation, or a Capacity Block with "
                     "capacity_type CAPACITY_BLOCK)"]
        return (f"node group {group}: {what} (EC2 {_ICE}); try " + ", or ".join(tries)
                + " in cdk.json, then deploy again")
    return None
