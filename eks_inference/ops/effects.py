"""What each change will do when deployed: replacement, rolling update, new Ray cluster, Serve update, Job run.

Every rule here restates an upstream behaviour, and the upstream source is named next to it:

* CloudFormation replaces a resource when a *create-only* property changes. The resource provider schemas
  (``createOnlyProperties``) ship with cfn-lint; they are read for every resource type, not a hand list.
* EKS managed node groups (API reference, UpdateNodegroupConfig / UpdateNodegroupVersion): scaling,
  labels, taints and update settings change without touching nodes; a new launch template version,
  Kubernetes version or AMI release replaces the nodes one by one. Scaling keeps the running count because
  DesiredSize is the count the group runs (``eks_inference/constructs/node_count.py``).
* KubeRay v1.7.0 (``ray-operator/controllers/ray/rayservice_controller.go``, ``shouldPrepareNewCluster``,
  ``isClusterSpecHashEqual``; ``ray-operator/controllers/ray/utils/util.go``,
  ``GenerateHashWithoutReplicasAndWorkersToDelete``): a RayService's ``rayClusterConfig`` is compared by a
  hash that leaves out replicas, min/maxReplicas, workersToDelete, tolerations, scheduling gates, the
  cluster's upgradeStrategy and suspend. Equal hash: the running cluster is left alone. Only new worker
  groups appended: the running cluster is updated in place. Otherwise, with ``upgradeStrategy: NewCluster``,
  a second cluster is created and traffic moves once it serves; with ``None`` nothing is rolled out.
  ``serveConfigV2`` changes are sent to the running cluster (``checkIfNeedSubmitServeApplications``).
* Ray Serve 2.60 (``ray/serve/_private/config.py`` ``DeploymentConfig`` field ``update_type``;
  ``ray/serve/_private/deploy_utils.py`` ``get_app_code_version``): user_config and the other
  lightweight options keep replicas; ray_actor_options and the heavyweight options restart them; an
  application's ``import_path``, ``runtime_env`` or ``args`` form its code version, so changing them rebuilds
  the application and restarts its replicas. HTTP, gRPC and proxy options are cluster-scoped: a running Serve
  ignores new values (``ray/serve/_private/api.py``).
* aws-cdk-lib's kubectl handler (``custom-resource-handlers/dist/aws-eks-v2/kubectl-handler``): a new
  manifest is ``kubectl create`` (``kubectl apply`` with ``Overwrite``), an update ``kubectl apply --prune -l
  <PruneLabel>``, a removed manifest ``kubectl delete`` of its objects; a Helm chart update is ``helm upgrade
  --install`` of the release named in the resource.
* kubectl (``staging/src/k8s.io/kubectl/pkg/cmd/apply/prune/prune.go``): ``--prune`` without
  ``--prune-allowlist`` deletes only the kinds of its default allowlist; a RayService, NetworkPolicy or
  PodDisruptionBudget dropped from a manifest stays in the cluster.
* Kubernetes: a Job's pod template, selector, completions and completion mode are immutable, so ``kubectl
  apply`` of a changed Job under the same name fails while the Job exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from eks_inference.ops.tree import MISSING, Change, Key, Path, render_path, starts_with


@dataclass(frozen=True)
class Effect:
    """What a change does once deployed. ``kind`` is a stable tag for summaries and tests."""

    kind: str
    text: str


# -- CloudFormation -----------------------------------------------------------------------------------------

@cache
def create_only_properties(resource_type: str) -> tuple[tuple[str, ...], ...] | None:
    """Create-only property paths of a resource type; ``None`` when no schema knows the type."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    try:
        schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    except Exception:  # cfn-lint raises its own not-found error type, which moved between releases
        return None
    return tuple(tuple(p.split("/")[2:]) for p in schema.get("createOnlyProperties", [])
                 if p.startswith("/properties/"))


def _schema_path(path: Path) -> tuple[str, ...]:
    return tuple("*" if isinstance(s, int | Key) else s for s in path)


def _overlaps(a: Sequence[str], b: Sequence[str]) -> bool:
    return all(x == y or "*" in (x, y) for x, y in zip(a, b, strict=False))


