"""The node-count function (eks_inference/constructs/node_count_handler.py, inlined into the Cluster template): the
count it gives each node group, the EKS and Auto Scaling calls it makes (checked by botocore's Stubber against the
services' own request and response shapes), and its answer to CloudFormation over a real HTTP PUT."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st

from eks_inference.constructs import node_count_handler as fn

CLUSTER, GROUP, ASG = "eks-inference-dev", "inferentia-1a2b3c4d", "eks-inferentia-1a2b3c4d-9ec4d1a2"


@given(current=st.none() | st.integers(0, 50), lo=st.integers(0, 20), span=st.integers(0, 20),
       initial=st.integers(0, 50))
def test_the_count_is_the_running_one_moved_into_the_bounds_only_where_it_lies_outside(
        current: int | None, lo: int, span: int, initial: int) -> None:
    """GIVEN any running count (or none: a new group) and bounds WHEN sized THEN the count is within the bounds
    (EKS refuses any other), equals the running count whenever that already fits, and a new group starts at its
    initial size when that fits."""
    hi = lo + span
    size = fn.size_for(current, lo, hi, initial)
    assert lo <= size <= hi
    start = initial if current is None else current
    if lo <= start <= hi:
        assert size == start
    else:
        assert size == (lo if start < lo else hi)


def clients() -> tuple[Any, Any, Stubber, Stubber]:
    eks = boto3.client("eks", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    autoscaling = boto3.client("autoscaling", region_name="us-west-2", aws_access_key_id="x",
                               aws_secret_access_key="x")
    return eks, autoscaling, Stubber(eks), Stubber(autoscaling)


def nodegroup(desired: int) -> dict[str, Any]:
    return {"nodegroup": {"nodegroupName": GROUP, "clusterName": CLUSTER,
                          "scalingConfig": {"minSize": 0, "maxSize": 6, "desiredSize": desired},
                          "resources": {"autoScalingGroups": [{"name": ASG}]}}}


def asg(desired: int) -> dict[str, Any]:
    return {"AutoScalingGroups": [{"AutoScalingGroupName": ASG, "MinSize": 0, "MaxSize": 6,
                                   "DesiredCapacity": desired, "DefaultCooldown": 300, "AvailabilityZones": [],
                                   "HealthCheckType": "EC2", "CreatedTime": "2026-01-01T00:00:00Z"}]}


def test_the_running_count_is_the_auto_scaling_groups_which_eks_copies_late() -> None:
    """GIVEN a group the Cluster Autoscaler just grew to 2 (its Auto Scaling group says 2, EKS's copy still 0)
    WHEN read THEN the count is 2: EKS's copy "can be out-of-date for short periods" (EKS API reference,
    NodegroupScalingConfig), and sending it would remove the node the autoscaler just added."""
    eks, autoscaling, s_eks, s_asg = clients()
    s_eks.add_response("describe_nodegroup", nodegroup(0), {"clusterName": CLUSTER, "nodegroupName": GROUP})
    s_asg.add_response("describe_auto_scaling_groups", asg(2), {"AutoScalingGroupNames": [ASG]})
    with s_eks, s_asg:
        assert fn.current_size(eks, autoscaling, CLUSTER, GROUP) == 2
    s_eks.assert_no_pending_responses()
    s_asg.assert_no_pending_responses()


def test_a_group_that_does_not_exist_yet_has_no_count() -> None:
    """GIVEN a first deploy, or a replacement under a new name WHEN read THEN EKS answers ResourceNotFound and the
    count is None, so the group starts at its initial size."""
    eks, autoscaling, s_eks, _ = clients()
    s_eks.add_client_error("describe_nodegroup", service_error_code="ResourceNotFoundException", http_status_code=404)
    with s_eks:
        assert fn.current_size(eks, autoscaling, CLUSTER, GROUP) is None


class Recorder(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_PUT(self) -> None:
        Recorder.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def response_url() -> Iterator[str]:
    """What CloudFormation's pre-signed response URL stands for: a server that records the PUT body."""
    Recorder.bodies = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response"
    server.shutdown()
    thread.join()


