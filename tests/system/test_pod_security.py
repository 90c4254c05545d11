"""Pod Security Admission on every pod the app deploys: each pod template, as the API server will see its pods,
against its namespace's ``pod-security.kubernetes.io/enforce`` label (evaluator: tests/system/pod_security.py, from
kubernetes staging/src/k8s.io/pod-security-admission/policy/ at 1.36; Ray pods as KubeRay v1.7.0 builds them, with
the containers it injects: tests/system/kuberay.py; dcgm-exporter's pods as NVIDIA's chart renders them).

Admission rejects a controller's pods, not the controller: a DaemonSet or Job whose pods fail would be accepted by
``kubectl apply`` and then never run, which is how the monitoring namespace's exporters stayed silently absent.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from eks_inference.config import Processor
from eks_inference.k8s.monitoring import dcgm_exporter_values, monitoring_manifests, neuron_monitor_daemonset
from tests.conftest import Assembly, cdk_context
from tests.system import kuberay
from tests.system.cfn import MANIFEST_TYPE, manifest_objects
from tests.system.pod_security import BASELINE, PRIVILEGED, RESTRICTED, enforce_level, forbidden
from tests.system.synthesized import objects
from tests.unit.k8s_support import config, render

WORKLOADS = ("Job", "DaemonSet", "Deployment", "StatefulSet", "ReplicaSet")


def all_objects(asm: Assembly) -> list[dict[str, Any]]:
    """Every object the app applies with kubectl: the Inference stack's manifests and the Cluster stack's."""
    cluster = [o for r in asm.template("-Cluster")["Resources"].values() if r["Type"] == MANIFEST_TYPE
               for o in manifest_objects(r)]
    return [*objects(asm), *cluster]


def pods_of(objs: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(what, namespace, pod metadata, pod spec) of every pod the objects lead to."""
    for o in objs:
        kind, meta = o["kind"], o["metadata"]
        if kind == "RayService":
            for pod in kuberay.build_pods(o):
                yield f"RayService {meta['name']} {pod['group']}", meta["namespace"], pod["metadata"], pod["spec"]
        elif kind in WORKLOADS:
            tpl = o["spec"]["template"]
            yield f"{kind} {meta['name']}", meta["namespace"], tpl.get("metadata", {}), tpl["spec"]
        elif kind == "CronJob":
            tpl = o["spec"]["jobTemplate"]["spec"]["template"]
            yield f"CronJob {meta['name']}", meta["namespace"], tpl.get("metadata", {}), tpl["spec"]
        elif kind == "Pod":
            yield f"Pod {meta['name']}", meta["namespace"], meta, o["spec"]


def namespace_labels(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o["metadata"].get("labels", {}) for o in objs if o["kind"] == "Namespace"}


def dcgm_exporter_pod(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod NVIDIA's dcgm-exporter chart 4.8.2 renders with ``values`` over its defaults, the fields Pod Security
    reads (NVIDIA/dcgm-exporter deployment/templates/daemonset.yaml and values.yaml at tag 4.5.3-4.8.2): the
    kubelet's pod-resources directory as a hostPath volume, ``hostPID`` and ``hostNetwork`` from values (default
    false), the container's ``securityContext`` from values (default: root, ``SYS_ADMIN`` added for profiling
    metrics, all else dropped, no privilege escalation), ``podSecurityContext`` (default none)."""
    defaults = {"hostPID": False, "hostNetwork": False, "podSecurityContext": {},
                "kubeletPath": "/var/lib/kubelet/pod-resources",
                "securityContext": {"runAsNonRoot": False, "runAsUser": 0,
                                    "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
                                    "allowPrivilegeEscalation": False}}
    v = {**defaults, **copy.deepcopy(values)}
    spec: dict[str, Any] = {
        "hostPID": v["hostPID"],
        "volumes": [{"name": "pod-gpu-resources", "hostPath": {"path": v["kubeletPath"]}}],
        "containers": [{"name": "exporter", "securityContext": v["securityContext"],
                        "ports": [{"name": "metrics", "containerPort": 9400}]}],
    }
    if v["hostNetwork"]:
        spec["hostNetwork"] = True
    if v["podSecurityContext"]:
        spec["securityContext"] = v["podSecurityContext"]
    return {"labels": v.get("podLabels", {})}, spec


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_pod_the_app_deploys_is_admitted_by_its_namespace(env_name: str, assemblies: dict[str, Assembly],
                                                                redeploy: dict[str, Assembly]) -> None:
    """GIVEN the synthesized app (dev with a load-test run) WHEN the API server admits each workload's pods THEN
    none is rejected by its namespace's enforced Pod Security level."""
    asm = redeploy["before"] if env_name == "dev" else assemblies[env_name]
    objs = all_objects(asm)
    labels = namespace_labels(objs)
    seen = set()
    for what, ns, meta, spec in pods_of(objs):
        level = enforce_level(labels.get(ns))
        assert forbidden(meta, spec, level) == [], f"{what} in {ns} (enforce {level})"
        seen.add(what.split()[0])
    assert {"RayService", "DaemonSet"} <= seen and (env_name != "dev" or "Job" in seen), seen
    assert {ns: enforce_level(labels.get(ns)) for ns in ("eks-inference", "eks-inference-loadtest", "monitoring")} == {
        "eks-inference": BASELINE, "eks-inference-loadtest": RESTRICTED, "monitoring": PRIVILEGED}


