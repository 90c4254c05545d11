"""Is a target priced for the pods it really runs? The placement the report prices (eks_inference/costs.py
``target_placement``, from config alone) against the pods KubeRay builds from the synthesized RayServices
(tests/system/kuberay.py, reproduced from ray-project/kuberay v1.7.0 ray-operator/controllers/ray/common/pod.go:
the head's Ray container plus the autoscaler sidecar it appends, one pod per worker group) and the node groups they
select, and against what the load-test clients tell the report (``--placement``)."""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.config import Processor, load_environment
from eks_inference.costs import CostRole, target_placement
from eks_inference.k8s.capacity import cpu_millicores, memory_mebibytes
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.synthesized import objects
from tests.system.test_node_autoscaling import node_groups


def requests(container: dict[str, Any]) -> tuple[int, int]:
    req = container["resources"]["requests"]
    return cpu_millicores(str(req["cpu"])), memory_mebibytes(str(req["memory"]))


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_pod_the_report_prices_is_a_pod_kuberay_builds_where_it_runs(env_name: str,
                                                                          assemblies: dict[str, Assembly]) -> None:
    config = load_environment(env_name)
    asm = assemblies[env_name]
    groups = node_groups(asm)
    for rs in objects(asm, "RayService"):
        model = next(m for m in config.models if rs["metadata"]["name"].startswith(f"{m.name}-"))
        processor = Processor(rs["metadata"]["labels"]["eks-inference/processor"])
        placement = target_placement(config, model, processor)
        by_role = {p.role: p for p in placement.pods}
        head, worker = kuberay.build_pods(rs)[:2]
        built = {c["name"]: c for c in head["spec"]["containers"]}
        assert set(built) == {"ray", "autoscaler"}
        for role, container in ((CostRole.HEAD, built["ray"]), (CostRole.SIDECARS, built["autoscaler"]),
                                (CostRole.WORKERS, worker["spec"]["containers"][0])):
            priced = by_role[role]
            assert (priced.cpu_m, priced.memory_mib) == requests(container), (rs["metadata"]["name"], role)
        for role, pod in ((CostRole.HEAD, head), (CostRole.WORKERS, worker)):
            group = pod["spec"]["nodeSelector"]["eks-inference/processor"]
            # priced as the group's first type, the one On-Demand capacity launches
            assert by_role[role].instance_type == groups[group]["InstanceTypes"][0], (rs["metadata"]["name"], role)
        assert by_role[CostRole.WORKERS].count == rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["minReplicas"]


def test_the_clients_tell_the_report_what_their_target_occupies(redeploy: dict[str, Assembly]) -> None:
    asm = redeploy["before"]
    dev = load_environment("dev")
    jobs = [j for j in objects(asm, "Job") if j["metadata"]["labels"].get("eks-inference/role") == "loadtest"
            and j["metadata"]["labels"]["eks-inference/target"] != "report"]
    assert len(jobs) == 2
    for job in jobs:
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        target = job["metadata"]["labels"]["eks-inference/target"]
        processor = Processor(target.rsplit("-", 1)[1])
        assert args[args.index("--placement") + 1] == target_placement(dev, dev.models[0], processor).to_arg()
