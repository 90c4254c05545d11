"""An insufficient-capacity failure in stack events becomes one line that says what to try."""

from __future__ import annotations

from eks_inference.ops.capacity_errors import capacity_advice

# eksctl-io/eksctl#4732: the event a managed node group's stack recorded when EC2 had no p2.xlarge in one zone
ON_DEMAND_REASON = (
    "Nodegroup mng-2 failed to stabilize: [{Code: AsgInstanceLaunchFailures,Message: Could not launch On-Demand "
    "Instances. InsufficientInstanceCapacity - We currently do not have sufficient p2.xlarge capacity in the "
    "Availability Zone you requested (us-west-2b). Our system will be working on provisioning additional capacity. "
    "You can currently get p2.xlarge capacity by not specifying an Availability Zone in your request or choosing "
    "us-west-2a, us-west-2c. Launching EC2 instance failed.,ResourceIds: "
    "[eks-mng-2-82bf5c07-70d3-9015-d7e4-4ce657bd6b3d]}, {Code: NodeCreationFailure,Message: Instances failed to join "
    "the kubernetes cluster,ResourceIds: [DUMMY_036364eb-6e0e-465a-bf91-7c1f8ee2f891]}]")


def _event(reason: str, status: str = "CREATE_FAILED", logical: str = "InferentiaNodegroup") -> dict[str, str]:
    """The fields of a DescribeStackEvents entry the function reads (CloudFormation API reference, StackEvent)."""
    return {"StackName": "EksInference-dev-Cluster", "LogicalResourceId": logical,
            "ResourceType": "AWS::EKS::Nodegroup", "ResourceStatus": status, "ResourceStatusReason": reason}


def test_an_on_demand_capacity_error_names_the_type_the_zone_and_what_to_try() -> None:
    line = capacity_advice([_event("Resource creation Initiated", "CREATE_IN_PROGRESS"), _event(ON_DEMAND_REASON)])
    assert line is not None and "\n" not in line
    assert line.startswith("node group mng-2: no p2.xlarge capacity in us-west-2b now (EC2 "
                           "InsufficientInstanceCapacity); try availability_zones without us-west-2b (EC2 offers "
                           "us-west-2a, us-west-2c now)")
    assert "another size beside p2.xlarge in instance_types" in line and "capacity_reservation_id" in line


def test_the_hash_the_stack_appends_to_a_group_name_is_left_out() -> None:
    reason = ON_DEMAND_REASON.replace("Nodegroup mng-2 failed", "Nodegroup inferentia-1a2b3c4d failed")
    line = capacity_advice([_event(reason)])
    assert line is not None and line.startswith("node group inferentia: ")


def test_no_spot_capacity_says_to_widen_the_pools_or_go_on_demand() -> None:
    reason = ("Nodegroup graviton-0a1b2c3d failed to stabilize: [{Code: AsgInstanceLaunchFailures,Message: Could not "
              "launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that matches "
              "your request. Launching EC2 instance failed.,ResourceIds: [eks-graviton-0a1b2c3d-...]}]")
    line = capacity_advice([_event(reason)])
    assert line is not None and line.startswith("node group graviton: no Spot capacity for its instance types")
    assert "capacity_type ON_DEMAND" in line


def test_other_failures_are_not_mistaken_for_capacity() -> None:
    quota = ("Nodegroup x failed to stabilize: [{Code: AsgInstanceLaunchFailures,Message: You've reached your quota "
             "for maximum Fleet Requests for this account. Launching EC2 instance failed.}]")
    assert capacity_advice([_event(quota), _event(ON_DEMAND_REASON, "CREATE_IN_PROGRESS")]) is None
