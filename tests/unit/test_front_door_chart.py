"""FrontDoorChart and the front_door config: a Gateway served by the AWS Load Balancer Controller as an ALB, one
HTTPRoute per model weighted across processors; every object valid against the upstream CRDs (Gateway API v1.6.0,
the controller's v3.5.0), which tests/data/crds keeps."""

from __future__ import annotations

import copy
import json
from typing import Any

import cdk8s
import pytest
import yaml

from eks_inference.config import ConfigError, FrontDoorSpec, LoadBalancerScheme, Processor
from eks_inference.k8s.front_door_chart import FrontDoorChart, front_door_url, plan_routes
from eks_inference.k8s.gateway_api import CRD_KINDS, compact_crd, installed_crds
from eks_inference.k8s.serving_chart import ServingChart, plan_targets
from eks_inference.serving.serve_config import render_serve_config
from tests.unit.k8s_support import (
    GATEWAY_API_CRDS,
    IMAGES,
    LBC_CRDS,
    REPOSITORY,
    config,
    crd_errors,
    crd_validator,
    gcs_store,
)

SUBNETS = ["subnet-0aaa", "subnet-0bbb", "subnet-0ccc"]
CERT = "arn:aws:acm:us-east-1:444455556666:certificate/0b6c8a1e-5f3d-4c2b-9a7e-2d1f4e6a8c90"
WAF = "arn:aws:wafv2:us-east-1:444455556666:regional/webacl/models/1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
VALIDATORS = {
    "GatewayClass": (GATEWAY_API_CRDS, "gateway.networking.k8s.io_gatewayclasses.yaml"),
    "Gateway": (GATEWAY_API_CRDS, "gateway.networking.k8s.io_gateways.yaml"),
    "HTTPRoute": (GATEWAY_API_CRDS, "gateway.networking.k8s.io_httproutes.yaml"),
    "LoadBalancerConfiguration": (LBC_CRDS, "gateway.k8s.aws_loadbalancerconfigurations.yaml"),
    "TargetGroupConfiguration": (LBC_CRDS, "gateway.k8s.aws_targetgroupconfigurations.yaml"),
    "ListenerRuleConfiguration": (LBC_CRDS, "gateway.k8s.aws_listenerruleconfigurations.yaml"),
}


def render_door(env_name: str, **changes: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    cfg = config(env_name, **changes)
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region, gcs_store=gcs_store(cfg))
    chart = FrontDoorChart(cdk8s.App(), "front-door", door=cfg.front_door, targets=targets, subnet_ids=SUBNETS)
    return targets, chart.manifests()


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_object_matches_its_upstream_crd(env_name: str) -> None:
    """GIVEN the shipped environment WHEN its front door renders THEN each object validates against its CRD's
    schema, unknown fields refused."""
    _, manifests = render_door(env_name)
    kinds = {m["kind"] for m in manifests}
    assert {"GatewayClass", "Gateway", "HTTPRoute", "LoadBalancerConfiguration", "TargetGroupConfiguration"} <= kinds
    for m in manifests:
        directory, name = VALIDATORS[m["kind"]]
        validator = crd_validator(name, m["apiVersion"].split("/")[1], directory=directory)
        assert validator is not None, name
        assert crd_errors(validator, m) == [], m["metadata"]["name"]


