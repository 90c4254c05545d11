"""Load-test clients on nodes of their own: would the Cluster Autoscaler bring the load-test group up from zero for a
run's pods, put nothing else there, and take the nodes away after?

Read from dev synthesized with a run and nothing else changed (``tests.conftest.with_load_test_run``): the Jobs as
the kubectl handler applies them, the node groups as CloudFormation creates them. The autoscaler's template node for
a group with no node is the one ``tests/system/test_node_autoscaling.py`` reproduces from kubernetes/autoscaler
(cluster-autoscaler-1.36.1, cloudprovider/aws/aws_manager.go ``buildNodeFromTemplate``): its labels and taints come
from the managed node group itself (``eks:DescribeNodegroup``, aws_wrapper.go ``getManagedNodegroupInfo``), so the
group needs no ``k8s.io/cluster-autoscaler/node-template/label/...`` or ``.../taint/...`` tags on an Auto Scaling
group that EKS would not copy them to anyway.

After a run: the autoscaler lists only pods whose phase is neither Succeeded nor Failed
(cluster-autoscaler/utils/kubernetes/listers.go, the scheduled and unschedulable pod listers' field selector), so
the finished Jobs' pods, which are kept, hold nothing; the empty nodes are unneeded and go after
``scale-down-unneeded-time``.
"""

from __future__ import annotations

from typing import Any

from eks_inference.config import LoadTestSpec, load_environment
from eks_inference.constructs.cluster_autoscaler import SCALE_DOWN_UNNEEDED
from eks_inference.k8s.capacity import PodRequest, allocatable, cpu_millicores, fit, instance_shape, memory_mebibytes
from eks_inference.k8s.load_test_nodes import LOAD_TEST_GROUP, load_test_node_group
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.nodegroup_update import initial_size
from tests.system.synthesized import objects
from tests.system.test_node_autoscaling import fits, node_groups, template_node

LOADTEST = "loadtest"


def load_test_pods(asm: Assembly) -> list[tuple[str, dict[str, Any]]]:
    """(Job, pod spec) for every pod the run's Jobs start at once."""
    out = []
    for job in objects(asm, "Job"):
        if job["metadata"]["labels"].get("eks-inference/role") != "loadtest":
            continue
        for _ in range(job["spec"]["parallelism"]):
            out.append((job["metadata"]["name"], job["spec"]["template"]))
    return out


def test_every_load_test_pod_has_one_group_to_scale_up_from_zero(redeploy: dict[str, Assembly]) -> None:
    """Each client and the report fits the load-test group's template node and no other group's; the group starts
    at zero nodes, so the pods' wait is what brings it up."""
    asm = redeploy["before"]
    groups = node_groups(asm)
    props = groups[LOADTEST]
    raw_template = asm.template("-Cluster")
    (raw,) = [r["Properties"] for r in raw_template["Resources"].values() if r["Type"] == "AWS::EKS::Nodegroup"
              and r["Properties"]["Labels"] == {"eks-inference/processor": LOADTEST}]
    assert props["ScalingConfig"]["MinSize"] == 0 == initial_size(raw_template, raw)
    templates = {name: template_node(p) for name, p in groups.items()}
    pods = load_test_pods(asm)
    assert len(pods) == 2 * 2 + 1  # two clients for each of dev's two targets, and the report
    for job, pod in pods:
        taking = [name for name, node in templates.items() if fits(pod["spec"], node)[0]]
        assert taking == [LOADTEST], (job, {n: fits(pod["spec"], node)[1] for n, node in templates.items()})


def test_a_whole_run_fits_the_group_at_its_max_size_and_not_one_node_less(redeploy: dict[str, Assembly]) -> None:
    """max_size comes from loadtest.clients, the targets and the client pods' requests: every pod of a run is placed
    at once (kube-scheduler's NodeResourcesFit and LeastAllocated, eks_inference/k8s/capacity.py ``fit``)."""
    asm = redeploy["before"]
    props = node_groups(asm)[LOADTEST]
    (itype,) = props["InstanceTypes"]
    max_size = props["ScalingConfig"]["MaxSize"]
    pods = []
    for job, pod in load_test_pods(asm):
        req = pod["spec"]["containers"][0]["resources"]["requests"]
        pods.append(PodRequest(job, cpu_millicores(str(req["cpu"])), memory_mebibytes(str(req["memory"]))))
    alloc = allocatable(instance_shape(itype))
    assert (itype, max_size) == ("c7i.xlarge", 2)
    assert fit(pods, nodes=max_size, node_alloc=alloc) == []
    assert fit(pods, nodes=max_size - 1, node_alloc=alloc)
    assert props["NodegroupName"].startswith(f"{LOAD_TEST_GROUP}-")


def test_nothing_else_lands_on_the_load_test_nodes(redeploy: dict[str, Assembly]) -> None:
    """The group's taint keeps off every Ray head and worker and every compile Job, whatever their node selector:
    during a run only the clients use those CPUs, and after it nothing keeps the nodes up."""
    asm = redeploy["before"]
    node = template_node(node_groups(asm)[LOADTEST])
    assert {"key": "eks-inference/loadtest", "value": "true", "effect": "NoSchedule"} in node["taints"]
    others = [pod["spec"] for rs in objects(asm, "RayService") for pod in kuberay.build_pods(rs)]
    others += [job["spec"]["template"]["spec"] for job in objects(asm, "Job")
               if job["metadata"]["labels"].get("eks-inference/role") == "compile"]
    assert others
    for spec in others:
        anywhere = {**spec, "nodeSelector": {"eks-inference/processor": LOADTEST}}
        assert fits(anywhere, node)[0] is False


def test_a_running_client_is_never_evicted_and_finished_ones_let_the_nodes_go(redeploy: dict[str, Assembly]) -> None:
    """Scale-down skips nodes whose pods say safe-to-evict=false (cluster-autoscaler/FAQ.md, "What types of pods
    can prevent CA from removing a node?"): a client moved mid-run would send its schedule twice. Finished pods are
    not listed at all (see the module docstring), so the nodes go once they have been unneeded for
    scale-down-unneeded-time."""
    asm = redeploy["before"]
    for job, pod in load_test_pods(asm):
        assert pod["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false", job
        assert pod["spec"]["restartPolicy"] == "Never"
    assert SCALE_DOWN_UNNEEDED == "10m"


def test_the_group_is_sized_from_loadtest_clients() -> None:
    """Hand count on c7i.xlarge: 3.92 vCPU allocatable (nodeadm), 0.2 taken by DaemonSets, 3 one-vCPU clients a
    node; the report (0.25 vCPU) fits beside them."""
    dev = load_environment("dev")
    assert load_test_node_group(dev.loadtest, 2).max_size == 2  # 4 clients + report: 2 + 2, report beside
    assert load_test_node_group(LoadTestSpec(clients=5), 2).max_size == 4  # 10 clients: 3 + 3 + 2 + 2 (+ report)
    assert load_test_node_group(LoadTestSpec(clients=1), 1).max_size == 1
