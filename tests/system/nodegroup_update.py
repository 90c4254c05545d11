"""What a CloudFormation deploy does to the node count of EKS managed node groups, reproduced from the documented
behaviour of the three parties, so that a test can deploy template A, let the Cluster Autoscaler move the counts,
deploy template B and read what EKS then runs.

* CloudFormation, ``AWS::EKS::Nodegroup`` (its handler is not public): a create sends ``ScalingConfig`` to
  ``eks:CreateNodegroup``; an update whose resolved ``ScalingConfig`` differs from the deployed one sends it, as a
  whole, to ``eks:UpdateNodegroupConfig``; a property absent from the template is not sent. Sources: EKS API
  reference, ``NodegroupScalingConfig.desiredSize`` ("Whenever this parameter changes, the number of worker nodes
  in the node group is updated to the specified size ... When using CloudFormation, no action occurs if you remove
  this parameter from your CFN template"); eksctl-io/eksctl#3532 (a stack change of MaxSize alone set the group
  back to the stack's DesiredSize). A change of ``NodegroupName`` (create-only) creates a new group and deletes
  the old one.
* CloudFormation custom resources (user guide, "Custom resources"): Create for a new logical id, Update when the
  properties change, no call otherwise; ``Fn::GetAtt`` reads the ``Data`` of the last answer, and a resource that
  reads it is deployed after it.
* EKS: ``CreateNodegroup`` needs all three sizes (``NodegroupScalingConfig``: "When creating a node group, you
  must specify all or none of the properties"; crossplane-contrib/provider-aws ``pkg/clients/eks/nodegroup.go``:
  "desizedSize is a required field for AWS"); ``UpdateNodegroupConfig`` sets the group to a given desiredSize and
  refuses one outside [min, max], and without one refuses bounds the current size lies outside ("Minimum capacity
  2 can't be greater than desired size 1", terraform-aws-modules/terraform-aws-eks#835).

The node-count function's own logic runs as is (``eks_inference/constructs/node_count_handler.py``), reading this
model of EKS and Auto Scaling through the two calls it makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eks_inference.constructs.node_count import RESOURCE_TYPE
from eks_inference.constructs.node_count_handler import current_size, size_for

NODEGROUP = "AWS::EKS::Nodegroup"
CLUSTER = "eks-inference-cluster"
_KEYS = {"MinSize": "minSize", "MaxSize": "maxSize", "DesiredSize": "desiredSize"}


class EksRefused(Exception):
    """EKS answered InvalidParameterException: the deploy fails there."""


@dataclass
class Group:
    min_size: int
    max_size: int
    desired: int
    """The Auto Scaling group's desired capacity: what the Cluster Autoscaler sets and EKS reports."""


@dataclass
class Eks:
    """EKS's managed node groups and their Auto Scaling groups, with the API calls that reach them."""

    groups: dict[str, Group] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)

    def create_nodegroup(self, name: str, scaling: dict[str, int]) -> None:
        self.calls.append(("CreateNodegroup", name, scaling))
        if set(scaling) != set(_KEYS.values()):
            raise EksRefused(f"{name}: desiredSize is not valid (a new group needs all three sizes: {scaling})")
        self._check(name, scaling["minSize"], scaling["maxSize"], scaling["desiredSize"])
        self.groups[name] = Group(scaling["minSize"], scaling["maxSize"], scaling["desiredSize"])

    def update_nodegroup_config(self, name: str, scaling: dict[str, int]) -> None:
        self.calls.append(("UpdateNodegroupConfig", name, scaling))
        g = self.groups[name]
        lo, hi = scaling.get("minSize", g.min_size), scaling.get("maxSize", g.max_size)
        self._check(name, lo, hi, scaling.get("desiredSize", g.desired))
        g.min_size, g.max_size, g.desired = lo, hi, scaling.get("desiredSize", g.desired)

    @staticmethod
    def _check(name: str, lo: int, hi: int, desired: int) -> None:
        if lo > desired:
            raise EksRefused(f"{name}: Minimum capacity {lo} can't be greater than desired size {desired}")
        if desired > hi:
            raise EksRefused(f"{name}: Desired capacity {desired} can't be greater than max size {hi}")

    def autoscale(self, name: str, desired: int) -> None:
        """The Cluster Autoscaler sets the Auto Scaling group's desired capacity, within the bounds."""
        g = self.groups[name]
        assert g.min_size <= desired <= g.max_size
        g.desired = desired

    # -- the two calls the node-count function makes, in boto3's shapes --
    class exceptions:  # boto3 clients carry their service errors under this name
        class ResourceNotFoundException(Exception):
            pass

    def describe_nodegroup(self, *, clusterName: str, nodegroupName: str) -> dict[str, Any]:
        if nodegroupName not in self.groups:
            raise self.exceptions.ResourceNotFoundException(nodegroupName)
        g = self.groups[nodegroupName]
        return {"nodegroup": {"scalingConfig": {"minSize": g.min_size, "maxSize": g.max_size, "desiredSize": g.desired},
                              "resources": {"autoScalingGroups": [{"name": f"eks-{nodegroupName}"}]}}}

    def describe_auto_scaling_groups(self, *, AutoScalingGroupNames: list[str]) -> dict[str, Any]:
        return {"AutoScalingGroups": [{"DesiredCapacity": self.groups[n.removeprefix("eks-")].desired}
                                      for n in AutoScalingGroupNames]}


