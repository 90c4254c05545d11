"""The objects a rollout adds beside a model's current revision, and the route weights of each of its stages.

A canary is a second RayService per processor target, ``<target>-canary``, copied from the deployed one with only
the weights revision (and its pinned digest) changed in ``serveConfigV2``: same image, pods, labels (so the target's
NetworkPolicies and scrape config cover it) and Serve application name (so the front door's ``/{model}`` path and
the alerts' ``application`` label are the model's). KubeRay fronts it with ``<target>-canary-serve-svc``
(``GenerateServeServiceName``), which becomes a backend of the model's HTTPRoute next to the stable one, with a
TargetGroupConfiguration copied from the stable target's (ip targets, the model's health check).

Every function here is pure: documents in, documents out; :mod:`eks_inference.ops.rollout` decides when.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from eks_inference.config import (
    CANARY_SUFFIX,
    ConfigError,
    ModelSpec,
    canary_name_errors,
)

ROLLOUT_LABEL = "eks-inference/rollout"
"""On every object a rollout adds (``canary``), so that ``kubectl get rayservice -l eks-inference/rollout`` finds
them and nothing the stacks own carries it."""
COMPILE_TARGET_LABEL = "eks-inference/compile-target"
""":data:`eks_inference.k8s.serving_chart.COMPILE_TARGET_LABEL` (a test keeps them equal): this module stays free of
cdk8s, which the operator's commands would otherwise load for a few names."""
CDK_PRUNE_LABEL = "aws.cdk.eks/prune-"
"""The prefix of the label by which aws-eks's kubectl handler prunes a manifest resource's objects (its prune label,
one per resource)."""
_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


def canary_name(target_name: str) -> str:
    return f"{target_name}{CANARY_SUFFIX}"


def canary_names(model: ModelSpec) -> list[str]:
    """The canary RayService of each of the model's targets (``<model>-<processor>``, as
    :func:`eks_inference.k8s.serving_chart.service_name` names the targets)."""
    return [canary_name(f"{model.name}-{p.value}") for p in model.processors]


def check_canary_names(model: ModelSpec) -> None:
    """One line per canary name KubeRay would refuse (:func:`eks_inference.config.canary_name_errors`, which config
    validation of a model's ``canary`` runs too)."""
    long = canary_name_errors(model)
    if long:
        raise ConfigError(*long)


