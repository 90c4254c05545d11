"""The front door: one Gateway per environment, served by the AWS Load Balancer Controller as an Application Load
Balancer, and one HTTPRoute per model that splits the model's requests across its processors by weight.

What the controller (v3.5.0, ``docs/guide/gateway/``) makes of each object:

- ``GatewayClass`` with ``controllerName: gateway.k8s.aws/alb``: its L7 controller takes the class's Gateways.
- ``Gateway``: one ALB; its ``infrastructure.parametersRef`` names the ``LoadBalancerConfiguration`` (same namespace)
  that sets the scheme, the subnets, the HTTPS listener's ACM certificate and TLS policy (certificates cannot come
  from ``certificateRefs``), the source ranges and the WAF web ACL.
- ``HTTPRoute``: listener rules; each ``backendRef`` becomes a target group and the rule forwards to them by weight.
  An ``ExtensionRef`` filter attaches a ``ListenerRuleConfiguration`` (here: the ``jwt-validation`` action).
- ``TargetGroupConfiguration`` (one per serve Service): ``ip`` targets (pod IPs, the VPC CNI) and the health check.

KubeRay fronts every RayService with ``<name>-serve-svc`` (``ray-operator/controllers/ray/utils/util.go``,
``GenerateServeServiceName``), whose endpoints are the pods with a Serve proxy: the route's backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.config import TLS_POLICY, FrontDoorSpec, ModelSpec, Processor
from eks_inference.k8s.objects import PART_OF, emit
from eks_inference.k8s.ray_service import SERVE_PORT
from eks_inference.k8s.rollout import weighted_route
from eks_inference.k8s.serving_chart import NAMESPACE, ROLLOUT_LABEL, ServingTarget

GATEWAY_API = "gateway.networking.k8s.io/v1"
LBC_API = "gateway.k8s.aws/v1"
CONTROLLER_NAME = "gateway.k8s.aws/alb"
GATEWAY_CLASS = "eks-inference-alb"
GATEWAY = "front-door"
LB_CONFIG = "front-door"
JWT_RULE = "front-door-jwt"
HEALTH_CHECK = {"interval_s": 10, "timeout_s": 5, "healthy": 2, "unhealthy": 2}
"""A target leaves its group after two failed checks 10 s apart (about 20 s) and comes back after two good ones."""
DEREGISTRATION_DELAY_S = 30
"""Longer than a replica's graceful shutdown (20 s): a draining pod finishes what it holds before the ALB forgets it."""


def serve_service(target_name: str) -> str:
    """KubeRay's serve Service of a RayService (``GenerateServeServiceName``)."""
    return f"{target_name}-serve-svc"


def health_check_path(model: ModelSpec) -> str:
    """The model's ``/healthz``: 200 once its weights are loaded and a forward is not stuck, 503 before and meanwhile
    (``eks_inference/serving/app.py``), so a target that cannot answer predictions takes none."""
    return f"/{model.name}/healthz"


@dataclass(frozen=True)
class Backend:
    """One processor's share of a model's route."""

    processor: Processor
    service: str
    weight: int


@dataclass(frozen=True)
class Route:
    """A model's route: every path under ``/{model}`` (predict, healthz, info, docs, openapi.json)."""

    model: str
    path_prefix: str
    backends: tuple[Backend, ...]

    def shares(self) -> dict[str, float]:
        """Each processor's share of the model's requests, in percent."""
        total = sum(b.weight for b in self.backends)
        return {b.processor.value: 100.0 * b.weight / total for b in self.backends}


def plan_routes(door: FrontDoorSpec, targets: Sequence[ServingTarget]) -> list[Route]:
    """Pure planning: each model's route and its backends' weights (config ``front_door.routes``)."""
    by_model: dict[str, list[ServingTarget]] = {}
    models: dict[str, ModelSpec] = {}
    for t in targets:
        by_model.setdefault(t.model.name, []).append(t)
        models[t.model.name] = t.model
    routes = []
    for name, ts in by_model.items():
        weights = door.weights(models[name])
        routes.append(Route(model=name, path_prefix=f"/{name}", backends=tuple(
            Backend(processor=t.processor, service=serve_service(t.name), weight=weights[t.processor]) for t in ts)))
    return routes


def _meta(name: str, namespace_: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**PART_OF, "app.kubernetes.io/component": "front-door"}}
    if namespace_:
        meta["namespace"] = namespace_
    return meta


def gateway_class() -> dict[str, Any]:
    return {"apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": _meta(GATEWAY_CLASS),
            "spec": {"controllerName": CONTROLLER_NAME}}


