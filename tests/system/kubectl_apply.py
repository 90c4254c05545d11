"""A model of a cluster receiving our manifests through aws_eks_v2's kubectl handler, deploy after deploy.

The handler (aws/aws-cdk packages/@aws-cdk/custom-resource-handlers/lib/aws-eks-v2/kubectl-handler/apply/
__init__.py) runs, for a ``Custom::AWSCDK-EKS-KubernetesResource``:

- Create: ``kubectl create --save-config -f manifest`` (``kubectl apply`` when ``Overwrite`` is true);
  create fails on an object that already exists.
- Update: ``kubectl apply -f manifest`` with ``--prune -l PruneLabel`` when the resource has a prune label.
  Prune deletes labelled objects missing from the manifest, but only of the kinds on kubectl's default
  prune allowlist (kubernetes staging/src/k8s.io/kubectl/pkg/cmd/apply/prune/prune.go).
- Delete: ``kubectl delete -f manifest``.

The API server refuses an update that changes an immutable field (kubernetes pkg/apis/batch/validation/
validation.go ``ValidateJobSpecUpdate``; pkg/apis/apps/validation ``ValidateDeploymentUpdate`` and friends
for selectors; pkg/apis/core/validation ``ValidatePersistentVolumeClaimUpdate``); a failed apply fails the
resource, and CloudFormation rolls the stack back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from tests.system.cfn import MANIFEST_TYPE, manifest_objects

PRUNE_ALLOWLIST = {("", "ConfigMap"), ("", "Endpoints"), ("", "PersistentVolumeClaim"), ("", "Pod"),
                   ("", "ReplicationController"), ("", "Secret"), ("", "Service"), ("batch", "Job"),
                   ("batch", "CronJob"), ("networking.k8s.io", "Ingress"), ("apps", "DaemonSet"),
                   ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("", "Namespace"),
                   ("", "PersistentVolume")}

# Fields an update may not change, per (group, kind). Kinds with an empty tuple accept any spec change
# (policy/v1 PodDisruptionBudget has had no update validation since Kubernetes 1.15). RayService's are the
# fields its CRD marks `self == oldSelf` (test_redeploy.py::test_ray_service_update_rules_are_the_crds).
IMMUTABLE: dict[tuple[str, str], tuple[str, ...]] = {
    ("batch", "Job"): ("spec.selector", "spec.template", "spec.completionMode", "spec.podFailurePolicy",
                       "spec.backoffLimitPerIndex", "spec.managedBy", "spec.successPolicy", "spec.completions"),
    ("apps", "Deployment"): ("spec.selector",),
    ("apps", "ReplicaSet"): ("spec.selector",),
    ("apps", "DaemonSet"): ("spec.selector",),
    ("apps", "StatefulSet"): ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates",
                              "spec.podManagementPolicy"),
    ("", "PersistentVolumeClaim"): ("spec.accessModes", "spec.storageClassName", "spec.volumeName",
                                    "spec.selector", "spec.dataSource"),
    ("", "Service"): ("spec.clusterIP",),
    ("", "Namespace"): (),
    ("", "ServiceAccount"): (),
    ("networking.k8s.io", "NetworkPolicy"): (),
    ("policy", "PodDisruptionBudget"): (),
    ("ray.io", "RayService"): ("spec.managedBy", "spec.rayClusterConfig.managedBy",
                               "spec.rayClusterConfig.gcsFaultToleranceOptions.backend"),
    # The front door: the fields each upstream CRD marks `self == oldSelf` (tests/data/crds: Gateway API v1.6.0, the
    # AWS Load Balancer Controller v3.5.0); only GatewayClass has one.
    ("gateway.networking.k8s.io", "GatewayClass"): ("spec.controllerName",),
    ("gateway.networking.k8s.io", "Gateway"): (),
    ("gateway.networking.k8s.io", "HTTPRoute"): (),
    ("gateway.k8s.aws", "LoadBalancerConfiguration"): (),
    ("gateway.k8s.aws", "TargetGroupConfiguration"): (),
    ("gateway.k8s.aws", "ListenerRuleConfiguration"): (),
}


def group_kind(obj: dict[str, Any]) -> tuple[str, str]:
    api = obj["apiVersion"]
    return (api.split("/")[0] if "/" in api else "", obj["kind"])


def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    g, k = group_kind(obj)
    return g, k, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _get(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def immutable_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Immutable fields ``new`` would change on ``old``; raises for a kind the model does not know."""
    gk = group_kind(new)
    if gk not in IMMUTABLE:
        raise KeyError(f"no update rules modelled for {gk}; add them to IMMUTABLE with their upstream source")
    changed = []
    for path in IMMUTABLE[gk]:
        before, after = _get(old, path), _get(new, path)
        if path == "spec.completions" and _get(new, "spec.completionMode") == "Indexed" and (
                after == _get(new, "spec.parallelism")):
            continue  # elastic Indexed Jobs: completions may change in tandem with parallelism
        if before != after:
            changed.append(path)
    return changed