def replacing_properties(resource_type: str, changes: Iterable[Change]) -> list[str]:
    """Property paths among ``changes`` (relative to ``Properties``) that force a replacement."""
    create_only = create_only_properties(resource_type) or ()
    hits: list[str] = []
    for c in changes:
        if not c.path or c.path[0] != "Properties":
            continue
        sp = _schema_path(c.path[1:])
        if any(_overlaps(sp, p) for p in create_only):
            name = render_path(c.path[1:2])
            if name not in hits:
                hits.append(name)
    return hits


_NODEGROUP_ROLLING = ("LaunchTemplate", "Version", "ReleaseVersion")
NODE_COUNT = "Custom::NodeCount"
"""A node group's DesiredSize (eks_inference/constructs/node_count.py): it runs when the group's bounds change."""


def nodegroup_effect(changes: Sequence[Change]) -> Effect | None:
    props = {c.path[1] for c in changes if len(c.path) > 1 and c.path[0] == "Properties"}
    rolling = sorted(p for p in props if p in _NODEGROUP_ROLLING)
    if rolling:
        return Effect("node-rolling", f"in-place update that replaces every node one by one ({', '.join(rolling)} "
                                      "changed: EKS rolls the node group to the new version)")
    if props:
        return Effect("update", "in-place update, nodes kept (EKS updates the node group's configuration)")
    return None


def resource_effect(resource_type: str, changes: Sequence[Change], *, prune_label: bool = False) -> list[Effect]:
    """Effects of a modified CloudFormation resource (not its Kubernetes objects; see :func:`object_effects`)."""
    if any(c.path == ("Type",) for c in changes):
        return [Effect("replace", "REPLACEMENT: the resource type changed")]
    replacing = replacing_properties(resource_type, changes)
    if replacing:
        return [Effect("replace", f"REPLACEMENT: {', '.join(replacing)} is create-only, so CloudFormation creates "
                                  "a new resource and then deletes the old one")]
    if resource_type == "AWS::EKS::Nodegroup":
        e = nodegroup_effect(changes)
        return [e] if e else []
    if resource_type == "Custom::AWSCDK-EKS-HelmChart":
        return helm_effects(changes)
    if resource_type == NODE_COUNT:
        return [Effect("update", "gives the node group the count it runs, kept (moved into new bounds only where "
                                 "it lies outside them), or a new group its initial size")]
    if resource_type == "Custom::AWSCDK-EKS-KubernetesResource":
        return [Effect("update", "kubectl apply" + (" --prune (objects dropped from the chart are deleted)"
                                                     if prune_label else ""))]
    if create_only_properties(resource_type) is None and resource_type.startswith("Custom::"):
        return [Effect("update", "custom resource update: its handler decides what changes")]
    if all(c.path and c.path[0] in ("DependsOn",) for c in changes):
        return [Effect("update", "deploy order only")]
    return [Effect("update", "in-place update")]


def helm_effects(changes: Sequence[Change]) -> list[Effect]:
    props = {c.path[1] for c in changes if len(c.path) > 1 and c.path[0] == "Properties"}
    effects: list[Effect] = []
    if props & {"Release", "Namespace"}:
        effects.append(Effect("helm-new-release", "a release under the new name/namespace is installed; the old "
                                                  "release stays installed (the handler does not uninstall it)"))
    if props & {"Chart", "Repository", "ChartAssetURL"}:
        effects.append(Effect("helm-upgrade", "helm upgrade to a different chart"))
    elif "Version" in props:
        effects.append(Effect("helm-upgrade", "helm upgrade to the new chart version"))
    elif "Values" in props:
        effects.append(Effect("helm-upgrade", "helm upgrade with the new values"))
    if not effects:
        effects.append(Effect("update", "helm upgrade (release settings only)"))
    return effects


# -- Kubernetes objects --------------------------------------------------------------------------------------

_JOB_IMMUTABLE = ("template", "selector", "completions", "completionMode", "manualSelector")

