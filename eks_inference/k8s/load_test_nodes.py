"""The load-test clients' node group: what a run's pods ask for, and how many nodes hold a whole run at once.

Apart from the chart (:mod:`eks_inference.k8s.load_test_chart`) and free of cdk8s, so that the stacks, the docs and
``eks-inference preflight`` (which checks the group's quota and zones) size the group the same way without starting
jsii.
"""

from __future__ import annotations

from eks_inference.config import ConfigError, LoadTestSpec, NodeGroupSpec, Processor
from eks_inference.k8s.capacity import PodRequest, allocatable, fit, instance_shape
from eks_inference.k8s.pod import Resources

LOADTEST_NODES = "loadtest"
"""Value of the ``eks-inference/processor`` label on the load-test node group's nodes, which the Jobs' pods select."""
LOADTEST_TAINT_KEY = "eks-inference/loadtest"
"""NoSchedule taint of the load-test nodes: only pods that tolerate it (the load-test Jobs') land there, so nothing
else shares their CPUs during a run and nothing else keeps those nodes up after it."""
CLIENT_RESOURCES = Resources(cpu="1", memory="1Gi")
"""Guaranteed QoS: a throttled client falls behind its schedule, and the report would blame the target."""
REPORT_RESOURCES = Resources(cpu="250m", cpu_limit="1", memory="1Gi")
"""The report pod mostly waits for client files; it needs a core only for the final merge and plots."""
LOAD_TEST_GROUP = "loadtest-clients"
"""The load-test node group's name (and, PascalCased, its construct id: never rename it)."""
LOAD_TEST_DISK_GIB = 30
"""The load-test image carries no torch and no model: a small root volume holds it."""


def load_test_pods(spec: LoadTestSpec, targets: int) -> list[PodRequest]:
    """Every pod a run starts at once: ``clients`` per target and the report."""
    clients = [PodRequest.of(f"load-test client {i}", CLIENT_RESOURCES) for i in range(spec.clients * targets)]
    return [*clients, PodRequest.of("load-test report", REPORT_RESOURCES)]


def load_test_nodes(spec: LoadTestSpec, targets: int) -> int:
    """The fewest nodes of ``spec.client_instance_type`` that hold a whole run at once, counted as
    :func:`fit` places pods (every node's DaemonSet pods first)."""
    pods = load_test_pods(spec, targets)
    alloc = allocatable(instance_shape(spec.client_instance_type))
    for n in range(1, len(pods) + 1):
        if not fit(pods, nodes=n, node_alloc=alloc):
            return n
    raise ConfigError(f"loadtest.client_instance_type: {spec.client_instance_type!r} cannot hold one load-test client "
                      f"({CLIENT_RESOURCES.cpu} vCPU, {CLIENT_RESOURCES.memory}) next to its node's DaemonSets; "
                      "use a larger type, e.g. 'c7i.xlarge'")


def load_test_node_group(spec: LoadTestSpec, targets: int) -> NodeGroupSpec:
    """The load-test clients' node group: zero nodes between runs; at most as many as a whole run needs at once
    (the Cluster Autoscaler adds them when the Jobs' pods wait, and removes them once the pods have finished).
    A CPU group (its AMI and families), labelled and tainted ``loadtest`` where it is built."""
    return NodeGroupSpec(name=LOAD_TEST_GROUP, processor=Processor.CPU, instance_types=(spec.client_instance_type,),
                         min_size=0, max_size=load_test_nodes(spec, max(1, targets)), desired_size=0,
                         disk_size_gib=LOAD_TEST_DISK_GIB)
