"""Will the pods that land on the system nodes be scheduled? Read from the synthesized templates (Helm values,
RayService heads as KubeRay builds them, autoscaler sidecar included, Jobs, the node group's instance type and
sizes) and placed the way kube-scheduler places them (eks_inference/k8s/capacity.py ``fit``: NodeResourcesFit and
LeastAllocated, kubernetes pkg/scheduler/framework/plugins/noderesources/; allocatable per the EKS AL2023 AMI's
nodeadm)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eks_inference.config import ConfigError, NodeGroupSpec
from eks_inference.k8s.capacity import (
    COREDNS,
    PodRequest,
    allocatable,
    check_system_group,
    cpu_millicores,
    fit,
    instance_shape,
    memory_mebibytes,
)
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.cfn import HELM_TYPE, resolve
from tests.system.nodegroup_update import initial_size
from tests.system.synthesized import objects

SYSTEM = {"eks-inference/processor": "system"}


def requests_of(name: str, resources: dict[str, Any]) -> PodRequest:
    req = resources.get("requests", {})
    return PodRequest(name, cpu_millicores(str(req.get("cpu", "0"))), memory_mebibytes(str(req.get("memory", "0"))))


def helm_system_pods(asm: Assembly) -> list[PodRequest]:
    pods: list[PodRequest] = []
    for res in asm.template("-Cluster")["Resources"].values():
        if res["Type"] != HELM_TYPE:
            continue
        chart, values = res["Properties"]["Chart"], json.loads(resolve(res["Properties"].get("Values")) or "{}")
        if values.get("nodeSelector") == SYSTEM:  # the AWS Load Balancer Controller runs replicaCount pods
            pods.extend(requests_of(chart, values["resources"]) for _ in range(values.get("replicaCount", 1)))
        scheduler = values.get("scheduler", {})
        if scheduler.get("enabled") and scheduler.get("nodeSelector") == SYSTEM:
            pods.append(requests_of(f"{chart} scheduler extension", scheduler["resources"]))
            custom = scheduler["customScheduler"]
            assert custom["nodeSelector"] == SYSTEM
            pods.append(requests_of(f"{chart} kube-scheduler", custom["resources"]))
    return pods


def workload_system_pods(asm: Assembly) -> list[PodRequest]:
    pods = []
    for rs in objects(asm, "RayService"):
        head = kuberay.build_pods(rs)[0]
        assert head["head"]
        if head["spec"]["nodeSelector"] == SYSTEM:
            parts = [requests_of(c["name"], c["resources"]) for c in head["spec"]["containers"]]
            pods.append(PodRequest(f"head of {rs['metadata']['name']}", sum(p.cpu_m for p in parts),
                                   sum(p.memory_mib for p in parts)))
    for job in objects(asm, "Job"):
        if job["metadata"]["labels"].get("eks-inference/role") == "compile":
            continue  # compile Jobs run on their processor's nodes, like the workers they compile for
        spec = job["spec"]["template"]["spec"]
        if spec["nodeSelector"] != SYSTEM:
            continue  # load-test Jobs run on nodes of their own (tests/system/test_load_test_nodes.py)
        for _ in range(job["spec"]["parallelism"]):
            pods.append(requests_of(job["metadata"]["name"], spec["containers"][0]["resources"]))
    return pods


def system_group(asm: Assembly) -> tuple[list[str], int, int]:
    t = asm.template("-Cluster")
    (ng,) = [r["Properties"] for r in t["Resources"].values()
             if r["Type"] == "AWS::EKS::Nodegroup" and r["Properties"]["Labels"] == SYSTEM]
    return ng["InstanceTypes"], initial_size(t, ng), ng["ScalingConfig"]["MaxSize"]


@pytest.mark.parametrize("which", ["dev", "prod", "dev with a load-test run"])
def test_every_system_pod_is_scheduled(which: str, assemblies: dict[str, Assembly],
                                       redeploy: dict[str, Assembly]) -> None:
    asm = redeploy["before"] if which.startswith("dev with") else assemblies[which]
    types, desired, _ = system_group(asm)
    alloc = min(allocatable(instance_shape(t)) for t in types)
    pods = [*helm_system_pods(asm), *COREDNS, *workload_system_pods(asm)]
    # kuberay, metrics-server, the Neuron extension and its scheduler, the Cluster Autoscaler, two Load Balancer
    # Controllers (the front door)
    assert len(helm_system_pods(asm)) == 7
    assert fit(pods, nodes=desired, node_alloc=alloc) == []
    if which.startswith("dev with"):
        assert objects(asm, "Job") and not any(p.name.startswith("loadtest-") for p in pods)
        assert types == ["m7i.large"] and desired == 2  # the system group as shipped: a run needs only run_id


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_an_upgrade_of_every_ray_service_fits_the_system_group_at_max_size(env_name: str,
                                                                          assemblies: dict[str, Assembly]) -> None:
    """A NewCluster upgrade (an image change) starts a second head for every RayService of the processor while
    the old ones serve; the Cluster Autoscaler may add system nodes for it, up to max_size."""
    asm = assemblies[env_name]
    types, _, max_size = system_group(asm)
    alloc = min(allocatable(instance_shape(t)) for t in types)
    heads = [p for p in workload_system_pods(asm) if p.name.startswith("head of ")]
    assert heads  # the x86 system nodes hold the Inferentia heads
    assert any(c["name"] == "autoscaler" for c in kuberay.build_pods(objects(asm, "RayService")[0])[0]["spec"][
        "containers"])
    pods = [*helm_system_pods(asm), *COREDNS, *heads, *heads]
    assert fit(pods, nodes=max_size, node_alloc=alloc) == []


def test_allocatable_follows_nodeadm() -> None:
    """awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go: 6 % + 1 % + 0.5 % x 2 + 0.25 % per core over 4."""
    assert allocatable(instance_shape("m7i.large"))[0] == 2000 - 70
    assert allocatable(instance_shape("m7i.4xlarge"))[0] == 16000 - (60 + 10 + 10 + 30)
    assert instance_shape("t3.medium").vcpus == 2 and instance_shape("m7g.medium").vcpus == 1


def test_system_pods_that_do_not_fit_are_refused_with_the_fix(assemblies: dict[str, Assembly]) -> None:
    """dev's operators and x86 Ray heads on one m7i.large: the synth-time check names the node count that fits."""
    asm = assemblies["dev"]
    base = [*helm_system_pods(asm), *COREDNS, *workload_system_pods(asm)]
    small = NodeGroupSpec(name="system", processor=None, instance_types=("m7i.large",), min_size=1, max_size=3,
                          desired_size=1)
    assert fit(base, nodes=1, node_alloc=allocatable(instance_shape("m7i.large")))
    with pytest.raises(ConfigError, match=r"^system pods \(operators and Ray heads\): \d+ pod\(s\) .* do not fit on "
                                          r"node group 'system' \(1 x m7i.large, .*; raise its desired_size to 2 \(or "
                                          r"use larger instance types\), or move work off the system nodes$"):
        check_system_group(small, base=base, extra=[], extra_what="system pods (operators and Ray heads)",
                           extra_fix="move work off the system nodes")