# kubectl's defaultNamespacedPruneResources and defaultNonNamespacedPruneResources (group, kind).
PRUNE_ALLOWLIST = frozenset({
    ("", "ConfigMap"), ("", "Endpoints"), ("", "PersistentVolumeClaim"), ("", "Pod"), ("", "ReplicationController"),
    ("", "Secret"), ("", "Service"), ("batch", "Job"), ("batch", "CronJob"), ("networking.k8s.io", "Ingress"),
    ("apps", "DaemonSet"), ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
    ("", "Namespace"), ("", "PersistentVolume"),
})


def group_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    api = str(obj.get("apiVersion", ""))
    return (api.split("/")[0] if "/" in api else "", str(obj.get("kind", "?")))


def prunable(obj: Mapping[str, Any]) -> bool:
    """Whether ``kubectl apply --prune`` (default allowlist) deletes this object once its manifest drops it."""
    return group_kind(obj) in PRUNE_ALLOWLIST


def object_effects(kind: str, old: Any, new: Any, changes: Sequence[Change], *, pruned: bool,
                   resource_deleted: bool = False) -> list[Effect]:
    """Effects of one Kubernetes object of a manifest (``old``/``new`` are ``MISSING`` when absent).

    ``resource_deleted``: the whole manifest resource leaves the stack, so its objects go with ``kubectl delete``.
    """
    if kind == "HTTPRoute" and new is not MISSING:
        return route_effects(old, new)
    if old is MISSING:
        if kind == "Job":
            return [Effect("job-run", "new Job: runs once it is applied")]
        if kind == "RayService":
            return [Effect("new-ray-cluster", "new RayService: KubeRay creates its Ray cluster and deploys Serve")]
        return [Effect("create", "created")]
    if new is MISSING and kind == "HTTPRoute":
        return [*object_effects("", old, new, changes, pruned=pruned, resource_deleted=resource_deleted),
                *route_effects(old, new)]
    if new is MISSING:
        if resource_deleted:
            return [Effect("delete", "deleted with its manifest resource (kubectl delete)")]
        if not pruned:
            return [Effect("orphan", "left running in the cluster: the manifest has no prune label")]
        if prunable(old):
            return [Effect("delete", "deleted (kubectl apply --prune)")]
        group, k = group_kind(old)
        return [Effect("orphan", f"left running in the cluster: kubectl apply --prune deletes only the kinds on "
                                 f"kubectl's default prune allowlist, which has no {k}"
                                 f"{f' ({group})' if group else ''}; delete it by hand")]
    if kind == "RayService":
        return ray_service_effects(old, new, changes)
    if kind == "Job":
        spec_fields = {c.path[1] for c in changes if len(c.path) > 1 and c.path[0] == "spec"}
        frozen = sorted(f for f in spec_fields if f in _JOB_IMMUTABLE)
        if frozen:
            return [Effect("job-immutable",
                           f"changed {', '.join(frozen)} of an existing Job: immutable, so `kubectl apply` fails while "
                           "the Job exists (and reruns it under the same name if its TTL removed it); give the run a "
                           "new loadtest.run_id instead")]
        return [Effect("update", "updated in place")]
    if kind in ("Deployment", "StatefulSet", "DaemonSet") and any(
            starts_with(c.path, ("spec", "template")) for c in changes):
        return [Effect("rolling", "pods replaced by a rolling update")]
    return [Effect("update", "updated in place (kubectl apply)")]



def route_shares(route: Any) -> dict[str, dict[str, float]]:
    """Per path of an HTTPRoute, each backend's share of its requests in percent. Backends are named as the front
    door names them (``<model>-<processor>-serve-svc``), shown as the processor; a missing weight is 1 (Gateway API
    ``BackendRef.weight``)."""
    if route is MISSING or not isinstance(route, Mapping):
        return {}
    name = str((route.get("metadata") or {}).get("name", ""))
    out: dict[str, dict[str, float]] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        weights = {_backend_label(str(r.get("name", "")), name): float(r.get("weight", 1)) for r in refs}
        total = sum(weights.values())
        paths = [((m.get("path") or {}).get("value") or "/") for m in rule.get("matches") or [{}]]
        for path in paths:
            out[path] = {b: (100.0 * w / total if total else 0.0) for b, w in weights.items()}
    return out