def test_the_crd_check_refuses_a_misspelt_field() -> None:
    _, manifests = render_door("prod")
    route = copy.deepcopy(of_kind(manifests, "HTTPRoute")[0])
    route["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 5
    validator = crd_validator("gateway.networking.k8s.io_httproutes.yaml", directory=GATEWAY_API_CRDS)
    assert validator is not None
    assert any("wieght" in e for e in crd_errors(validator, route))


def test_installed_crds_are_the_upstream_ones_without_descriptions() -> None:
    """The cluster gets exactly the release the checks read (compacted); regenerate eks_inference/k8s/
    gateway_api_crds.json from tests/data/crds when the release changes."""
    upstream = [compact_crd(yaml.safe_load((GATEWAY_API_CRDS / f"gateway.networking.k8s.io_{k}.yaml").read_text()))
                for k in CRD_KINDS]
    assert installed_crds() == upstream
    # Client-side apply keeps each object in an annotation of at most 256 KiB.
    assert max(len(json.dumps(c)) for c in installed_crds()) < 200_000


def test_dev_is_plain_http_and_internal() -> None:
    _, manifests = render_door("dev")
    (gw,) = of_kind(manifests, "Gateway")
    assert gw["spec"]["listeners"] == [{"name": "http", "protocol": "HTTP", "port": 80,
                                        "allowedRoutes": {"namespaces": {"from": "Same"}}}]
    (lbc,) = of_kind(manifests, "LoadBalancerConfiguration")
    assert lbc["spec"]["scheme"] == "internal"
    assert "listenerConfigurations" not in lbc["spec"]
    assert lbc["spec"]["loadBalancerSubnets"] == [{"identifier": s} for s in SUBNETS]


def test_prod_terminates_tls_with_its_certificate_and_checks_jwts() -> None:
    _, manifests = render_door("prod")
    (gw,) = of_kind(manifests, "Gateway")
    (listener,) = gw["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["hostname"]) == ("HTTPS", 443, "models.example.com")
    assert gw["spec"]["infrastructure"]["parametersRef"]["kind"] == "LoadBalancerConfiguration"
    (lbc,) = of_kind(manifests, "LoadBalancerConfiguration")
    assert lbc["spec"]["listenerConfigurations"] == [{
        "protocolPort": "HTTPS:443", "defaultCertificate": config("prod").front_door.certificate_arn,
        "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06"}]
    (jwt,) = of_kind(manifests, "ListenerRuleConfiguration")
    (action,) = jwt["spec"]["actions"]
    assert action["type"] == "jwt-validation"
    assert action["jwtValidationConfig"]["additionalClaims"] == [
        {"name": "scope", "format": "space-separated-values", "values": ["eks-inference/predict"]}]
    (route,) = of_kind(manifests, "HTTPRoute")
    assert route["spec"]["rules"][0]["filters"] == [{"type": "ExtensionRef", "extensionRef": {
        "group": "gateway.k8s.aws", "kind": "ListenerRuleConfiguration", "name": jwt["metadata"]["name"]}}]
    assert route["spec"]["hostnames"] == ["models.example.com"]


def test_routes_split_each_model_by_the_configured_weights() -> None:
    """GIVEN prod's routes (inferentia 80, graviton 20) THEN /minilm goes to both processors' KubeRay serve Services
    on the serve port with those weights."""
    _, manifests = render_door("prod")
    (route,) = of_kind(manifests, "HTTPRoute")
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/minilm"}}]
    assert sorted((b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]) == [
        ("minilm-graviton-serve-svc", 8000, 20), ("minilm-inferentia-serve-svc", 8000, 80)]


def test_a_model_without_a_route_splits_evenly() -> None:
    cfg = config("dev", front_door={"enabled": True})
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region)
    (route,) = plan_routes(cfg.front_door, targets)
    assert route.shares() == {"graviton": 50.0, "inferentia": 50.0}


def test_target_groups_check_the_models_health_route_on_pod_ips() -> None:
    """The health check asks what the serving app answers 200 only when it can predict (its route prefix and
    /healthz), so a group with no ready pod takes no traffic while another has some."""
    targets, manifests = render_door("prod")
    tgcs = {m["spec"]["targetReference"]["name"]: m["spec"]["defaultConfiguration"]
            for m in of_kind(manifests, "TargetGroupConfiguration")}
    assert sorted(tgcs) == ["minilm-graviton-serve-svc", "minilm-inferentia-serve-svc"]
    t = targets[0]
    serve = render_serve_config(t.model, t.processor, model_uri="s3://b/m", artifact_uri="s3://b/a")
    prefix = serve["applications"][0]["route_prefix"]
    for tgc in tgcs.values():
        assert tgc["targetType"] == "ip"
        assert tgc["healthCheckConfig"]["healthCheckPath"] == f"{prefix}/healthz"
        assert tgc["healthCheckConfig"]["matcher"] == {"httpCode": "200"}


def test_waf_and_source_ranges_when_configured() -> None:
    _, manifests = render_door("prod", front_door={
        "enabled": True, "certificate_arn": CERT, "scheme": "internet-facing", "waf_acl_arn": WAF,
        "source_cidrs": ["198.51.100.0/24"],
        "auth": {"jwt": {"issuer": "https://issuer.example.com", "jwks_endpoint": "https://issuer.example.com/jwks"}}})
    (lbc,) = of_kind(manifests, "LoadBalancerConfiguration")
    assert lbc["spec"]["scheme"] == "internet-facing"
    assert lbc["spec"]["wafV2"] == {"webACL": WAF}
    assert lbc["spec"]["sourceRanges"] == ["198.51.100.0/24"]


def test_serve_ports_admit_the_load_balancer_subnets() -> None:
    cfg = config("dev")
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region)
    chart = ServingChart(cdk8s.App(), "serving", targets=targets, api_server_cidrs=["10.0.0.0/16"],
                         front_door_cidrs=["10.0.96.0/19"])
    policy = next(m for m in chart.manifests() if m["metadata"]["name"] == "minilm-graviton-ingress")
    assert {"from": [{"ipBlock": {"cidr": "10.0.96.0/19"}}], "ports": [{"protocol": "TCP", "port": 8000}]} in \
        policy["spec"]["ingress"]