def _resolve(value: Any, attributes: dict[str, dict[str, Any]]) -> Any:
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"}:
        rid, attr = value["Fn::GetAtt"]
        return attributes[rid][attr]
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return CLUSTER
    if isinstance(value, dict):
        return {k: _resolve(v, attributes) for k, v in value.items()}
    return value


@dataclass
class Stack:
    """One deployed Cluster stack: per node group its name and resolved ScalingConfig, per NodeCount its answer."""

    eks: Eks
    template: dict[str, Any] = field(default_factory=lambda: {"Resources": {}})
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployed: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)

    def deploy(self, template: dict[str, Any]) -> None:
        """CloudFormation's update from the deployed template to ``template``: NodeCounts first (the groups read
        them), then each group created, replaced or updated as the module docstring says."""
        before, after = self.template["Resources"], template["Resources"]
        for rid, res in after.items():
            if res["Type"] != RESOURCE_TYPE:
                continue
            props = _resolve({k: v for k, v in res["Properties"].items() if k != "ServiceToken"}, {})
            old = before.get(rid)
            if old is not None and _resolve({k: v for k, v in old["Properties"].items() if k != "ServiceToken"},
                                            {}) == props:
                continue
            now = current_size(self.eks, self.eks, props["ClusterName"], props["NodegroupName"])
            self.attributes[rid] = {"Size": size_for(now, int(props["MinSize"]), int(props["MaxSize"]),
                                                     int(props["InitialSize"]))}
        for rid, res in after.items():
            if res["Type"] != NODEGROUP:
                continue
            name = res["Properties"]["NodegroupName"]
            scaling = {_KEYS[k]: v for k, v in _resolve(res["Properties"]["ScalingConfig"], self.attributes).items()}
            if rid not in self.deployed or self.deployed[rid][0] != name:
                self.eks.create_nodegroup(name, scaling)
                if rid in self.deployed:
                    self.eks.groups.pop(self.deployed[rid][0])
            elif self.deployed[rid][1] != scaling:
                self.eks.update_nodegroup_config(name, scaling)
            self.deployed[rid] = (name, scaling)
        self.template = template

    def group_name(self, label: str) -> str:
        """The deployed name of the group whose processor label is ``label``."""
        (rid,) = [rid for rid, r in self.template["Resources"].items()
                  if r["Type"] == NODEGROUP and r["Properties"]["Labels"]["eks-inference/processor"] == label]
        return self.deployed[rid][0]


def initial_size(template: dict[str, Any], nodegroup: dict[str, Any]) -> int:
    """The size a node group of ``template`` starts at when CloudFormation creates it."""
    desired = nodegroup["ScalingConfig"]["DesiredSize"]
    if isinstance(desired, int):
        return desired
    props = template["Resources"][desired["Fn::GetAtt"][0]]["Properties"]
    return size_for(None, props["MinSize"], props["MaxSize"], props["InitialSize"])


def as_constant_desired_size(template: dict[str, Any]) -> dict[str, Any]:
    """``template`` as aws_eks_v2 renders a node group on its own: DesiredSize a number (the initial size)."""
    out = {"Resources": dict(template["Resources"])}
    for rid, res in template["Resources"].items():
        if res["Type"] == NODEGROUP:
            scaling = {**res["Properties"]["ScalingConfig"], "DesiredSize": initial_size(template, res["Properties"])}
            out["Resources"][rid] = {**res, "Properties": {**res["Properties"], "ScalingConfig": scaling}}
        elif res["Type"] == RESOURCE_TYPE:
            del out["Resources"][rid]
    return out