def load_balancer_configuration(door: FrontDoorSpec, *, subnet_ids: Sequence[str],
                                namespace_: str = NAMESPACE) -> dict[str, Any]:
    """The ALB's settings. Subnets are named rather than discovered by tags: internal in the private subnets,
    internet-facing in the public ones."""
    spec: dict[str, Any] = {
        "scheme": door.scheme.value,
        "loadBalancerSubnets": [{"identifier": s} for s in subnet_ids],
        # Headers that do not parse as HTTP are dropped at the load balancer rather than passed to the models.
        "loadBalancerAttributes": [{"key": "routing.http.drop_invalid_header_fields.enabled", "value": "true"}],
    }
    if door.https:
        spec["listenerConfigurations"] = [{"protocolPort": "HTTPS:443", "defaultCertificate": door.certificate_arn,
                                           "sslPolicy": TLS_POLICY}]
    if door.source_cidrs:
        spec["sourceRanges"] = list(door.source_cidrs)
    if door.waf_acl_arn:
        spec["wafV2"] = {"webACL": door.waf_acl_arn}
    return {"apiVersion": LBC_API, "kind": "LoadBalancerConfiguration", "metadata": _meta(LB_CONFIG, namespace_),
            "spec": spec}


def listener_name(door: FrontDoorSpec) -> str:
    return "https" if door.https else "http"


def gateway(door: FrontDoorSpec, *, namespace_: str = NAMESPACE) -> dict[str, Any]:
    """One listener: HTTPS on 443 (the certificate comes from the LoadBalancerConfiguration), or plain HTTP on 80
    where the environment may (dev). Routes attach from the serving namespace only."""
    listener: dict[str, Any] = {"name": listener_name(door), "protocol": "HTTPS" if door.https else "HTTP",
                                "port": 443 if door.https else 80,
                                "allowedRoutes": {"namespaces": {"from": "Same"}}}
    if door.hostname:
        listener["hostname"] = door.hostname
    return {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": _meta(GATEWAY, namespace_), "spec": {
        "gatewayClassName": GATEWAY_CLASS,
        "infrastructure": {"parametersRef": {"group": "gateway.k8s.aws", "kind": "LoadBalancerConfiguration",
                                             "name": LB_CONFIG}},
        "listeners": [listener],
    }}


def jwt_rule(door: FrontDoorSpec, *, namespace_: str = NAMESPACE) -> dict[str, Any] | None:
    """The ``jwt-validation`` action every route's rule carries (``ListenerRuleConfiguration``), or None."""
    if door.auth is None:
        return None
    config: dict[str, Any] = {"issuer": door.auth.issuer, "jwksEndpoint": door.auth.jwks_endpoint}
    if door.auth.scopes:
        config["additionalClaims"] = [{"name": "scope", "format": "space-separated-values",
                                       "values": list(door.auth.scopes)}]
    return {"apiVersion": LBC_API, "kind": "ListenerRuleConfiguration", "metadata": _meta(JWT_RULE, namespace_),
            "spec": {"actions": [{"type": "jwt-validation", "jwtValidationConfig": config}]}}


def http_route(route: Route, door: FrontDoorSpec, *, namespace_: str = NAMESPACE) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "PathPrefix", "value": route.path_prefix}}],
        "backendRefs": [{"name": b.service, "port": SERVE_PORT, "weight": b.weight} for b in route.backends],
    }
    if door.auth is not None:
        rule["filters"] = [{"type": "ExtensionRef", "extensionRef": {
            "group": "gateway.k8s.aws", "kind": "ListenerRuleConfiguration", "name": JWT_RULE}}]
    spec: dict[str, Any] = {"parentRefs": [{"name": GATEWAY, "sectionName": listener_name(door)}], "rules": [rule]}
    if door.hostname:
        spec["hostnames"] = [door.hostname]
    return {"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": _meta(route.model, namespace_), "spec": spec}


def target_group_configuration(target: ServingTarget, *, namespace_: str = NAMESPACE) -> dict[str, Any]:
    h = HEALTH_CHECK
    meta = _meta(f"{target.name}-serve", namespace_)
    if ROLLOUT_LABEL in target.ray_service.labels:  # a canary's, as the RayService it targets
        meta["labels"][ROLLOUT_LABEL] = target.ray_service.labels[ROLLOUT_LABEL]
    return {"apiVersion": LBC_API, "kind": "TargetGroupConfiguration", "metadata": meta, "spec": {
                "targetReference": {"name": serve_service(target.name)},
                "defaultConfiguration": {
                    "targetType": "ip",
                    "healthCheckConfig": {
                        "healthCheckPath": health_check_path(target.model), "healthCheckProtocol": "HTTP",
                        "healthCheckInterval": h["interval_s"], "healthCheckTimeout": h["timeout_s"],
                        "healthyThresholdCount": h["healthy"], "unhealthyThresholdCount": h["unhealthy"],
                        "matcher": {"httpCode": "200"}},
                    "targetGroupAttributes": [
                        {"key": "deregistration_delay.timeout_seconds", "value": str(DEREGISTRATION_DELAY_S)},
                        # Batching replicas answer at very different paces under load; the ALB sends each request
                        # to the target with the fewest in flight rather than in turn.
                        {"key": "load_balancing.algorithm.type", "value": "least_outstanding_requests"},
                    ]}}}