def test_front_door_url_needs_a_hostname() -> None:
    assert front_door_url(config("prod").front_door, "minilm") == "https://models.example.com/minilm"
    assert front_door_url(config("dev").front_door, "minilm") is None


# -- config --------------------------------------------------------------------------------------------------------

def test_plain_http_outside_dev_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        config("prod", front_door={"enabled": True})
    (line,) = [x for x in e.value.errors if "certificate_arn" in x]
    assert line == ("front_door.certificate_arn: not set in environment 'prod', and plain HTTP is allowed in dev only; "
                    "name an ACM certificate for the HTTPS listener")


def test_a_disabled_front_door_needs_nothing() -> None:
    assert config("prod", front_door={"enabled": False}).front_door == FrontDoorSpec()


@pytest.mark.parametrize(("door", "match"), [
    ({"enabled": True, "scheme": "internet-facing"}, r"front_door.auth: an internet-facing front door without"),
    ({"enabled": True, "scheme": "public"}, r"front_door.scheme: 'public' is not allowed; use one of internal"),
    ({"enabled": True, "certificate_arn": "my-cert"}, r"front_door.certificate_arn: 'my-cert' is not an ACM"),
    ({"enabled": True, "routes": {"minilm": {"gpu": 1}}}, r"front_door.routes.minilm: \{'gpu': 1\} gives every "
     r"processor the model serves weight 0; give one of graviton, inferentia a weight above 0"),
    ({"enabled": True, "routes": {"minilm": {"cpus": 1}}}, r"front_door.routes.minilm: 'cpus' is not a processor"),
    ({"enabled": True, "routes": {"minilm": {"graviton": 0, "inferentia": 0}}}, r"sends the model no traffic"),
    ({"enabled": True, "routes": {"minilm": {"graviton": -1}}}, r"front_door.routes.minilm.graviton: -1 is not a"),
    ({"enabled": True, "auth": {"jwt": {"issuer": "x", "jwks_endpoint": "https://x/jwks"}}},
     r"front_door.auth: JWT validation needs an HTTPS listener"),
    ({"enabled": True, "auth": {"jwt": {"issuer": "x", "jwks_endpoint": "http://x"}}}, r"jwks_endpoint: 'http://x'"),
    ({"enabled": True, "waf_acl_arn": "acl"}, r"front_door.waf_acl_arn: 'acl' is not a regional WAF"),
    ({"enabled": True, "hostname": "Models.Example"}, r"front_door.hostname: 'Models.Example' is not"),
    ({"enabld": True}, r"front_door: 'enabld' is not a known field"),
])
def test_each_mistake_is_named(door: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config("dev", front_door=door)


def test_every_mistake_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        config("prod", front_door={"enabled": True, "hostname": "BAD", "waf_acl_arn": "acl"})
    assert [x.split(":")[0] for x in e.value.errors] == ["front_door.hostname", "front_door.waf_acl_arn"]
    with pytest.raises(ConfigError) as e:
        config("prod", front_door={"enabled": True, "routes": {"minilm": {"gpu": 1}}})
    assert [x.split(":")[0] for x in e.value.errors] == ["front_door.certificate_arn", "front_door.routes.minilm"]


def test_routes_of_models_not_served_are_ignored() -> None:
    cfg = config("dev", front_door={"enabled": True, "routes": {"bert": {"graviton": 1}}})
    (model,) = cfg.models
    assert cfg.front_door.weights(model) == {Processor.GRAVITON: 1, Processor.INFERENTIA: 1}


def test_weights_of_a_processor_left_out_are_zero() -> None:
    cfg = config("prod")
    (model,) = cfg.models
    door = FrontDoorSpec(enabled=True, certificate_arn=CERT, routes={"minilm": {"inferentia": 5}})
    assert door.weights(model) == {Processor.GRAVITON: 0, Processor.INFERENTIA: 5}
    assert door.scheme is LoadBalancerScheme.INTERNAL


# -- load tests through the front door -------------------------------------------------------------------------------

DEV_ALB = "internal-k8s-eksinfer-frontdoo-0123456789.us-west-2.elb.amazonaws.com"


def test_in_cluster_runs_through_the_front_door_measure_each_models_route() -> None:
    """GIVEN via: front-door and the load balancer's name WHEN the run renders THEN one client Job per model sends to
    its route there, says so in its result (--via), and is priced as every target the route spreads over."""
    from tests.unit.k8s_support import render

    cfg = config("dev", front_door={"enabled": True, "hostname": DEV_ALB, "routes": {"minilm": {"graviton": 1}}},
                 loadtest={"run_id": "run-001", "via": "front-door"})
    targets, _, jobs = render(cfg)
    clients = [j for j in jobs if j["metadata"]["labels"]["eks-inference/target"] != "report"]
    (job,) = clients
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--url") + 1] == f"http://{DEV_ALB}/minilm"
    assert args[args.index("--via") + 1] == "front-door"
    assert args[args.index("--target-name") + 1] == "minilm-front-door"
    assert args[args.index("--placement") + 1] == ",".join(t.placement for t in targets)
    assert "--processor" not in args
    (report,) = [j for j in jobs if j["metadata"]["labels"]["eks-inference/target"] == "report"]
    report_args = report["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in report_args if a.endswith("/")][:1] == ["s3://eks-inference-models-example/results/run-001/"
                                                              "minilm-front-door/"]
    assert report_args[report_args.index("--wait-for") + 1] == str(cfg.loadtest.clients)


def test_in_cluster_runs_say_they_took_the_service_path() -> None:
    from tests.unit.k8s_support import render

    _, _, jobs = render(config("dev", loadtest={"run_id": "run-001"}))
    for job in jobs:
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[1] == "run":
            assert args[args.index("--via") + 1] == "service"
            assert args[args.index("--url") + 1].endswith("-serve-svc.eks-inference.svc.cluster.local:8000/minilm")


def test_load_test_namespace_may_reach_the_front_door() -> None:
    cfg = config("dev")
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region)
    chart = ServingChart(cdk8s.App(), "serving", targets=targets, api_server_cidrs=["10.0.0.0/16"],
                         front_door_cidrs=["10.0.96.0/19"])
    (policy,) = [m for m in chart.manifests() if m["metadata"]["name"] == "to-front-door"]
    assert policy["metadata"]["namespace"] == "eks-inference-loadtest"
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.0.96.0/19"}}],
                                         "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]}]