class ApplyError(Exception):
    """What kubectl would print, and CloudFormation would roll back on."""


@dataclass
class Cluster:
    """Objects by key, each remembering the prune label of the manifest resource that applied it."""

    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)

    def create(self, objs: list[dict[str, Any]]) -> None:
        for o in objs:
            if key(o) in self.objects:
                raise ApplyError(f"Error from server (AlreadyExists): {'/'.join(key(o)[1:])} already exists")
            self.objects[key(o)] = copy.deepcopy(o)

    def apply(self, objs: list[dict[str, Any]], prune_label: str | None) -> None:
        for o in objs:
            old = self.objects.get(key(o))
            if old is not None:
                changed = immutable_changes(old, o)
                if changed:
                    raise ApplyError(f"The {o['kind']} \"{o['metadata']['name']}\" is invalid: "
                                     f"{', '.join(changed)}: field is immutable")
            self.objects[key(o)] = copy.deepcopy(o)
        if prune_label is not None:
            keep = {key(o) for o in objs}
            for k, o in list(self.objects.items()):
                labelled = prune_label in o["metadata"].get("labels", {})
                if labelled and k not in keep and (k[0], k[1]) in PRUNE_ALLOWLIST:
                    del self.objects[k]

    def delete(self, objs: list[dict[str, Any]]) -> None:
        for o in objs:
            self.objects.pop(key(o), None)


def deploy(cluster: Cluster, old_template: dict[str, Any] | None, new_template: dict[str, Any]) -> list[str]:
    """Run the handler for every manifest resource CloudFormation creates, updates or deletes going from
    ``old_template`` to ``new_template`` (creates and updates first, deletes in the cleanup phase, as
    CloudFormation does). Returns what happened, one line per resource."""
    old = {rid: r for rid, r in (old_template or {"Resources": {}})["Resources"].items()
           if r["Type"] == MANIFEST_TYPE}
    new = {rid: r for rid, r in new_template["Resources"].items() if r["Type"] == MANIFEST_TYPE}
    log = []
    for rid in _creation_order(new):
        props = new[rid]["Properties"]
        objs = manifest_objects(new[rid])
        if rid not in old:
            if str(props.get("Overwrite", "false")).lower() == "true":
                cluster.apply(objs, None)
            else:
                cluster.create(objs)
            log.append(f"create {rid}")
        elif props != old[rid]["Properties"]:
            cluster.apply(objs, props.get("PruneLabel"))
            log.append(f"update {rid}")
    for rid in old.keys() - new.keys():
        cluster.delete(manifest_objects(old[rid]))
        log.append(f"delete {rid}")
    return log


def _creation_order(resources: dict[str, dict[str, Any]]) -> list[str]:
    done: list[str] = []

    def visit(rid: str) -> None:
        if rid in done:
            return
        deps = resources[rid].get("DependsOn", [])
        for d in [deps] if isinstance(deps, str) else deps:
            if d in resources:
                visit(d)
        done.append(rid)

    for rid in sorted(resources):
        visit(rid)
    return done
