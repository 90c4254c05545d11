"""Would the Cluster Autoscaler add a node for a pending Ray pod, in the right group, even from zero nodes?

Reproduced from kubernetes/autoscaler at tag cluster-autoscaler-1.36.1, cluster-autoscaler/cloudprovider/aws/:

* ``aws_manager.go`` ``buildNodeFromTemplate``: capacity from the instance type (``pods`` 110, ``cpu`` = vCPUs,
  ``memory`` = MiB × 2^20, ``nvidia.com/gpu`` = GPUs), overridden by ASG tags
  ``k8s.io/cluster-autoscaler/node-template/resources/<name>``; allocatable = capacity; generic labels (arch, os,
  instance type, region, zone, hostname), labels from ASG tags ``.../node-template/label/<key>`` and from every
  ``eks:`` tag with the prefix cut (``extractLabelsFromAsg``), taints from ``.../node-template/taint/<key>``. When
  the labels ``nodegroup-name`` and ``cluster-name`` are present (EKS's own ``eks:nodegroup-name`` and
  ``eks:cluster-name`` ASG tags), the managed node group is described (``eks:DescribeNodegroup``): its labels are
  joined in (the API's value wins), its taints appended, and its tags' ``.../node-template/resources/`` override
  the capacity.
* ``aws_wrapper.go`` ``getManagedNodegroupInfo``: the DescribeNodegroup labels add ``diskSize``, ``amiType``,
  ``eks.amazonaws.com/capacityType``, ``k8sVersion`` and ``eks.amazonaws.com/nodegroup``; a taint is taken only if
  its key and value are set, its effect translated (``NO_SCHEDULE`` → ``NoSchedule``).
* ``auto_scaling_groups.go`` / ``aws_wrapper.go`` ``getInstanceTypesForAsgs``: a group of several instance types
  (a mixed instances policy) is templated from the first one.
* ``ec2_instance_types.go`` (the static list, dated 2026-01-22): the figures in :data:`CA_INSTANCE_TYPES`.

The node group's properties come from the synthesized template, and its Auto Scaling group's tags are the ones EKS
adds (``eks:cluster-name``, ``eks:nodegroup-name`` and the two discovery tags); nothing else reaches the ASG.
Then a pod fits a template node the way the autoscaler's scheduler simulation decides it: node selector,
taints and tolerations, and requests against allocatable less the DaemonSet pods every node runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.k8s.capacity import PER_NODE, cpu_millicores, memory_mebibytes
from eks_inference.k8s.ray_service import NOT_EVICTABLE
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.cfn import resolve
from tests.system.nodegroup_update import initial_size
from tests.system.synthesized import objects

CLUSTER = "eks-inference-dev"
RESOURCES_TAG = "k8s.io/cluster-autoscaler/node-template/resources/"
CA_INSTANCE_TYPES: dict[str, tuple[int, int, int, str]] = {
    # name: (VCPU, MemoryMb, GPU, Architecture), from ec2_instance_types.go at cluster-autoscaler-1.36.1
    "m7i.large": (2, 8192, 0, "amd64"), "m7i.xlarge": (4, 16384, 0, "amd64"),
    "c7g.2xlarge": (8, 16384, 0, "arm64"), "c7g.4xlarge": (16, 32768, 0, "arm64"),
    "inf2.xlarge": (4, 16384, 0, "amd64"), "inf2.8xlarge": (32, 131072, 0, "amd64"),
    "g5.xlarge": (4, 16384, 1, "amd64"), "g6.xlarge": (4, 16384, 1, "amd64"),
    "c7i.xlarge": (4, 8192, 0, "amd64"), "c7i.2xlarge": (8, 16384, 0, "amd64"), "c7i.4xlarge": (16, 32768, 0, "amd64"),
}
EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
NEURON_DEVICE_PLUGIN = ("neuron-device-plugin", 0, 0)
"""The Neuron device plugin DaemonSet tolerates the Neuron taint; it requests nothing the check would notice."""


def quantity(q: Any) -> int:
    return kuberay.quantity_value(q)


def asg_tags(nodegroup_name: str) -> dict[str, str]:
    """The tags EKS puts on a managed node group's Auto Scaling group; the node group's own tags stay behind."""
    return {"eks:cluster-name": CLUSTER, "eks:nodegroup-name": nodegroup_name,
            "k8s.io/cluster-autoscaler/enabled": "true", f"k8s.io/cluster-autoscaler/{CLUSTER}": "owned"}


def describe_nodegroup(props: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, str]], dict[str, str]]:
    """(labels, taints, tags) as getManagedNodegroupInfo turns the DescribeNodegroup answer into them."""
    labels = {"amiType": props["AmiType"], "eks.amazonaws.com/capacityType": props.get("CapacityType", "ON_DEMAND"),
              "k8sVersion": "1.36", "eks.amazonaws.com/nodegroup": props["NodegroupName"], **props.get("Labels", {})}
    taints = [{"key": t["Key"], "value": t["Value"], "effect": EFFECTS[t["Effect"]]}
              for t in props.get("Taints", []) if t.get("Key") and t.get("Value")]
    return labels, taints, dict(props.get("Tags", {}))


def template_node(props: dict[str, Any], *, with_mng_tags: bool = True) -> dict[str, Any]:
    """buildNodeFromTemplate for a managed node group with no node yet."""
    itype = props["InstanceTypes"][0]
    vcpu, mem_mb, gpu, arch = CA_INSTANCE_TYPES[itype]
    capacity: dict[str, int] = {"pods": 110, "cpu": vcpu * 1000, "memory": mem_mb << 20, "nvidia.com/gpu": gpu}
    tags = asg_tags(props["NodegroupName"])
    for k, v in tags.items():
        if k.startswith(RESOURCES_TAG):
            capacity[k[len(RESOURCES_TAG):]] = quantity(v)
    labels = {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": itype,
              "topology.kubernetes.io/region": "us-west-2", "topology.kubernetes.io/zone": "us-west-2a",
              "kubernetes.io/hostname": "template"}
    labels |= {k.split("eks:", 1)[1]: v for k, v in tags.items() if k.startswith("eks:")}
    taints: list[dict[str, str]] = []
    if labels.get("nodegroup-name") and labels.get("cluster-name"):
        mng_labels, mng_taints, mng_tags = describe_nodegroup(props)
        labels |= mng_labels
        taints += mng_taints
        if with_mng_tags:
            for k, v in mng_tags.items():
                if k.startswith(RESOURCES_TAG):
                    capacity[k[len(RESOURCES_TAG):]] = quantity(v)
    return {"name": props["NodegroupName"], "labels": labels, "taints": taints, "allocatable": capacity}


def tolerates(pod: dict[str, Any], taint: dict[str, str]) -> bool:
    for t in pod.get("tolerations", []):
        if t.get("effect") not in (None, "", taint["effect"]):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint["value"]:
            return True
    return False


def pod_requests(pod: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in pod["containers"]:
        for name, q in c.get("resources", {}).get("requests", {}).items():
            value = cpu_millicores(str(q)) if name == "cpu" else (
                memory_mebibytes(str(q)) << 20 if name == "memory" else quantity(q))
            out[name] = out.get(name, 0) + value
    return out


def fits(pod: dict[str, Any], node: dict[str, Any]) -> tuple[bool, str]:
    for k, v in pod.get("nodeSelector", {}).items():
        if node["labels"].get(k) != v:
            return False, f"node selector {k}={v}"
    for taint in node["taints"]:
        if taint["effect"] in ("NoSchedule", "NoExecute") and not tolerates(pod, taint):
            return False, f"taint {taint['key']}"
    free = dict(node["allocatable"])
    daemons = [*PER_NODE]
    free["cpu"] -= sum(d.cpu_m for d in daemons)
    free["memory"] -= sum(d.memory_mib for d in daemons) << 20
    free["pods"] -= len(daemons) + (1 if any(t["key"] == "aws.amazon.com/neuron" for t in node["taints"]) else 0)
    for name, amount in pod_requests(pod).items():
        if free.get(name, 0) < amount:
            return False, f"{name}: {amount} asked, {free.get(name, 0)} free"
    return True, ""


def node_groups(asm: Assembly) -> dict[str, dict[str, Any]]:
    t = asm.template("-Cluster")
    return {r["Properties"]["Labels"]["eks-inference/processor"]: resolve(r["Properties"])
            for r in t["Resources"].values() if r["Type"] == "AWS::EKS::Nodegroup"}


def ray_pods(asm: Assembly) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for rs in objects(asm, "RayService"):
        for pod in kuberay.build_pods(rs):
            out.append((f"{rs['metadata']['name']}/{pod['group']}", pod))
    return out


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_each_ray_pod_fits_the_template_of_its_group_and_no_other(env_name: str,
                                                                   assemblies: dict[str, Assembly]) -> None:
    """For every head and worker pod, exactly one node group's template node takes it: the one whose nodes its
    node selector names. So a pending pod always has a group to scale, and never the wrong one."""
    groups = node_groups(assemblies[env_name])
    templates = {name: template_node(props) for name, props in groups.items()}
    pods = ray_pods(assemblies[env_name])
    assert pods
    for where, pod in pods:
        spec = pod["spec"]
        taking = [name for name, node in templates.items() if fits(spec, node)[0]]
        assert taking == [spec["nodeSelector"]["eks-inference/processor"]], (
            where, {n: fits(spec, node)[1] for n, node in templates.items()})


def test_an_inferentia_worker_scales_its_group_up_from_zero(assemblies: dict[str, Assembly]) -> None:
    """dev's inferentia group starts at zero nodes, so the autoscaler knows it only from its template; the
    node-template resource tags on the node group are what give that template NeuronCores."""
    props = node_groups(assemblies["dev"])["inferentia"]
    t = assemblies["dev"].template("-Cluster")
    (raw,) = [r["Properties"] for r in t["Resources"].values()
              if r["Type"] == "AWS::EKS::Nodegroup" and r["Properties"]["NodegroupName"] == props["NodegroupName"]]
    assert props["ScalingConfig"]["MinSize"] == 0 == initial_size(t, raw)
    (worker,) = [pod for where, pod in ray_pods(assemblies["dev"]) if where == "minilm-inferentia/inferentia"]
    node = template_node(props)
    assert node["allocatable"]["aws.amazon.com/neuroncore"] == 2
    assert fits(worker["spec"], node) == (True, "")
    without = template_node(props, with_mng_tags=False)
    assert fits(worker["spec"], without) == (False, "aws.amazon.com/neuroncore: 1 asked, 0 free")


def test_the_template_knows_the_groups_taint_from_the_node_group_itself(assemblies: dict[str, Assembly]) -> None:
    """Labels and taints reach the template only through DescribeNodegroup: set on the node group (not in launch
    template user data), with a value. A pod that does not tolerate the Neuron taint is not placed there."""
    props = node_groups(assemblies["dev"])["inferentia"]
    node = template_node(props)
    assert {"key": "aws.amazon.com/neuron", "value": "true", "effect": "NoSchedule"} in node["taints"]
    assert node["labels"]["eks-inference/processor"] == "inferentia"
    plain = {"nodeSelector": {"eks-inference/processor": "inferentia"},
             "containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}
    assert fits(plain, node) == (False, "taint aws.amazon.com/neuron")


def test_ray_pods_are_never_drained_to_consolidate(assemblies: dict[str, Assembly]) -> None:
    """The autoscaler's scale-down skips nodes with pods annotated safe-to-evict=false (cluster-autoscaler/FAQ.md,
    "What types of pods can prevent CA from removing a node?"); Ray removes its own pods, then the empty node goes."""
    for rs in objects(assemblies["dev"], "RayService"):
        for pod in kuberay.build_pods(rs):
            assert pod_annotations(rs, pod["group"]) == NOT_EVICTABLE


def pod_annotations(rs: dict[str, Any], group: str) -> dict[str, str]:
    cluster = rs["spec"]["rayClusterConfig"]
    spec = cluster["headGroupSpec"] if group == "headgroup" else next(
        w for w in cluster["workerGroupSpecs"] if w["groupName"] == group)
    return dict(spec["template"]["metadata"].get("annotations", {}))