@pytest.mark.parametrize(("env_name", "door", "match"), [
    ("dev", {"enabled": True}, r"^loadtest.via: front-door needs front_door.enabled and front_door.hostname"),
    ("prod", None, r"^loadtest.via: front-door with front_door.auth: the in-cluster clients send no bearer token"),
])
def test_front_door_runs_need_a_reachable_unauthenticated_front_door(env_name: str, door: Any, match: str) -> None:
    changes: dict[str, Any] = {"loadtest": {"via": "front-door"}}
    if door is not None:
        changes["front_door"] = door
    with pytest.raises(ConfigError, match=match):
        config(env_name, **changes)


def test_an_unknown_path_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"loadtest.via: 'alb' is not a path to the models; use service or "
                                          r"front-door"):
        config("dev", loadtest={"via": "alb"})


def test_internal_load_balancer_subnets_are_the_lowest_free_blocks() -> None:
    """Below the metrics scraper's (the highest free /28s) and beside CDK's public /22s and private /18s."""
    from eks_inference.constructs.front_door_subnets import free_blocks

    used = ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22", "10.0.64.0/18", "10.0.128.0/18", "10.0.192.0/18"]
    assert free_blocks("10.0.0.0/16", used, 3) == ["10.0.12.0/27", "10.0.12.32/27", "10.0.12.64/27"]
    with pytest.raises(ConfigError, match=r"vpc_cidr: 10.0.0.0/16 has no 3 free /27 blocks for the front door"):
        free_blocks("10.0.0.0/16", ["10.0.0.0/17", "10.0.128.0/17"], 3)
