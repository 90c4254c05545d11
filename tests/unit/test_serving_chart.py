"""ServingChart: RayService per model × processor, NetworkPolicy, PDB, ServiceAccounts — all schema-valid."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from eks_inference.config import RAY_VERSION, Processor
from eks_inference.k8s.serving_chart import NAMESPACE, compile_hint, serve_url
from eks_inference.serving.serve_config import model_repository_uris, render_serve_config
from tests.unit.k8s_support import REPOSITORY, config, crd_errors, crd_validator, render, validate_core


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.fixture(scope="module")
def dev() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    return render(config("dev"))


def test_one_ray_service_per_model_and_processor(dev) -> None:  # type: ignore[no-untyped-def]
    targets, manifests, _ = dev
    services = by_kind(manifests, "RayService")
    assert sorted(services) == ["minilm-graviton", "minilm-inferentia"]
    assert [t.name for t in targets] == ["minilm-graviton", "minilm-inferentia"]


def test_core_manifests_pass_kubernetes_validate_strict(dev) -> None:  # type: ignore[no-untyped-def]
    _, serving, load = dev
    core = [m for m in serving + load if m["kind"] != "RayService"]
    assert {m["kind"] for m in core} == {"Namespace", "ServiceAccount", "NetworkPolicy", "PodDisruptionBudget"}
    for m in core:
        validate_core(m)


def test_ray_services_match_the_kuberay_crd(dev) -> None:  # type: ignore[no-untyped-def]
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is None:
        pytest.skip("../shared/kuberay-v1.7.0/ray.io_rayservices.yaml is absent; cannot check the RayService CRD")
    for rs in by_kind(dev[1], "RayService").values():
        assert crd_errors(validator, rs) == []


def test_crd_check_rejects_a_misspelt_field(dev) -> None:  # type: ignore[no-untyped-def]
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is None:
        pytest.skip("KubeRay CRDs absent")
    rs = json.loads(json.dumps(by_kind(dev[1], "RayService")["minilm-graviton"]))
    rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replica"] = 2
    assert any("replica" in e for e in crd_errors(validator, rs))


def test_worker_groups_per_processor(dev) -> None:  # type: ignore[no-untyped-def]
    services = by_kind(dev[1], "RayService")
    grav = services["minilm-graviton"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    inf = services["minilm-inferentia"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert grav["template"]["spec"]["nodeSelector"] == {"eks-inference/processor": "graviton"}
    assert "tolerations" not in grav["template"]["spec"]
    assert inf["template"]["spec"]["nodeSelector"] == {"eks-inference/processor": "inferentia"}
    assert inf["template"]["spec"]["tolerations"] == [
        {"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}]
    res = inf["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["aws.amazon.com/neuroncore"] == res["requests"]["aws.amazon.com/neuroncore"] == 1
    # The Ray autoscaler reads custom resources only from rayStartParams, so neuron_cores is declared there too,
    # equal to the limit and single-quoted (bare JSON loses its quotes in bash; tests/system/test_ray_start.py
    # runs the whole command line and asks Ray's autoscaler what each group offers).
    assert inf["rayStartParams"]["resources"] == """'{"neuron_cores":1}'"""
    assert "resources" not in grav["rayStartParams"]


def test_heads_run_no_replicas_and_land_on_matching_architecture(dev) -> None:  # type: ignore[no-untyped-def]
    services = by_kind(dev[1], "RayService")
    for name, rs in services.items():
        head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]
        assert head["rayStartParams"]["num-cpus"] == "0"
        selector = head["template"]["spec"]["nodeSelector"]["eks-inference/processor"]
        # dev's system nodes are x86 (m7i): the x86 Inferentia image's head goes there, the arm64 one cannot.
        assert selector == ("graviton" if name.endswith("graviton") else "system")


def test_ray_version_and_upgrade_strategy(dev) -> None:  # type: ignore[no-untyped-def]
    for rs in by_kind(dev[1], "RayService").values():
        assert rs["spec"]["rayClusterConfig"]["rayVersion"] == RAY_VERSION
        assert rs["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_serve_config_is_the_one_render_serve_config_returns(dev) -> None:  # type: ignore[no-untyped-def]
    targets, manifests, _ = dev
    services = by_kind(manifests, "RayService")
    for t in targets:
        model_uri, artifact_uri = model_repository_uris(REPOSITORY, t.model)
        expected = render_serve_config(t.model, t.processor, model_uri=model_uri, artifact_uri=artifact_uri,
                                       compile_on_miss=False, compile_hint=compile_hint(t.name))
        assert yaml.safe_load(services[t.name]["spec"]["serveConfigV2"]) == expected
        app = expected["applications"][0]
        assert app["args"]["model_uri"] == f"{REPOSITORY}/models/minilm/v1"
        assert app["route_prefix"] == "/minilm"


def test_every_container_is_restricted_with_requests_and_limits(dev) -> None:  # type: ignore[no-untyped-def]
    _, serving, load = dev
    pods = []
    for rs in by_kind(serving, "RayService").values():
        rc = rs["spec"]["rayClusterConfig"]
        pods += [rc["headGroupSpec"]["template"]] + [w["template"] for w in rc["workerGroupSpecs"]]
    pods += [j["spec"]["template"] for j in by_kind(load, "Job").values()]
    assert len(pods) == 4  # dev asks for no load-test run; test_load_test_chart covers the Jobs' pods
    for pod in pods:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(
                c["resources"]["limits"])


def policies_in(manifests: list[dict[str, Any]], namespace_: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m["spec"] for m in manifests
            if m["kind"] == "NetworkPolicy" and m["metadata"]["namespace"] == namespace_}


def test_target_policies_admit_clients_by_namespace_and_the_operator_only_to_the_head(  # type: ignore[no-untyped-def]
        dev) -> None:
    """GIVEN dev WHEN rendered THEN a RayService's pods admit their own RayService on every port, client namespaces
    (by a namespace label) on the serve port, the load-test namespace on the metrics port; only the head admits the
    KubeRay operator's pods, on the dashboard and serve ports. (What these admit in a cluster:
    tests/system/test_network_policies.py.)"""
    pols = policies_in(dev[1], NAMESPACE)
    own = {"eks-inference/service": "minilm-graviton"}
    pol = pols["minilm-graviton-ingress"]
    assert pol["podSelector"] == {"matchLabels": own} and pol["policyTypes"] == ["Ingress", "Egress"]
    same, serve, metrics = pol["ingress"]
    assert same == {"from": [{"podSelector": {"matchLabels": own}}]}
    assert serve == {"from": [{"podSelector": {"matchLabels": {}},
                               "namespaceSelector": {"matchLabels": {"eks-inference/serving-client": "true"}}}],
                     "ports": [{"protocol": "TCP", "port": 8000}]}
    # the metrics port: the load-test namespace here; in a stack also the managed scraper's subnets
    assert metrics == {"from": [{"podSelector": {"matchLabels": {}}, "namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "eks-inference-loadtest"}}}],
        "ports": [{"protocol": "TCP", "port": 8080}]}
    assert pol["egress"] == [{"to": [{"podSelector": {"matchLabels": own}}]}]
    head = pols["minilm-graviton-head"]
    assert head["podSelector"] == {"matchLabels": {**own, "eks-inference/ray-role": "head"}}
    (operator,) = head["ingress"]
    assert operator == {"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}}}],
        "ports": [{"protocol": "TCP", "port": 8265}, {"protocol": "TCP", "port": 8000}]}
    (api,) = head["egress"]
    assert api["ports"] == [{"protocol": "TCP", "port": 443}]


def test_both_namespaces_deny_by_default_and_allow_dns_and_aws_out(dev) -> None:  # type: ignore[no-untyped-def]
    for ns in (NAMESPACE, "eks-inference-loadtest"):
        pols = policies_in(dev[1], ns)
        assert pols["default-deny"] == {"podSelector": {"matchLabels": {}}, "policyTypes": ["Ingress", "Egress"],
                                        "ingress": [], "egress": []}
        assert pols["dns"]["egress"] == [{"to": [{"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                                                  "namespaceSelector": {"matchLabels": {
                                                      "kubernetes.io/metadata.name": "kube-system"}}}],
                                          "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]
        identity, s3 = pols["aws"]["egress"]
        assert identity["to"] == [{"ipBlock": {"cidr": "169.254.170.23/32"}}]
        assert s3["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in s3["to"][0]["ipBlock"]["except"]
    # Ray heads hold no AWS credentials: the AWS egress leaves them out
    assert policies_in(dev[1], NAMESPACE)["aws"]["podSelector"]["matchExpressions"] == [
        {"key": "eks-inference/ray-role", "operator": "NotIn", "values": ["head"]}]


def test_namespaces_enforce_pod_security(dev) -> None:  # type: ignore[no-untyped-def]
    namespaces = {m["metadata"]["name"]: m["metadata"]["labels"] for m in dev[1] if m["kind"] == "Namespace"}
    assert namespaces[NAMESPACE]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert namespaces[NAMESPACE]["pod-security.kubernetes.io/warn"] == "restricted"
    assert namespaces["eks-inference-loadtest"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_ray_services_turn_on_token_authentication(dev) -> None:  # type: ignore[no-untyped-def]
    """What KubeRay makes of it (the token in every Ray container): tests/system/test_ray_auth.py."""
    for rs in by_kind(dev[1], "RayService").values():
        assert rs["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}


def test_token_authentication_refuses_a_ray_too_old_or_one_that_locks_out_the_scraper(  # type: ignore[no-untyped-def]
        dev) -> None:
    import dataclasses

    from eks_inference.config import ConfigError

    rs = dev[0][0].ray_service
    with pytest.raises(ConfigError, match=r"ray_version: '2\.51\.0' has no token authentication .*; raise Ray"):
        dataclasses.replace(rs, ray_version="2.51.0")
    with pytest.raises(ConfigError, match=r"ray_version: '2\.61\.0' puts the metrics endpoint behind token auth"
                                          r".*or stay on Ray 2\.60"):
        dataclasses.replace(rs, ray_version="2.61.0")
    with pytest.raises(ConfigError, match=r"ray_version: '2\.x' is not a Ray release number"):
        dataclasses.replace(rs, ray_version="2.x")
    with pytest.raises(ConfigError, match=r"auth 'none' is not a KubeRay authOptions mode; use 'token'"):
        dataclasses.replace(rs, auth="none")
    assert dataclasses.replace(rs, ray_version="2.61.0", auth="disabled").to_dict()[
        "spec"]["rayClusterConfig"]["authOptions"] == {"mode": "disabled"}


def test_pdb_and_service_accounts(dev) -> None:  # type: ignore[no-untyped-def]
    pdb = by_kind(dev[1], "PodDisruptionBudget")["minilm-inferentia-workers"]["spec"]
    # dev runs one replica: the budget keeps it (tests/unit/test_gcs_fault_tolerance_chart.py has the rest)
    assert pdb == {"minAvailable": 1, "selector": {"matchLabels": {
        "eks-inference/service": "minilm-inferentia", "eks-inference/ray-role": "worker"}}}
    sas = by_kind(dev[1], "ServiceAccount")
    assert set(sas) == {"serve", "loadtest", "ray-head", "compile"}
    assert {n: sa["metadata"]["namespace"] for n, sa in sas.items()} == {
        "serve": NAMESPACE, "ray-head": NAMESPACE, "loadtest": "eks-inference-loadtest", "compile": NAMESPACE}
    for rs in by_kind(dev[1], "RayService").values():
        cluster = rs["spec"]["rayClusterConfig"]
        # The head's own account (KubeRay binds its autoscaler Role to it; no Pod Identity, no AWS credentials);
        # the workers keep the serving account that EKS Pod Identity maps to the S3 role.
        assert cluster["headGroupSpec"]["template"]["spec"]["serviceAccountName"] == "ray-head"
        assert cluster["workerGroupSpecs"][0]["template"]["spec"]["serviceAccountName"] == "serve"


def test_whole_node_unless_models_share_nodes() -> None:
    models = [{"name": "small-a", "processors": ["graviton"], "shares_node": True},
              {"name": "small-b", "processors": ["graviton"], "shares_node": True},
              {"name": "big", "processors": ["graviton"]}]
    groups = [dict(g, max_size=6) if g["name"] == "graviton" else g for g in config_dict("node_groups")]
    _, manifests, _ = render(config("dev", node_groups=groups, models=models))
    services = by_kind(manifests, "RayService")
    for name in ("small-a-graviton", "small-b-graviton"):
        spec = services[name]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
        assert "affinity" not in spec  # packed by their CPU requests, several per node
    big = services["big-graviton"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert big["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"


def test_gpu_target_requests_gpus() -> None:
    groups = [dict(g, enabled=True) if g["name"] == "gpu" else g for g in config_dict("node_groups")]
    _, manifests, _ = render(config("dev", node_groups=groups, models=[{"name": "bert", "processors": ["gpu"]}]))
    w = by_kind(manifests, "RayService")["bert-gpu"]["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert w["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "num-gpus" not in w["rayStartParams"]  # KubeRay derives it from the nvidia.com/gpu limit
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in w["template"]["spec"][
        "tolerations"]


def config_dict(key: str) -> Any:
    from tests.conftest import cdk_context

    return json.loads(json.dumps(cdk_context()["eks-inference:environments"]["dev"][key]))


def test_serve_url_points_at_the_kuberay_serve_service(dev) -> None:  # type: ignore[no-untyped-def]
    t = dev[0][0]
    assert serve_url(t.model, Processor.GRAVITON) == (
        "http://minilm-graviton-serve-svc.eks-inference.svc.cluster.local:8000/minilm")


def test_local_mode_runs_the_manifests_serving_shape(dev) -> None:  # type: ignore[no-untyped-def]
    """`eks-inference local --env dev` runs what the RayService carries, but for where it runs.

    The only differences allowed are the ones a laptop forces: weights come from the bundled package
    instead of S3, caches live in the project directory, the processor is this CPU and the proxy binds
    to 127.0.0.1, the replica bounds shrink to what this machine's CPUs hold, and the replica compiles on a miss
    (the user is the only identity here; in the cluster the compile Job does). Batching, autoscaling, queue limits,
    resources and the pinned weights digest are the manifest's.
    """
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "eks_inference.cli", "local", "--env", "dev", "--print-config"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    local = json.loads(proc.stdout)
    manifest = yaml.safe_load(by_kind(dev[1], "RayService")["minilm-graviton"]["spec"]["serveConfigV2"])
    placement = ("model_uri", "artifact_uri", "cache_dir", "processor", "s3_endpoint_url", "compile_on_miss",
                 "compile_hint")
    bounds = []
    for doc in (local, manifest):
        for key in placement:
            doc["applications"][0]["args"].pop(key)
        doc["http_options"].pop("host")
        scaling = doc["applications"][0]["deployments"][0]["autoscaling_config"]
        bounds.append(tuple(scaling.pop(k) for k in ("min_replicas", "initial_replicas", "max_replicas")))
    assert local == manifest
    serving = yaml.safe_load(by_kind(dev[1], "RayService")["minilm-graviton"]["spec"]["serveConfigV2"])
    threads = serving["applications"][0]["deployments"][0]["user_config"]["num_threads"]
    cpus = serving["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"]
    cap = max(1, int((os.cpu_count() or 1) // max(cpus, threads)))  # a replica keeps its threads' cores busy
    (lo, init, hi), (mlo, minit, mhi) = bounds
    assert (lo, init, hi) == (min(mlo, cap), min(minit, cap), min(mhi, cap))
