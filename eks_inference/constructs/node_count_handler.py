"""Lambda source of NodeCount (inlined into the template): the node count a deploy should give a node group.

A group that exists keeps the count it runs, read from its Auto Scaling group (what the Cluster Autoscaler
sets; EKS's copy of it can lag), moved into the new bounds only where it lies outside them. A new group
starts at its initial size. Only boto3 and the standard library: the Lambda runtime provides both.
"""

import json
import time
import urllib.request
from typing import Any

import boto3


def size_for(current: int | None, min_size: int, max_size: int, initial: int) -> int:
    """The count to render as DesiredSize; EKS refuses one outside [min_size, max_size]."""
    return min(max(initial if current is None else current, min_size), max_size)


def current_size(eks: Any, autoscaling: Any, cluster: str, nodegroup: str) -> int | None:
    """The group's running count, or None when it does not exist yet."""
    try:
        ng = eks.describe_nodegroup(clusterName=cluster, nodegroupName=nodegroup)["nodegroup"]
    except eks.exceptions.ResourceNotFoundException:
        return None
    names = [g["name"] for g in ng.get("resources", {}).get("autoScalingGroups", [])]
    if names:
        groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=names)["AutoScalingGroups"]
        if groups:
            return sum(g["DesiredCapacity"] for g in groups)
    return ng["scalingConfig"]["desiredSize"]


def patiently(read: Any, pause: float, tries: int = 8) -> Any:
    """``read()``, again while IAM has not yet propagated the role's new policy (seconds after a deploy adds it)."""
    for i in range(tries):
        try:
            return read()
        except Exception as e:
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if not code.startswith("AccessDenied") or i == tries - 1:
                raise
            time.sleep(pause)


def respond(event: dict[str, Any], status: str, reason: str, data: dict[str, Any]) -> None:
    body = {"Status": status, "Reason": reason, "Data": data,
            "PhysicalResourceId": event.get("PhysicalResourceId") or event["ResourceProperties"]["NodegroupName"],
            **{k: event[k] for k in ("StackId", "RequestId", "LogicalResourceId")}}
    req = urllib.request.Request(event["ResponseURL"], data=json.dumps(body).encode(), method="PUT",
                                 headers={"content-type": ""})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def handler(event: dict[str, Any], context: Any, clients: tuple[Any, Any] | None = None, pause: float = 5) -> None:
    try:
        data: dict[str, Any] = {}
        if event["RequestType"] != "Delete":
            p = event["ResourceProperties"]
            eks, autoscaling = clients or (boto3.client("eks"), boto3.client("autoscaling"))
            now = patiently(lambda: current_size(eks, autoscaling, p["ClusterName"], p["NodegroupName"]), pause)
            data = {"Size": size_for(now, int(p["MinSize"]), int(p["MaxSize"]), int(p["InitialSize"])),
                    "Running": "none" if now is None else now}
        print(json.dumps({"request": event["RequestType"], **data}))
        respond(event, "SUCCESS", "ok", data)
    except Exception as e:  # CloudFormation must hear of every failure, or it waits an hour for a response
        print(repr(e))
        respond(event, "FAILED", f"{type(e).__name__}: {e}", {})
