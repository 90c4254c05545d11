"""What a first ``cdk deploy --all`` may create before what (model: tests/system/cfn.py ``DeployOrder``).

CloudFormation creates resources that nothing orders in parallel; the CDK CLI deploys a stack after its
dependency stacks and its own asset publishes. A pod is only as ready as what exists when it is admitted:
EKS Pod Identity injects credentials only into pods created after their service account's association
exists; a RayService needs the KubeRay CRD; NetworkPolicies need the VPC CNI's agent; pods need nodes
with matching labels and the device plugin of what they request; the images must be in ECR.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from eks_inference.k8s.ray_service import HEAD_SERVICE_ACCOUNT
from eks_inference.observability.scrape import MONITORING_NAMESPACE
from tests.conftest import Assembly
from tests.system.cfn import HELM_TYPE, MANIFEST_TYPE, DeployOrder, Node, manifest_objects, references, resolve

DEVICE_PLUGINS = {"aws.amazon.com/neuroncore": "neuron-helm-chart", "nvidia.com/gpu": "nvidia-device-plugin"}


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "RayService":
        rc = obj["spec"]["rayClusterConfig"]
        return [rc["headGroupSpec"]["template"]["spec"]] + [w["template"]["spec"] for w in rc["workerGroupSpecs"]]
    if obj["kind"] in ("Job", "Deployment", "DaemonSet", "StatefulSet"):
        return [obj["spec"]["template"]["spec"]]
    return []


def one(order: DeployOrder, type_: str, **props: Any) -> Node:
    found = [n for n, r in order.resources(type_) if all(r["Properties"].get(k) == v for k, v in props.items())]
    assert len(found) == 1, f"expected one {type_} with {props}, found {found}"
    return found[0]


def exporter_requirements(order: DeployOrder, objs: list[dict[str, Any]]) -> dict[str, Node]:
    """The metrics exporters (the monitoring namespace) read nothing from AWS and mount no token: they need the
    nodes they select and, for their NetworkPolicy, the CNI that enforces it."""
    need: dict[str, Node] = {}
    for obj in objs:
        for spec in pod_specs(obj):
            assert spec.get("automountServiceAccountToken") is False
            for k, v in spec.get("nodeSelector", {}).items():
                groups = [n for n, r in order.resources("AWS::EKS::Nodegroup")
                          if r["Properties"].get("Labels", {}).get(k) == v]
                assert groups, f"no node group is labelled {k}={v}"
                need[f"node group {k}={v}"] = groups[0]
    if any(o["kind"] == "NetworkPolicy" for o in objs):
        need["vpc-cni add-on enforcing NetworkPolicies"] = one(order, "AWS::EKS::Addon", AddonName="vpc-cni")
    return need


def requirements(order: DeployOrder, node: Node, objs: list[dict[str, Any]]) -> dict[str, Node]:
    """Everything the pods of ``objs`` need to exist before they are created, read from the templates."""
    if all(o["metadata"].get("namespace") == MONITORING_NAMESPACE for o in objs if pod_specs(o)):
        return exporter_requirements(order, objs)
    need: dict[str, Node] = {f"image assets of {node.stack}": Node(node.stack, "#assets")}
    resources = dict(order.resources())
    has_policies = any(o["kind"] == "NetworkPolicy" for o in objs)
    buckets = [n for n, r in order.resources("AWS::S3::Bucket") if "LoggingConfiguration" in r["Properties"]]
    reads_bucket = False
    used: set[tuple[str, str]] = set()
    for obj in objs:
        for spec in pod_specs(obj):
            ns = obj["metadata"]["namespace"]
            sa = spec.get("serviceAccountName", "default")
            used.add((ns, sa))
            if sa == HEAD_SERVICE_ACCOUNT:  # Ray heads read nothing from AWS: no association, no credentials
                assert not [n for n, r in order.resources("AWS::EKS::PodIdentityAssociation")
                            if r["Properties"].get("ServiceAccount") == sa]
            else:
                assoc = one(order, "AWS::EKS::PodIdentityAssociation", Namespace=ns, ServiceAccount=sa)
                need[f"Pod Identity association {ns}/{sa}"] = assoc
                (role,) = references(resources[assoc]["Properties"]["RoleArn"])
                for pnode, pol in order.resources("AWS::IAM::Policy"):
                    if pnode.stack == node.stack and role in references(pol["Properties"]["Roles"]):
                        need[f"policy of {role}"] = pnode
                        reads_bucket |= buckets[0].logical_id in references(pol["Properties"]["PolicyDocument"])
            need["eks-pod-identity-agent add-on"] = one(order, "AWS::EKS::Addon", AddonName="eks-pod-identity-agent")
            for k, v in spec.get("nodeSelector", {}).items():
                groups = [n for n, r in order.resources("AWS::EKS::Nodegroup")
                          if r["Properties"].get("Labels", {}).get(k) == v]
                assert groups, f"no node group is labelled {k}={v}"
                need[f"node group {k}={v}"] = groups[0]
            for c in spec["containers"]:
                for res in c.get("resources", {}).get("limits", {}):
                    if res in DEVICE_PLUGINS:
                        need[f"device plugin for {res}"] = one(order, HELM_TYPE, Chart=DEVICE_PLUGINS[res])
        if obj["kind"] == "RayService":
            need["KubeRay operator (RayService CRD)"] = one(order, HELM_TYPE, Chart="kuberay-operator")
        if has_policies:
            need["vpc-cni add-on enforcing NetworkPolicies"] = one(order, "AWS::EKS::Addon", AddonName="vpc-cni")
    if reads_bucket:  # pods whose role reads the model repository (not the GCS token sync's)
        need["model repository bucket"] = buckets[0]
    namespaces = {ns for ns, _ in used}
    for other, res in order.resources(MANIFEST_TYPE):
        if other != node and any((o["kind"] == "Namespace" and o["metadata"]["name"] in namespaces)
                                 or (o["kind"] == "ServiceAccount"
                                     and (o["metadata"].get("namespace"), o["metadata"]["name"]) in used)
                                 for o in manifest_objects(res)):
            need[f"namespace and service accounts ({other.logical_id})"] = other
    return need


def violations(order: DeployOrder) -> list[str]:
    out = []
    for node, res in order.resources(MANIFEST_TYPE):
        objs = manifest_objects(res)
        if not any(pod_specs(o) for o in objs):
            continue
        for what, req in requirements(order, node, objs).items():
            if not order.before(req, node):
                out.append(f"{node.logical_id} may be created before {what} ({req.logical_id})")
    for node, res in order.resources(HELM_TYPE):
        values = json.loads(resolve(res["Properties"].get("Values")) or "{}")
        selector = values.get("nodeSelector") or values.get("scheduler", {}).get("nodeSelector") or {}
        for k, v in selector.items():
            groups = [n for n, r in order.resources("AWS::EKS::Nodegroup")
                      if r["Properties"].get("Labels", {}).get(k) == v]
            if not any(order.before(g, node) for g in groups):
                out.append(f"Helm release {res['Properties']['Chart']} may start before nodes labelled {k}={v}")
        sa = values.get("rbac", {}).get("serviceAccount", {}).get("name")
        for assoc, a in order.resources("AWS::EKS::PodIdentityAssociation"):
            if sa and a["Properties"].get("ServiceAccount") == sa and not order.before(assoc, node):
                out.append(f"Helm release {res['Properties']['Chart']} may start before the Pod Identity "
                           f"association of {sa}")
    return out


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_serving_pods_start_after_what_they_need(env_name: str, assemblies: dict[str, Assembly]) -> None:
    order = DeployOrder.of(assemblies[env_name])
    assert violations(order) == []
    pod_manifests = [n for n, r in order.resources(MANIFEST_TYPE)
                     if any(o["kind"] == "RayService" for o in manifest_objects(r))]
    assert len(pod_manifests) == 2


def test_load_test_pods_start_after_what_they_need(redeploy: dict[str, Assembly]) -> None:
    order = DeployOrder.of(redeploy["before"])
    assert violations(order) == []
    (jobs,) = [n for n, r in order.resources(MANIFEST_TYPE) if any(
        o["kind"] == "Job" and o["metadata"]["labels"].get("eks-inference/role") == "loadtest"
        for o in manifest_objects(r))]
    targets = [n for n, r in order.resources(MANIFEST_TYPE)
               if any(o["kind"] == "RayService" for o in manifest_objects(r))]
    assert all(order.before(t, jobs) for t in targets)  # clients start after the RayServices they measure


def test_a_missing_edge_is_caught(assemblies: dict[str, Assembly]) -> None:
    """Negative control: without DependsOn on the association and its policy (as before), pods may come first."""
    order = DeployOrder.of(assemblies["dev"])
    templates = copy.deepcopy(order.templates)
    for t in templates.values():
        for res in t["Resources"].values():
            if res["Type"] == MANIFEST_TYPE and isinstance(res.get("DependsOn"), list):
                res["DependsOn"] = [d for d in res["DependsOn"] if "PodIdentity" not in d and "Policy" not in d]
    found = violations(DeployOrder.build(templates, order.stack_deps))
    assert any("Pod Identity association eks-inference/serve" in v for v in found)
    assert any("policy of ServingPodRole" in v for v in found)


def test_network_policies_are_applied_after_the_cni_enforces_them(assemblies: dict[str, Assembly]) -> None:
    """The vpc-cni add-on lives in the cluster stack, which completes before any manifest of the inference
    stack starts: NetworkPolicies are enforced from their first pod on."""
    order = DeployOrder.of(assemblies["dev"])
    cni = one(order, "AWS::EKS::Addon", AddonName="vpc-cni")
    for node, res in order.resources(MANIFEST_TYPE):
        if any(o["kind"] == "NetworkPolicy" for o in manifest_objects(res)):
            assert order.before(cni, node)


def test_exporters_start_after_their_nodes_and_the_cni_that_enforces_their_policy(
        assemblies: dict[str, Assembly]) -> None:
    order = DeployOrder.of(assemblies["dev"])
    (node,) = [n for n, r in order.resources(MANIFEST_TYPE)
               if any(o["kind"] == "DaemonSet" and o["metadata"]["namespace"] == MONITORING_NAMESPACE
                      for o in manifest_objects(r))]
    need = exporter_requirements(order, manifest_objects(dict(order.resources())[node]))
    assert set(need) == {"node group eks-inference/processor=inferentia", "vpc-cni add-on enforcing NetworkPolicies"}
    assert all(order.before(req, node) for req in need.values())


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_log_groups_exist_before_what_writes_to_them(env_name: str, assemblies: dict[str, Assembly]) -> None:
    """GIVEN the synthesized stacks WHEN CloudFormation orders them THEN the control-plane group
    (``/aws/eks/<cluster>/cluster``, named for the cluster's fixed name) is created before the cluster that turns
    logging on, and every Container Insights group before the log agent add-on: EKS and Fluent Bit create a group
    they find missing, without retention or key, and the stack's own create would then fail as already existing
    (EKS User Guide, "Send control plane logs to CloudWatch Logs")."""
    order = DeployOrder.of(assemblies[env_name])
    ((cluster, c),) = list(order.resources("AWS::EKS::Cluster"))
    assert c["Properties"]["Logging"]["ClusterLogging"]["EnabledTypes"]
    name = c["Properties"]["Name"]
    groups = {r["Properties"].get("LogGroupName"): n for n, r in order.resources("AWS::Logs::LogGroup")
              if isinstance(r["Properties"].get("LogGroupName"), str)}
    assert order.before(groups[f"/aws/eks/{name}/cluster"], cluster)
    agent = one(order, "AWS::EKS::Addon", AddonName="amazon-cloudwatch-observability")
    for kind in ("application", "dataplane", "host", "performance"):
        assert order.before(groups[f"/aws/containerinsights/{name}/{kind}"], agent)
    assert order.before(one(order, "AWS::EKS::Addon", AddonName="eks-pod-identity-agent"), agent)
