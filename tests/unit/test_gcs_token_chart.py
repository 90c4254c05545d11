"""The GCS token sync chart: a valid, restricted Job that may touch one Secret and reach the API server, named by what
it syncs, and a suspended CronJob of the same pod for rotations."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cdk8s
import yaml

from eks_inference.k8s.gcs_token_chart import ROLE, SERVICE_ACCOUNT, GcsTokenChart, GcsTokenSync
from eks_inference.k8s.objects import KUBERNETES_SERVICE_IPS
from eks_inference.k8s.ray_service import GCS_STORE_SECRET, GCS_STORE_SECRET_KEY, SERVICE_ACCOUNT_DIR
from eks_inference.k8s.serving_chart import NAMESPACE, ROLE_LABEL
from tests.system.pod_security import forbidden
from tests.unit.k8s_support import IMAGES, validate_core
from tests.unit.test_checkov import run_checkov

SECRET_ARN = "arn:aws:secretsmanager:us-west-2:111122223333:secret:GcsStoreAuthToken-AbCdEf"
SYNC = GcsTokenSync(secret_arn=SECRET_ARN, image=next(iter(IMAGES.values())), region="us-west-2",
                    node_selector={"eks-inference/processor": "system"})
CIDRS = ["10.0.64.0/18", "10.0.128.0/18"]


def render(sync: GcsTokenSync = SYNC) -> dict[str, dict[str, Any]]:
    chart = GcsTokenChart(cdk8s.App(), "gcs-token", sync=sync, api_server_cidrs=CIDRS)
    return {m["kind"]: m for m in chart.to_json()}


def test_every_object_is_valid_for_the_clusters_kubernetes() -> None:
    # GIVEN the chart WHEN rendered THEN each object passes kubernetes-validate --strict
    objects = render()
    assert set(objects) == {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Job", "CronJob"}
    for manifest in objects.values():
        validate_core(manifest)
        assert manifest["metadata"]["namespace"] == NAMESPACE


def test_the_job_copies_the_one_secret_into_the_secret_the_heads_read_and_prints_no_token() -> None:
    job = render()["Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "eks_inference.serving.gcs_token"]
    args = container["args"]
    assert args[args.index("--secret-id") + 1] == SECRET_ARN
    assert (args[args.index("--name") + 1], args[args.index("--key") + 1]) == (GCS_STORE_SECRET, GCS_STORE_SECRET_KEY)
    assert args[args.index("--namespace") + 1] == NAMESPACE
    assert container["image"] == SYNC.image
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    # The only API token in the pod is the one its container mounts where in-cluster clients look for it.
    assert pod["automountServiceAccountToken"] is False
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", SERVICE_ACCOUNT_DIR}
    assert pod["nodeSelector"] == {"eks-inference/processor": "system"}


def test_the_pod_meets_the_restricted_pod_security_standard() -> None:
    objects = render()
    for template in (objects["Job"]["spec"]["template"], objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]):
        assert forbidden(template.get("metadata", {}), template["spec"], "restricted") == []


def test_rbac_names_the_one_secret_for_everything_but_create() -> None:
    # GIVEN the Role WHEN read THEN get/update/patch name only the heads' Secret; create, which RBAC cannot narrow by
    # name, is the only verb without a name; nothing else (list, watch, delete) is granted
    role, binding = render()["Role"], render()["RoleBinding"]
    by_verbs = {tuple(r["verbs"]): r for r in role["rules"]}
    assert set(by_verbs) == {("get", "update", "patch"), ("create",)}
    assert by_verbs[("get", "update", "patch")]["resourceNames"] == [GCS_STORE_SECRET]
    assert all(r["resources"] == ["secrets"] and r["apiGroups"] == [""] for r in role["rules"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == ROLE


def test_its_pods_may_reach_the_api_server_on_443_and_admit_nothing() -> None:
    policy = render()["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == {ROLE_LABEL: ROLE}
    assert render()["Job"]["spec"]["template"]["metadata"]["labels"][ROLE_LABEL] == ROLE
    assert spec["ingress"] == []
    (rule,) = spec["egress"]
    assert rule["ports"] == [{"port": 443, "protocol": "TCP"}]
    assert {p["ipBlock"]["cidr"] for p in rule["to"]} == {*KUBERNETES_SERVICE_IPS, *CIDRS}


def test_the_job_is_named_by_what_it_syncs() -> None:
    # GIVEN the same sync twice, then another secret or image WHEN rendered THEN the same name, then another one
    name = render()["Job"]["metadata"]["name"]
    assert name.startswith(f"{ROLE}-") and len(name) <= 63
    assert render()["Job"]["metadata"]["name"] == name
    for other in (dataclasses.replace(SYNC, secret_arn=SECRET_ARN + "x"), dataclasses.replace(SYNC, image="x")):
        assert render(other)["Job"]["metadata"]["name"] != name


def test_the_cron_job_never_runs_on_its_own_and_runs_the_same_pod() -> None:
    objects = render()
    cron = objects["CronJob"]["spec"]
    assert cron["suspend"] is True
    assert cron["jobTemplate"]["spec"] == objects["Job"]["spec"]


def test_checkov_finds_nothing_in_the_chart(tmp_path: Path) -> None:
    # GIVEN the chart's objects WHEN checkov reads them THEN no failed check (its skips carry their reasons inline)
    (tmp_path / "gcs-token.yaml").write_text(yaml.safe_dump_all(list(render().values())))
    run_checkov(tmp_path, "kubernetes", {})