def _model_app(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    for app in config.get("applications") or []:
        if app.get("name") == model or (app.get("args") or {}).get("model") == model:
            return app  # type: ignore[no-any-return]
    raise ConfigError(f"the serve config has no application of model {model!r}; check --model")


def serve_config_revision(config: Mapping[str, Any], model: str) -> str:
    """The weights revision a ``serveConfigV2`` document serves."""
    return str((_model_app(config, model).get("args") or {}).get("revision", ""))


def revised_serve_config(config: Mapping[str, Any], *, model: str, revision: str,
                         weights_sha256: str | None) -> dict[str, Any]:
    """``config`` serving ``revision`` of ``model``: the ``revision`` argument, the weights' URI (published as
    ``.../models/{model}/{revision}``, :func:`eks_inference.serving.serve_config.model_repository_uris`) and the
    pinned digest. Everything else (batching, replicas, resources) is the current revision's."""
    out = copy.deepcopy(dict(config))
    _revise_args(_model_app(out, model).setdefault("args", {}), model=model, revision=revision,
                 weights_sha256=weights_sha256)
    return out


def _revise_args(args: dict[str, Any], *, model: str, revision: str, weights_sha256: str | None) -> None:
    old = str(args.get("revision", ""))
    uri = str(args.get("model_uri", ""))
    tail = f"/models/{model}/{old}"
    if uri.startswith("s3://") and uri.endswith(tail):
        args["model_uri"] = uri[: -len(tail)] + f"/models/{model}/{revision}"
    args["revision"] = revision
    args["weights_sha256"] = weights_sha256


def _canary_hint(args: dict[str, Any], target: str) -> None:
    """A waiting replica of the canary points at the canary's compile Job, not its target's."""
    if args.get("compile_hint"):
        args["compile_hint"] = re.sub(rf"(?<![\w-]){re.escape(target)}(?![\w-])", canary_name(target),
                                      str(args["compile_hint"]))


_JOB_GENERATED_LABELS = ("controller-uid", "job-name", "batch.kubernetes.io/controller-uid",
                         "batch.kubernetes.io/job-name")
"""Labels and selector the Job controller adds to a Job it admitted; a copy must leave them for the new Job's own."""


def canary_compile_job(stable: Mapping[str, Any], *, model: str, revision: str,
                       weights_sha256: str | None) -> dict[str, Any]:
    """The compile Job of the canary, from the target's deployed one (``kubectl get job -o json``): the same image,
    node group and role, its ``--serve-app`` at ``revision``. Replicas never compile (``compile_on_miss: false``), so
    without it the canary would wait for an artifact nobody writes. Named like every compile Job, by a hash of its
    spec as :func:`eks_inference.k8s.load_test_chart.job_name` names them."""
    spec = copy.deepcopy(dict(stable.get("spec") or {}))
    spec.pop("selector", None)
    spec.pop("manualSelector", None)
    template = spec.setdefault("template", {})
    tmeta = template.setdefault("metadata", {})
    labels = {k: v for k, v in (tmeta.get("labels") or {}).items() if k not in _JOB_GENERATED_LABELS}
    target = str(labels.get(COMPILE_TARGET_LABEL, ""))
    labels[COMPILE_TARGET_LABEL] = canary_name(target)
    template["metadata"] = {"labels": labels}
    revised = False
    for c in (template.get("spec") or {}).get("containers") or []:
        args = c.get("args") or []
        if "--serve-app" in args:
            i = args.index("--serve-app") + 1
            app = json.loads(args[i])
            _revise_args(app.setdefault("args", {}), model=model, revision=revision, weights_sha256=weights_sha256)
            _canary_hint(app["args"], target)
            args[i] = json.dumps(app, sort_keys=True, separators=(",", ":"))
            revised = True
    if not revised:
        raise ConfigError(f"Job {stable.get('metadata', {}).get('name')!r} has no --serve-app to revise; is it a "
                          "compile Job?")
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    meta = _clean_meta(stable, f"{f'compile-{canary_name(target)}'[:63 - 9].rstrip('-')}-{digest}")
    meta["labels"] = {k: v for k, v in meta["labels"].items() if k not in _JOB_GENERATED_LABELS}
    meta["labels"][COMPILE_TARGET_LABEL] = canary_name(target)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def _clean_meta(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = copy.deepcopy(dict(obj.get("metadata") or {}))
    for k in _SERVER_FIELDS:
        meta.pop(k, None)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != "kubectl.kubernetes.io/last-applied-configuration"}
    meta["annotations"] = annotations
    if not annotations:
        del meta["annotations"]
    meta["name"] = name
    # Not the label by which a deploy prunes the target's manifest: the canary's own manifest has its own.
    meta["labels"] = {**{k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith(CDK_PRUNE_LABEL)},
                      ROLLOUT_LABEL: "canary"}
    return meta


def canary_ray_service(stable: Mapping[str, Any], *, model: str, revision: str,
                       weights_sha256: str | None) -> dict[str, Any]:
    """The canary RayService of a deployed one (``kubectl get rayservice -o json``): named ``<name>-canary``, serving
    ``revision``, its worker group starting at one replica (the canary takes a slice, not the load)."""
    spec = copy.deepcopy(dict(stable.get("spec") or {}))
    raw = spec.get("serveConfigV2")
    doc = yaml.safe_load(raw) if isinstance(raw, str) else raw
    if not isinstance(doc, Mapping):
        raise ConfigError(f"RayService {stable.get('metadata', {}).get('name')!r} has no serveConfigV2 to revise")
    name = str((stable.get("metadata") or {}).get("name"))
    revised = revised_serve_config(doc, model=model, revision=revision, weights_sha256=weights_sha256)
    _canary_hint(_model_app(revised, model).get("args") or {}, name)
    spec["serveConfigV2"] = yaml.safe_dump(revised, sort_keys=False)
    for group in (spec.get("rayClusterConfig") or {}).get("workerGroupSpecs") or []:
        group["replicas"] = min(int(group.get("replicas", 1)), max(1, int(group.get("minReplicas", 1))), 1) or 1
        group["minReplicas"] = min(int(group.get("minReplicas", 1)), 1)
    return {"apiVersion": stable.get("apiVersion", "ray.io/v1"), "kind": "RayService",
            "metadata": _clean_meta(stable, canary_name(name)), "spec": spec}


def stable_ray_service(stable: Mapping[str, Any], *, model: str, revision: str,
                       weights_sha256: str | None) -> dict[str, Any]:
    """The deployed RayService serving ``revision``: only ``serveConfigV2`` changes, which KubeRay applies to the
    running Ray cluster (an in-place Serve update: no new cluster, no second set of nodes)."""
    out = copy.deepcopy(dict(stable))
    spec = out["spec"]
    raw = spec.get("serveConfigV2")
    doc = yaml.safe_load(raw) if isinstance(raw, str) else raw
    spec["serveConfigV2"] = yaml.safe_dump(revised_serve_config(doc, model=model, revision=revision,
                                                                weights_sha256=weights_sha256), sort_keys=False)
    meta = out.get("metadata") or {}
    for k in _SERVER_FIELDS:
        meta.pop(k, None)
    out.pop("status", None)
    return out


def canary_target_group(stable: Mapping[str, Any]) -> dict[str, Any]:
    """The canary serve Service's TargetGroupConfiguration, copied from the stable target's."""
    spec = copy.deepcopy(dict(stable.get("spec") or {}))
    ref = spec.setdefault("targetReference", {})
    service = str(ref.get("name", ""))
    if not service.endswith("-serve-svc"):
        raise ConfigError(f"TargetGroupConfiguration {stable.get('metadata', {}).get('name')!r} targets "
                          f"{service!r}, not a RayService's serve Service")
    ref["name"] = canary_name(service.removesuffix("-serve-svc")) + "-serve-svc"
    name = str((stable.get("metadata") or {}).get("name"))
    return {"apiVersion": stable.get("apiVersion"), "kind": stable.get("kind"),
            "metadata": _clean_meta(stable, canary_name(name.removesuffix("-serve")) + "-serve"), "spec": spec}


def _is_canary(service: str) -> bool:
    return service.removesuffix("-serve-svc").endswith(CANARY_SUFFIX)


def _base(service: str) -> str:
    return service.removesuffix("-serve-svc").removesuffix(CANARY_SUFFIX)


WEIGHTS_ANNOTATION = "eks-inference/configured-weights"
"""On a route a rollout re-weighted: each target's configured weight (JSON), so that every later stage, and the route
as configured at the end, is computed from config's weights rather than from an earlier stage's rounded ones."""
MAX_WEIGHT = 999
"""The AWS Load Balancer Controller refuses a backendRef weight above 999, the ALB's limit for a target group's weight
in a forward action (``pkg/gateway/routeutils/backend.go``, ``maxWeight``), though Gateway API allows 1,000,000."""


def configured_weights(route: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Per rule (by index, as a string), each stable target's configured weight: from the annotation a rollout left,
    else the route's own weights (a route no rollout touched)."""
    note = ((route.get("metadata") or {}).get("annotations") or {}).get(WEIGHTS_ANNOTATION)
    if note:
        return json.loads(note)  # type: ignore[no-any-return]
    out: dict[str, dict[str, int]] = {}
    for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        if any(_is_canary(str(r.get("name", ""))) for r in refs):
            raise ConfigError(f"HTTPRoute {route.get('metadata', {}).get('name')!r} has canary backends but no "
                              f"{WEIGHTS_ANNOTATION} annotation; apply the route as configured (cdk deploy) first")
        out[str(i)] = {_base(str(r.get("name", ""))): int(r.get("weight", 1)) for r in refs}
    return out


def _fit(weights: list[int]) -> list[int]:
    """The same proportions in whole numbers of at most :data:`MAX_WEIGHT`, a non-zero weight staying non-zero."""
    nonzero = [w for w in weights if w]
    if not nonzero:
        return weights
    g = math.gcd(*nonzero)
    out = [w // g for w in weights]
    top = max(out)
    if top > MAX_WEIGHT:
        out = [0 if w == 0 else max(1, round(w * MAX_WEIGHT / top)) for w in out]
    return out


def weighted_route(route: Mapping[str, Any], canary_percent: float) -> dict[str, Any]:
    """The model's HTTPRoute with ``canary_percent`` of each rule's requests on the canary backends and the rest on
    the stable ones, each processor keeping its configured share on either side.

    ``canary_percent`` 0 is the route exactly as the stack renders it (configured weights, no canary, no annotation);
    100 sends everything to the canary. Stable gets ``w × (1000 − c)`` and canary ``w × c`` (``c`` in tenths of a
    percent), reduced to at most :data:`MAX_WEIGHT` each.
    """
    if not 0 <= canary_percent <= 100:
        raise ConfigError(f"canary share {canary_percent!r} is not in [0, 100] percent")
    configured = configured_weights(route)
    out = copy.deepcopy(dict(route))
    tenth = round(canary_percent * 10)
    for i, rule in enumerate((out.get("spec") or {}).get("rules") or []):
        old = rule.get("backendRefs") or []
        port = next((r.get("port") for r in old if r.get("port") is not None), None)
        names: list[str] = []
        raw: list[int] = []
        for base, w in configured.get(str(i), {}).items():
            if tenth == 0:
                names.append(f"{base}-serve-svc")
                raw.append(w)
                continue
            if tenth < 1000:
                names.append(f"{base}-serve-svc")
                raw.append(w * (1000 - tenth))
            names.append(f"{canary_name(base)}-serve-svc")
            raw.append(w * tenth)
        weights = raw if tenth == 0 else _fit(raw)
        rule["backendRefs"] = [{"name": n, "port": port, "weight": w} for n, w in zip(names, weights, strict=True)]
    meta = out.setdefault("metadata", {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != WEIGHTS_ANNOTATION}
    if tenth:
        annotations[WEIGHTS_ANNOTATION] = json.dumps(configured, sort_keys=True, separators=(",", ":"))
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


def canary_share(route: Mapping[str, Any]) -> float:
    """The canary's share of the route's requests, in percent (first rule)."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return 0.0
    refs = rules[0].get("backendRefs") or []
    total = sum(int(r.get("weight", 1)) for r in refs)
    canary = sum(int(r.get("weight", 1)) for r in refs if _is_canary(str(r.get("name", ""))))
    return 100.0 * canary / total if total else 0.0
