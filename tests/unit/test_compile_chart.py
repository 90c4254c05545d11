"""CompileChart: one Job per serving target that compiles what its replicas load, under the compile service account."""

from __future__ import annotations

import json
from typing import Any

import cdk8s
import pytest

from eks_inference.config import Processor
from eks_inference.k8s.compile_chart import (
    COMPILE_SERVICE_ACCOUNT,
    WAIT_FOR_WEIGHTS_S,
    CompileChart,
    serve_app,
)
from eks_inference.k8s.serving_chart import COMPILE_TARGET_LABEL, ServingTarget, plan_targets
from eks_inference.serving.serve_config import parse_app_args
from tests.conftest import cdk_context
from tests.unit.k8s_support import IMAGES, REPOSITORY, config, validate_core


def chart(**changes: Any) -> tuple[list[ServingTarget], CompileChart]:
    cfg = config("dev", **changes)
    targets = plan_targets(cfg, images=IMAGES, repository_uri=REPOSITORY, region=cfg.region)
    return targets, CompileChart(cdk8s.App(), "compile", targets=targets, region=cfg.region)


def jobs(**changes: Any) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["labels"][COMPILE_TARGET_LABEL]: j for j in chart(**changes)[1].jobs}


def test_one_valid_job_per_target_running_the_compile_step_for_that_targets_serve_config() -> None:
    """GIVEN dev's two targets
    WHEN the compile chart renders
    THEN each target has a Job, valid for the cluster's Kubernetes, whose command compiles exactly the serve-config
    application that target's RayService carries, and waits for unpublished weights."""
    targets, c = chart()
    by_name = jobs()
    assert sorted(by_name) == ["minilm-graviton", "minilm-inferentia"]
    for t in targets:
        job = by_name[t.name]
        validate_core(job)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["eks-inference"]
        args = container["args"]
        assert args[:2] == ["compile", "--serve-app"] and json.loads(args[2]) == serve_app(t)
        assert args[args.index("--wait-for-weights") + 1] == str(WAIT_FOR_WEIGHTS_S)
        assert job["spec"]["activeDeadlineSeconds"] > WAIT_FOR_WEIGHTS_S
        (rs_app, _) = t.serve_config["applications"]
        assert json.loads(args[2])["args"] == rs_app["args"]
        assert json.loads(args[2])["user_config"] == rs_app["deployments"][0]["user_config"]
    assert sorted(o["kind"] for o in c.to_json()) == ["Job", "Job"]


def test_replicas_may_not_compile_and_name_the_job_that_does() -> None:
    """GIVEN the serve config every RayService carries
    WHEN its application args are parsed as a replica parses them
    THEN compiling on a miss is off, the weights digest is pinned as config says, and the replica's hint names the
    compile Job of its own target by the label the Job carries."""
    cfg = config("dev")
    targets, _ = chart()
    for t in targets:
        a = parse_app_args(t.serve_config["applications"][0]["args"])
        assert a.compile_on_miss is False
        assert a.weights_sha256 == cfg.models[0].weights_sha256 is not None
        assert a.compile_hint is not None and f"{COMPILE_TARGET_LABEL}={t.name}" in a.compile_hint
        assert jobs()[t.name]["spec"]["template"]["metadata"]["labels"][COMPILE_TARGET_LABEL] == t.name


def test_jobs_run_where_the_replicas_run_with_the_accelerator_their_check_needs() -> None:
    """GIVEN dev's graviton and inferentia targets
    WHEN the Jobs render
    THEN each runs the target's image on the target's node group under the compile service account, with the
    restricted security context, no service-account token and a single accelerator where the processor has one."""
    targets, _ = chart()
    for t in targets:
        worker = t.ray_service.workers[0].pod
        pod = jobs()[t.name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["serviceAccountName"] == COMPILE_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
        assert pod["nodeSelector"] == dict(worker.node_selector) and container["image"] == worker.image
        assert pod.get("tolerations", []) == [x.to_dict() for x in worker.tolerations]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["restartPolicy"] == "Never"
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc["allowPrivilegeEscalation"]
        limits = container["resources"]["limits"]
        expected = {Processor.INFERENTIA: {"aws.amazon.com/neuroncore": 1}, Processor.GRAVITON: {}}[t.processor]
        assert {k: v for k, v in limits.items() if k not in ("cpu", "memory")} == expected


@pytest.mark.parametrize("change", [
    {"weights_sha256": "0" * 64},
    {"serving": {"max_seq_length": 256}},
])
def test_new_weights_or_a_new_shape_is_a_new_job(change: dict[str, Any]) -> None:
    """GIVEN dev's model with a different pinned digest or serving shape
    WHEN the Jobs render
    THEN their names differ (a Job's template is immutable, and the new artifact has a new cache key), while the
    same config renders the same names."""
    entry = dict(cdk_context()["eks-inference:environments"]["dev"]["models"][0])
    model = {**entry, **change}
    if "serving" in change:
        model["serving"] = {**entry["serving"], **change["serving"]}
    after = jobs(models=[model])
    for name, job in jobs().items():
        assert after[name]["metadata"]["name"] != job["metadata"]["name"]
        assert jobs()[name]["metadata"]["name"] == job["metadata"]["name"]