def _backend_label(service: str, route_name: str) -> str:
    label = service.removesuffix("-serve-svc")
    return label.removeprefix(f"{route_name}-") if route_name else label


def _pct(x: float) -> str:
    return f"{x:.0f}%" if abs(x - round(x)) < 0.05 else f"{x:.1f}%"


def route_effects(old: Any, new: Any, promoted_to: str | None = None) -> list[Effect]:
    """What an HTTPRoute change does to traffic: each path's share per backend, before and after (the ALB forwards
    each request to a target group by these weights).

    :param promoted_to: the revision the current RayServices take in the same change, when it is the one the
        canaries served (a promotion in config: the canary's share goes back to them, now on its revision)."""
    before, after = route_shares(old), route_shares(new)
    effects = []
    for path in sorted(set(before) | set(after)):
        b, a = before.get(path, {}), after.get(path, {})
        where = f"{path.rstrip('/')}/*" if path != "/" else "/*"
        if not b:
            split = ", ".join(f"{k} {_pct(v)}" for k, v in sorted(a.items()))
            effects.append(Effect("traffic", f"the front door starts routing {where}: {split}"))
        elif not a:
            effects.append(Effect("traffic", f"the front door stops routing {where} once the route is gone"))
        else:
            moves = [f"{k} {_pct(b.get(k, 0.0))} → {_pct(a.get(k, 0.0))}" for k in sorted(set(b) | set(a))
                     if abs(b.get(k, 0.0) - a.get(k, 0.0)) >= 0.05]
            if moves:
                stage = _canary_stage(b, a, where, promoted_to)
                effects.append(Effect("traffic", f"{stage}{', '.join(moves)} of {where}"))
    return effects or [Effect("update", "updated in place (kubectl apply); the traffic split is unchanged")]


def _canary_share(shares: Mapping[str, float]) -> float:
    return sum(v for k, v in shares.items() if k.endswith("-canary"))


def _canary_stage(before: Mapping[str, float], after: Mapping[str, float], where: str,
                  promoted_to: str | None = None) -> str:
    """What a change of the canary backends (``<target>-canary``, ``eks-inference rollout``) means for a path."""
    b, a = _canary_share(before), _canary_share(after)
    if abs(a - b) < 0.05:
        return ""
    if b < 0.05:
        return f"canary start: the new revision takes {_pct(a)} of {where}: "
    if a >= 99.95:
        return f"canary promote: the new revision takes all of {where} (was {_pct(b)}): "
    if a < 0.05 and promoted_to:
        return (f"canary promote: the current RayServices take the canary's revision {promoted_to} and all of "
                f"{where} (the canary had {_pct(b)}): ")
    if a < 0.05:
        return (f"canary end: its {_pct(b)} of {where} goes back to the current RayServices (a rollback, or the "
                "last step of a promote once they serve the new revision): ")
    return f"canary share {_pct(b)} → {_pct(a)} of {where}: "


# KubeRay v1.7.0 GenerateHashWithoutReplicasAndWorkersToDelete and rayClusterSpecForHashing.
_MUTED_HEAD: tuple[tuple[str, ...], ...] = (("template", "spec", "tolerations"),
                                            ("template", "spec", "schedulingGates"))
_MUTED_WORKER: tuple[tuple[str, ...], ...] = (("replicas",), ("minReplicas",), ("maxReplicas",),
                                              ("scaleStrategy", "workersToDelete"), *_MUTED_HEAD)