class RouteChart(Chart):
    """One model's HTTPRoute.

    Each model's route, and each target's TargetGroupConfiguration (:class:`TargetGroupChart`), is a manifest resource
    of its own in the stack, so that dropping a model or a processor deletes them (CloudFormation deletes the resource
    and the handler runs ``kubectl delete``): in one shared manifest they would stay behind, because
    ``kubectl apply --prune`` prunes only the kinds on kubectl's default allowlist, which has neither kind.
    """

    def __init__(self, scope: Construct, construct_id: str, *, route: Route, door: FrontDoorSpec,
                 targets: Sequence[ServingTarget], namespace_: str = NAMESPACE,
                 canaries: Sequence[ServingTarget] = (), canary_percent: float = 0.0) -> None:
        """:param canaries: the model's canaries, if it has a ``canary``: they get ``canary_percent`` of the route,
        each processor keeping its configured share on both sides (:func:`eks_inference.k8s.rollout.weighted_route`,
        as ``eks-inference rollout`` weights it)."""
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.route = route
        self.target_names = [t.name for t in [*targets, *canaries]]
        doc = http_route(route, door, namespace_=namespace_)
        if canaries:
            doc = weighted_route(doc, canary_percent)
        emit(self, "Route", doc)


class TargetGroupChart(Chart):
    """One target's TargetGroupConfiguration (see :class:`RouteChart` for why it is a chart of its own)."""

    def __init__(self, scope: Construct, construct_id: str, *, target: ServingTarget,
                 namespace_: str = NAMESPACE) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.target = target
        emit(self, "TargetGroup", target_group_configuration(target, namespace_=namespace_))


class FrontDoorChart(Chart):
    """The GatewayClass, the Gateway and its LoadBalancerConfiguration and the JWT rule (with ``auth``); each target's
    TargetGroupConfiguration is a :class:`TargetGroupChart` inside it, each model's HTTPRoute a :class:`RouteChart`.

    ``to_json()`` holds only the shared objects (cdk8s leaves nested charts out); :meth:`manifests` has all.

    :param door: the environment's ``front_door``.  :param targets: every model × processor served.
    :param subnet_ids: where the load balancer goes (its own subnets for ``internal``, the public ones for
        ``internet-facing``).
    :param canaries: the canaries of models with a ``canary``
        (:func:`~eks_inference.k8s.serving_chart.plan_canaries`): each gets a TargetGroupConfiguration like its
        target's, and its model's route gives them ``canary_percent`` (config ``rollout.canary_percent``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, door: FrontDoorSpec, targets: Sequence[ServingTarget],
                 subnet_ids: Sequence[str], namespace_: str = NAMESPACE, canaries: Sequence[ServingTarget] = (),
                 canary_percent: float = 0.0) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.routes = plan_routes(door, targets)
        emit(self, "GatewayClass", gateway_class())
        emit(self, "LoadBalancerConfiguration", load_balancer_configuration(door, subnet_ids=subnet_ids,
                                                                            namespace_=namespace_))
        emit(self, "Gateway", gateway(door, namespace_=namespace_))
        rule = jwt_rule(door, namespace_=namespace_)
        if rule is not None:
            emit(self, "JwtRule", rule)
        self.target_group_charts = [
            TargetGroupChart(self, f"{_pascal(t.name)}TargetGroup", target=t, namespace_=namespace_)
            for t in [*targets, *canaries]]
        self.route_charts = [
            RouteChart(self, f"{_pascal(r.model)}Route", route=r, door=door, namespace_=namespace_,
                       targets=[t for t in targets if t.model.name == r.model],
                       canaries=[c for c in canaries if c.model.name == r.model], canary_percent=canary_percent)
            for r in self.routes]

    def manifests(self) -> list[dict[str, Any]]:
        return [*self.to_json(), *(m for c in [*self.target_group_charts, *self.route_charts] for m in c.to_json())]


def _pascal(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("-"))


def front_door_url(door: FrontDoorSpec, model: str) -> str | None:
    """The model's base URL at the front door, when the environment names the host (else known only after deploy)."""
    if not door.hostname:
        return None
    return f"{'https' if door.https else 'http'}://{door.hostname}/{model}"