def test_ray_pods_of_every_processor_meet_restricted_too() -> None:
    """The serving namespace enforces baseline and warns at restricted: the Ray pods of every processor, with the
    autoscaler sidecar and the GCS wait KubeRay injects, meet restricted as well, so no warning fires today and one
    that does after an operator upgrade points at what the operator changed."""
    groups = [dict(g, enabled=True) for g in cdk_context()["eks-inference:environments"]["dev"]["node_groups"]]
    models = [{"name": "bert", "processors": [p.value for p in Processor]}]
    _, manifests, _ = render(config("dev", node_groups=groups, models=models))
    pods = list(pods_of(manifests))
    assert len(pods) == 2 * len(Processor)
    for what, _, meta, spec in pods:
        assert forbidden(meta, spec, RESTRICTED) == [], what
        assert "initContainers" in spec or "autoscaler" in [c["name"] for c in spec["containers"]], what


def test_the_node_exporters_are_admitted_only_where_privileged_pods_are() -> None:
    """neuron-monitor runs privileged (it reads the Neuron driver's devices); dcgm-exporter adds SYS_ADMIN and mounts
    the kubelet's pod-resources from the host. Under the baseline the monitoring namespace used to enforce, the API
    server rejects both and Neuron and GPU metrics stay empty; the namespace now enforces privileged, and it holds
    nothing but these exporters."""
    neuron = neuron_monitor_daemonset("public.ecr.aws/neuron/neuron-monitor:1.0.0")["spec"]["template"]
    dcgm_meta, dcgm_spec = dcgm_exporter_pod(dcgm_exporter_values())
    assert forbidden(neuron["metadata"], neuron["spec"], BASELINE) == ["privileged"]
    assert sorted(forbidden(dcgm_meta, dcgm_spec, BASELINE)) == ["hostPath volumes", "non-default capabilities"]
    (ns,) = [o for o in monitoring_manifests(neuron_image="img", scraper_cidrs=["10.0.63.240/28"])
             if o["kind"] == "Namespace"]
    assert enforce_level(ns["metadata"]["labels"]) == PRIVILEGED
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == BASELINE
    for meta, spec in ((neuron["metadata"], neuron["spec"]), (dcgm_meta, dcgm_spec)):
        assert forbidden(meta, spec, enforce_level(ns["metadata"]["labels"])) == []


RESTRICTED_POD = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                     "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "t", "emptyDir": {}}],
}


def variant(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(RESTRICTED_POD)
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[last] = value
    return spec


@pytest.mark.parametrize(("path", "value", "baseline", "restricted"), [
    ("hostNetwork", True, "host namespaces", "host namespaces"),
    ("containers.0.securityContext.privileged", True, "privileged", "privileged"),
    ("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["NET_RAW"]},
     "non-default capabilities", "unrestricted capabilities"),
    ("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["CHOWN"]},
     None, "unrestricted capabilities"),
    ("volumes", [{"name": "h", "hostPath": {"path": "/"}}], "hostPath volumes", "restricted volume types"),
    ("volumes", [{"name": "n", "nfs": {"server": "x", "path": "/"}}], None, "restricted volume types"),
    ("containers.0.ports", [{"containerPort": 80, "hostPort": 80}], "hostPort", "hostPort"),
    ("containers.0.securityContext.procMount", "Unmasked", "procMount", "procMount"),
    ("containers.0.securityContext.seLinuxOptions", {"type": "spc_t"}, "seLinuxOptions", "seLinuxOptions"),
    ("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "forbidden sysctls", "forbidden sysctls"),
    ("containers.0.securityContext.seccompProfile", {"type": "Unconfined"}, "seccompProfile", "seccompProfile"),
    ("containers.0.readinessProbe", {"httpGet": {"host": "10.0.0.1", "port": 80}}, "probe or lifecycle host",
     "probe or lifecycle host"),
    ("containers.0.securityContext.allowPrivilegeEscalation", True, None, "allowPrivilegeEscalation != false"),
    ("securityContext.runAsNonRoot", False, None, "runAsNonRoot != true"),
    ("containers.0.securityContext.runAsUser", 0, None, "runAsUser=0"),
    ("securityContext.seccompProfile", None, None, "seccompProfile"),
])
def test_the_evaluator_agrees_with_the_standard(path: str, value: Any, baseline: str | None,
                                                restricted: str | None) -> None:
    """Self-check against the Pod Security Standards' documented fields: one change to a restricted pod at a time."""
    assert forbidden({}, RESTRICTED_POD, RESTRICTED) == []
    spec = variant(path, value)
    if value is None:
        spec["securityContext"].pop("seccompProfile")
    assert forbidden({}, spec, BASELINE) == ([baseline] if baseline else [])
    assert restricted in forbidden({}, spec, RESTRICTED)
    assert forbidden({}, spec, PRIVILEGED) == []


def test_user_namespaces_relax_what_the_standard_relaxes() -> None:
    spec = variant("securityContext.runAsNonRoot", False)
    spec["containers"][0]["securityContext"]["procMount"] = "Unmasked"
    assert forbidden({}, spec, BASELINE) == ["procMount"]
    spec["hostUsers"] = False
    assert forbidden({}, spec, BASELINE) == []
    assert forbidden({}, spec, RESTRICTED) == ["procMount"]  # restricted keeps procMount; runAsNonRoot relaxed