def job_replaced_effect(old_name: str, new: Mapping[str, Any]) -> Effect:
    """A Job whose spec changed under the same run: its name (which ends in a hash of the spec) changed too."""
    run = ((new.get("metadata") or {}).get("labels") or {}).get("eks-inference/run-id")
    containers = (((new.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    skips = any("--skip-if-exists" in (c.get("args") or []) for c in containers)
    skip = (f"its pods exit at once where run {run} already has their results (--skip-if-exists), so measuring "
            "again needs a new loadtest.run_id") if skips and run else "it runs once it is applied"
    return Effect("job-replaced", f"replaces Job {old_name}, whose spec differs (the name carries a hash of the "
                                  f"spec): the old Job is pruned and this one starts; {skip}")


def _drop(doc: Any, path: tuple[str, ...]) -> None:
    for seg in path[:-1]:
        if not isinstance(doc, dict):
            return
        doc = doc.get(seg)
    if isinstance(doc, dict):
        doc.pop(path[-1], None)


def kuberay_hashed_view(cluster_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``rayClusterConfig`` KubeRay hashes to decide whether the running cluster still matches."""
    import copy

    spec = copy.deepcopy(dict(cluster_spec))
    spec.pop("suspend", None)
    spec.pop("upgradeStrategy", None)
    for p in _MUTED_HEAD:
        _drop(spec.get("headGroupSpec"), p)
    for group in spec.get("workerGroupSpecs") or []:
        for p in _MUTED_WORKER:
            _drop(group, p)
    return spec


def _upgrade_type(obj: Mapping[str, Any]) -> str:
    # Unset type: zero-downtime upgrades are on unless the operator runs with ENABLE_ZERO_DOWNTIME=false.
    return str(((obj.get("spec") or {}).get("upgradeStrategy") or {}).get("type") or "NewCluster")


def ray_service_effects(old: Mapping[str, Any], new: Mapping[str, Any], changes: Sequence[Change]) -> list[Effect]:
    effects: list[Effect] = []
    cluster = [c for c in changes if starts_with(c.path, ("spec", "rayClusterConfig"))]
    serve = [c for c in changes if starts_with(c.path, ("spec", "serveConfigV2"))]
    new_cluster = False
    if cluster:
        old_c = (old.get("spec") or {}).get("rayClusterConfig") or {}
        new_c = (new.get("spec") or {}).get("rayClusterConfig") or {}
        before, after = kuberay_hashed_view(old_c), kuberay_hashed_view(new_c)
        n_old = len(before.get("workerGroupSpecs") or [])
        appended = dict(after, workerGroupSpecs=(after.get("workerGroupSpecs") or [])[:n_old])
        if before == after:
            fields = sorted({str(c.path[-1] if not isinstance(c.path[-1], Key | int) else c.path[-2])
                             for c in cluster})
            effects.append(Effect("ray-not-applied",
                                  f"no new Ray cluster, and the running one keeps its old {', '.join(fields)}: KubeRay "
                                  "leaves these fields out of the cluster hash it compares; they take effect with the "
                                  "next new cluster"))
        elif len(after.get("workerGroupSpecs") or []) > n_old and appended == before:
            effects.append(Effect("ray-in-place", "worker group added to the running Ray cluster in place"))
        elif _upgrade_type(new) == "NewCluster":
            new_cluster = True
            effects.append(Effect("new-ray-cluster",
                                  "new Ray cluster (upgradeStrategy NewCluster): KubeRay starts a second RayCluster, "
                                  "moves traffic once its Serve applications are ready and deletes the old one; the "
                                  "node groups need room for both while they overlap"))
        else:
            effects.append(Effect("ray-not-applied",
                                  f"not rolled out: upgradeStrategy {_upgrade_type(new)} keeps the running RayCluster "
                                  "(delete and re-create the RayService to apply)"))
    if serve:
        effects.append(serve_effect(serve, onto_new_cluster=new_cluster))
    rest = [c for c in changes if c not in cluster and c not in serve]
    if rest and not effects:
        effects.append(Effect("update", "RayService settings updated; the Ray cluster and Serve are unchanged"))
    return effects


# Ray Serve 2.60 DeploymentConfig update types (ray/serve/_private/config.py) and schema fields.
SERVE_CLUSTER_SCOPED = frozenset({"proxy_location", "http_options", "grpc_options", "controller_options",
                                  "tracing_config"})
SERVE_APP_CODE_VERSION = frozenset({"import_path", "runtime_env", "args", "autoscaling_policy"})
SERVE_REPLICAS_KEPT = frozenset({"num_replicas", "max_queued_requests", "rolling_update_percentage",
                                 "max_surge_percent", "max_ongoing_requests", "backpressure_config", "user_config",
                                 "graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s",
                                 "health_check_period_s", "health_check_timeout_s", "autoscaling_config",
                                 "logging_config", "request_router_config", "max_constructor_retry_count"})
SERVE_REPLICAS_RESTART = frozenset({"version", "gang_scheduling_config", "deployment_actors", "ray_actor_options",
                                    "placement_group_bundles", "placement_group_strategy",
                                    "placement_group_bundle_label_selector", "max_replicas_per_node"})
# Options that Ray also folds into the application's code version (get_app_code_version).
_CODE_VERSION_OPTIONS = frozenset({"request_router_config", "deployment_actors"})


def serve_effect(changes: Sequence[Change], *, onto_new_cluster: bool) -> Effect:
    """Classify ``spec.serveConfigV2`` changes by what Ray Serve does with them on a running cluster."""
    notes: list[str] = []
    rebuilt: dict[str, list[str]] = {}  # application -> fields that form its code version
    per_app: dict[str, list[str]] = {}
    restart = False
    for c in changes:
        rel = c.path[2:]
        if not rel:
            notes.append("Serve config replaced")
            restart = True
            continue
        if rel[0] in SERVE_CLUSTER_SCOPED:
            notes.append(f"{rel[0]} is cluster-scoped: a running Serve ignores it until the next new Ray cluster")
            continue
        if rel[0] != "applications" or len(rel) < 2:
            notes.append(f"{render_path(rel)} updated")
            continue
        app = rel[1].name if isinstance(rel[1], Key) else str(rel[1])
        if len(rel) == 2:
            notes.append(f"application {app} {'deployed' if c.old is MISSING else 'deleted'}")
            continue
        field = str(rel[2])
        if field in SERVE_APP_CODE_VERSION:
            rebuilt.setdefault(app, []).append(field)
        elif field == "deployments" and len(rel) >= 5:
            dep = rel[3].name if isinstance(rel[3], Key) else str(rel[3])
            opt = str(rel[4])
            if opt in SERVE_REPLICAS_RESTART or opt in _CODE_VERSION_OPTIONS or (
                    opt == "autoscaling_config" and "policy" in rel[5:]):
                restart = True
                per_app.setdefault(app, []).append(f"deployment {dep}: replicas restart ({opt} changed)")
            elif opt == "user_config":
                per_app.setdefault(app, []).append(
                    f"deployment {dep}: replicas kept, reconfigure() receives the new user_config")
            elif opt in SERVE_REPLICAS_KEPT:
                per_app.setdefault(app, []).append(f"deployment {dep}: replicas kept ({opt} changed)")
            else:
                restart = True
                per_app.setdefault(app, []).append(f"deployment {dep}: {opt} changed (not known to this check: "
                                                   "counted as a restart)")
        elif field == "deployments":
            per_app.setdefault(app, []).append(f"deployment {'added' if c.old is MISSING else 'removed'}")
        else:
            per_app.setdefault(app, []).append(f"{field} updated")
    for app in dict.fromkeys([*rebuilt, *per_app]):
        if app in rebuilt:
            restart = True
            fields = ", ".join(dict.fromkeys(rebuilt[app]))
            also = " and deployment options" if app in per_app else ""
            notes.append(f"application {app} is rebuilt and its replicas restart ({fields}{also} changed)")
        else:
            notes += [f"application {app}, {n}" for n in dict.fromkeys(per_app[app])]
    notes = list(dict.fromkeys(notes))
    if restart:
        notes.append("restarts roll through the replicas; with max_surge_percent 0 each old replica stops before "
                     "its replacement starts, so a single replica means a short outage")
    where = "deployed on the new Ray cluster" if onto_new_cluster else \
        "in-place Serve update (KubeRay sends the new serveConfigV2 to the running Ray cluster)"
    return Effect("serve-restart" if restart else "serve-update", f"{where}: {'; '.join(notes)}")