def event(url: str, request: str, **props: Any) -> dict[str, Any]:
    return {"RequestType": request, "ResponseURL": url, "StackId": "arn:aws:cloudformation:us-west-2:1:stack/s/1",
            "RequestId": "r-1", "LogicalResourceId": "InferentiaNodeCount",
            "ResourceProperties": {"ClusterName": CLUSTER, "NodegroupName": GROUP, "MinSize": "0", "MaxSize": "8",
                                   "InitialSize": "0", **props}}


def test_cloudformation_hears_the_count_and_the_group_keeps_its_name(response_url: str) -> None:
    """GIVEN an update that raises max_size to 8 of a group running 3 nodes WHEN the function runs THEN it PUTs
    SUCCESS with Size 3 to the response URL (CloudFormation passes the properties as strings), under the group's
    name as physical id."""
    eks, autoscaling, s_eks, s_asg = clients()
    s_eks.add_response("describe_nodegroup", nodegroup(3), {"clusterName": CLUSTER, "nodegroupName": GROUP})
    s_asg.add_response("describe_auto_scaling_groups", asg(3), {"AutoScalingGroupNames": [ASG]})
    with s_eks, s_asg:
        fn.handler(event(response_url, "Update"), None, clients=(eks, autoscaling))
    (body,) = Recorder.bodies
    assert body["Status"] == "SUCCESS" and body["Data"] == {"Size": 3, "Running": 3}
    assert body["PhysicalResourceId"] == GROUP and body["LogicalResourceId"] == "InferentiaNodeCount"


def test_a_failure_reaches_cloudformation_instead_of_an_hour_of_waiting(response_url: str) -> None:
    """GIVEN a role that may not describe the group, on every try WHEN the function runs THEN it PUTs FAILED with
    EKS's error, and the deploy stops there (CloudFormation otherwise waits an hour for an answer)."""
    eks, autoscaling, s_eks, _ = clients()
    for _ in range(8):
        s_eks.add_client_error("describe_nodegroup", service_error_code="AccessDeniedException",
                               service_message="not authorized to perform: eks:DescribeNodegroup",
                               http_status_code=403)
    with s_eks:
        fn.handler(event(response_url, "Create"), None, clients=(eks, autoscaling), pause=0)
    s_eks.assert_no_pending_responses()
    (body,) = Recorder.bodies
    assert body["Status"] == "FAILED" and "eks:DescribeNodegroup" in body["Reason"]


def test_a_policy_iam_has_not_propagated_yet_is_waited_for(response_url: str) -> None:
    """GIVEN the deploy that adds the function's policy (IAM answers AccessDenied for a few seconds after) WHEN the
    function runs THEN it tries again and answers with the count; any other error fails at once."""
    eks, autoscaling, s_eks, s_asg = clients()
    s_eks.add_client_error("describe_nodegroup", service_error_code="AccessDeniedException", http_status_code=403)
    s_eks.add_response("describe_nodegroup", nodegroup(1), {"clusterName": CLUSTER, "nodegroupName": GROUP})
    s_asg.add_response("describe_auto_scaling_groups", asg(1), {"AutoScalingGroupNames": [ASG]})
    with s_eks, s_asg:
        fn.handler(event(response_url, "Update"), None, clients=(eks, autoscaling), pause=0)
    assert [b["Status"] for b in Recorder.bodies] == ["SUCCESS"] and Recorder.bodies[0]["Data"]["Size"] == 1
    eks, autoscaling, s_eks, _ = clients()
    s_eks.add_client_error("describe_nodegroup", service_error_code="InvalidParameterException", http_status_code=400)
    with s_eks:
        fn.handler(event(response_url, "Update"), None, clients=(eks, autoscaling), pause=0)
    assert Recorder.bodies[1]["Status"] == "FAILED"


def test_delete_reads_nothing(response_url: str) -> None:
    """GIVEN the stack or the group goes away WHEN the function runs THEN it answers SUCCESS without a call."""
    fn.handler(event(response_url, "Delete", PhysicalResourceId=GROUP), None, clients=(object(), object()))
    (body,) = Recorder.bodies
    assert body["Status"] == "SUCCESS" and body["Data"] == {}
