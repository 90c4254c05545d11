"""A family's members are compiled in the cluster when they are published: synth renders, per family target, a
CronJob running ``compile --serve-app APP --missing`` where the target's replicas run, valid for the cluster's
Kubernetes; ``publish --family`` prints the one command that runs them now. Also the family's disk budget in config."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import cdk8s
import pytest
import yaml

from eks_inference.compile.family import COMPILE_FAMILY_LABEL, SERVING_NAMESPACE, compile_now_command
from eks_inference.config import DEFAULT_COMPILE_SCHEDULE, ConfigError, parse_model
from eks_inference.k8s.compile_chart import (
    COMPILE_NAMESPACE,
    CRON_JOB_NAME_MAX,
    CompileChart,
    compile_job,
    cron_job_name,
    serve_app,
)
from eks_inference.k8s.serving_chart import COMPILE_TARGET_LABEL, ServingTarget
from eks_inference.serving.family import family_disk_budget
from eks_inference.serving.serve_config import model_repository_uris, render_serve_config
from tests.unit.k8s_support import REPOSITORY, render, validate_core
from tests.unit.test_family_config import FAMILY, dev_with_family


def compile_chart(**family: Any) -> tuple[list[ServingTarget], CompileChart]:
    targets, _, _ = render(dev_with_family(**family))
    return targets, CompileChart(cdk8s.App(), "compile", targets=targets, region="us-west-2")


def test_each_family_target_gets_a_valid_cron_job_compiling_its_missing_members() -> None:
    """GIVEN dev with a family on graviton and inferentia
    WHEN the compile chart renders
    THEN each family target has a CronJob, valid for the cluster's Kubernetes, that runs the compile step with the
    target's own serve-config application in --missing mode, one run at a time, on the family's schedule; the
    family gets no one-off Job, the single model keeps its own."""
    targets, chart = compile_chart()
    family_targets = {t.name: t for t in targets if t.model.family is not None}
    assert sorted(family_targets) == ["tenants-graviton", "tenants-inferentia"]
    crons = {c["metadata"]["labels"][COMPILE_TARGET_LABEL]: c for c in chart.cron_jobs}
    assert sorted(crons) == sorted(family_targets)
    assert not any(j["metadata"]["labels"][COMPILE_TARGET_LABEL] in family_targets for j in chart.jobs)
    assert sorted(o["kind"] for o in chart.to_json()) == ["CronJob", "CronJob", "Job", "Job"]
    for name, t in family_targets.items():
        cron = crons[name]
        validate_core(cron)
        spec = cron["spec"]
        assert spec["schedule"] == DEFAULT_COMPILE_SCHEDULE and spec["concurrencyPolicy"] == "Forbid"
        (container,) = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[:2] == ["compile", "--serve-app"] and "--missing" in args and "--model-id" not in args
        app = json.loads(args[2])
        assert app == serve_app(t) and app["args"]["family"]["memory_budget_bytes"] == 4 << 30
        assert app["args"]["compile_on_miss"] is False  # the replicas' own args: they never compile
        # a replica waiting for a member's artifact names this CronJob's pods and the command that runs it now
        hint = app["args"]["compile_hint"]
        assert f"{COMPILE_TARGET_LABEL}={name}" in hint and compile_now_command("tenants") in hint
        assert cron["metadata"]["name"] == f"compile-{name}" and cron["metadata"]["namespace"] == COMPILE_NAMESPACE
        pod_labels = spec["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert pod_labels[COMPILE_FAMILY_LABEL] == "tenants" and pod_labels[COMPILE_TARGET_LABEL] == name


def test_the_cron_jobs_pod_is_the_compile_jobs_pod_where_the_replicas_run() -> None:
    """GIVEN a family target
    WHEN its CronJob renders
    THEN its pod is exactly the one-off compile Job's pod for that target (service account with the compile role,
    restricted security context, image, node group, tolerations, one accelerator, scratch, environment, labels) but
    for the compile step's arguments and the family's label."""
    targets, chart = compile_chart()
    crons = {c["metadata"]["labels"][COMPILE_TARGET_LABEL]: c for c in chart.cron_jobs}
    for t in targets:
        if t.model.family is None:
            continue
        cron_pod = crons[t.name]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        job_pod = compile_job(t, region="us-west-2")["spec"]["template"]["spec"]
        (cron_c,), (job_c,) = cron_pod["containers"], job_pod["containers"]
        assert {k: v for k, v in cron_c.items() if k != "args"} == {k: v for k, v in job_c.items() if k != "args"}
        assert {k: v for k, v in cron_pod.items() if k != "containers"} == \
               {k: v for k, v in job_pod.items() if k != "containers"}
        # the same labels but the family's: the serving namespace's policies treat both pods alike
        # (tests/system/test_compile_network.py checks the compile Jobs' pods against them)
        cron_labels = dict(crons[t.name]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
        assert cron_labels.pop(COMPILE_FAMILY_LABEL) == "tenants"
        assert cron_labels == compile_job(t, region="us-west-2")["spec"]["template"]["metadata"]["labels"]
        worker = t.ray_service.workers[0].pod
        assert cron_pod["nodeSelector"] == dict(worker.node_selector) and cron_c["image"] == worker.image
        assert cron_pod["serviceAccountName"] == "compile" and cron_pod["automountServiceAccountToken"] is False


def test_the_schedule_is_the_familys_and_a_bad_one_is_one_line() -> None:
    _, chart = compile_chart(compile_schedule="0 * * * *")
    assert {c["spec"]["schedule"] for c in chart.cron_jobs} == {"0 * * * *"}
    for c in chart.cron_jobs:
        validate_core(c)
    assert parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "compile_schedule": "@hourly"}})
    with pytest.raises(ConfigError) as e:
        parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "compile_schedule": "every 5 minutes"}})
    assert list(e.value.errors) == [
        "model 'tenants' family compile_schedule: 'every 5 minutes' is not a cron schedule; write five fields "
        '(minute hour day-of-month month day-of-week) such as "*/5 * * * *", or @hourly']


def test_a_long_target_name_still_makes_a_cron_job_name_the_api_server_takes() -> None:
    """CronJob names are at most 52 characters (kubernetes pkg/apis/batch/validation/validation.go); the longest
    RayService name KubeRay takes is 47, so ``compile-`` plus it may not fit."""
    long = "t" * 38
    targets, _, _ = render(_with_family_named(long))
    (t,) = [t for t in targets if t.model.family is not None]
    name = cron_job_name(t)
    assert len(f"compile-{t.name}") > CRON_JOB_NAME_MAX >= len(name)
    assert name.startswith("compile-tttt") and name == cron_job_name(t)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)


def _with_family_named(name: str) -> Any:
    from eks_inference.config import ENVIRONMENTS_KEY
    from tests.conftest import cdk_context
    from tests.unit.k8s_support import config

    models = cdk_context()[ENVIRONMENTS_KEY]["dev"]["models"]
    return config("dev", models=[*models, {**FAMILY, "name": name, "processors": ["graviton"]}])


def test_publish_names_the_command_that_runs_the_cron_jobs_now(tmp_path: Path) -> None:
    """GIVEN the command ``publish --family`` prints
    WHEN bash runs it against a kubectl that answers as the API server would for the family's two CronJobs
    THEN it lists them by the label the chart puts on them, in the chart's namespace, and creates one Job from each,
    named within a DNS label."""
    _, chart = compile_chart()
    assert SERVING_NAMESPACE == COMPILE_NAMESPACE
    names = [c["metadata"]["name"] for c in chart.cron_jobs if c["metadata"]["labels"][COMPILE_FAMILY_LABEL] ==
             "tenants"]
    log = tmp_path / "calls"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text("#!/bin/sh\n"
                       f'printf "%s\\n" "$*" >> {log}\n'
                       f'case "$3" in get) echo "{" ".join(names)}";; esac\n')
    kubectl.chmod(0o755)
    command = compile_now_command("tenants")
    r = subprocess.run(["bash", "-c", command], env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    get, *creates = log.read_text().splitlines()
    assert get.startswith(f"-n {COMPILE_NAMESPACE} get cronjobs -l {COMPILE_FAMILY_LABEL}=tenants ")
    assert len(creates) == len(names) == 2
    for name, line in zip(names, creates, strict=True):
        ns, job = re.fullmatch(rf"-n (\S+) create job --from=cronjob/{name} ({name}-[0-9]+)", line).groups()
        assert ns == COMPILE_NAMESPACE and len(job) <= 63


def test_the_disk_budget_defaults_to_the_worker_pods_scratch_less_rays_share_and_reaches_the_replica() -> None:
    """GIVEN a family with and without a disk budget
    WHEN it parses and its serve config renders
    THEN the default is the worker pod's /tmp (its emptyDir's sizeLimit) less 2 GiB, the replica reads the same
    bytes from its args, and a budget over that or under 16 MiB is one line each."""
    _, manifests, _ = render(dev_with_family())
    (rs,) = [m for m in manifests if m["kind"] == "RayService" and m["metadata"]["name"] == "tenants-graviton"]
    (worker,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (tmp,) = [v for v in worker["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    scratch = int(tmp["emptyDir"]["sizeLimit"].removesuffix("Gi")) << 30
    spec = parse_model(FAMILY)
    assert spec.family.disk_budget_bytes == scratch - (2 << 30)
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    assert family_disk_budget(serve["applications"][0]["args"]) == spec.family.disk_budget_bytes

    small = parse_model({**FAMILY, "processors": ["cpu"], "family": {"memory_budget": "1GiB", "disk_budget": "3GiB"}})
    model_uri, artifact_uri = model_repository_uris(REPOSITORY, small)
    app = render_serve_config(small, small.processors[0], model_uri=model_uri, artifact_uri=artifact_uri)
    assert family_disk_budget(app["applications"][0]["args"]) == 3 << 30
    with pytest.raises(ConfigError) as e:
        parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "disk_budget": "7GiB"}})
    assert list(e.value.errors) == [
        "model 'tenants' family disk_budget: '7GiB' leaves less than 2 GiB of the worker pod's 8 GiB /tmp to Ray; use "
        "at most 6GiB"]
    with pytest.raises(ConfigError, match=r"family disk_budget: 'some' is not a size of at least 16 MiB"):
        parse_model({**FAMILY, "family": {"memory_budget": "4GiB", "disk_budget": "some"}})
    with pytest.raises(ConfigError, match=r"disk_budget_bytes: 0 is not a positive number of bytes"):
        family_disk_budget({"family": {"memory_budget_bytes": 1, "disk_budget_bytes": 0}})
    assert family_disk_budget({"family": {"memory_budget_bytes": 1}}) is None  # rendered before the bound existed


def test_checkov_passes_the_compile_chart_of_a_family(tmp_path: Path) -> None:
    """checkov's Kubernetes checks on the CronJobs and Jobs beside the serving chart's NetworkPolicies (which cover
    the compile pods' namespace), with only the skips each object carries."""
    from tests.unit.test_checkov import KUBERNETES_SKIPS, run_checkov

    targets, serving, _ = render(dev_with_family())
    chart = CompileChart(cdk8s.App(), "compile", targets=targets, region="us-west-2")
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all([*serving, *chart.to_json()]))
    run_checkov(tmp_path, "kubernetes", KUBERNETES_SKIPS)


def test_the_real_app_synthesizes_a_family_with_its_compile_cron_jobs(tmp_path: Path) -> None:
    """GIVEN dev with a family on graviton (dev's system nodes have room for one more Ray head)
    WHEN the real app synthesizes it (cdk-nag included: a finding without a reason fails synth)
    THEN the inference stack's compile manifest carries the family's CronJob beside the single model's Jobs."""
    from tests.conftest import Assembly, synth_variant

    def edit(env: dict[str, Any]) -> None:
        env["models"] = [*env["models"], {**FAMILY, "processors": ["graviton"]}]

    asm = Assembly(synth_variant(tmp_path / "dev", edit), "")
    (stack,) = [n for n in asm.stack_names if n.endswith("-Inference")]
    kinds: dict[str, list[str]] = {}
    for res in json.loads((asm.path / f"{stack}.template.json").read_text())["Resources"].values():
        manifest = res.get("Properties", {}).get("Manifest")
        if manifest is None:
            continue
        if isinstance(manifest, dict):  # Fn::Join around deploy-time tokens (image URIs, the bucket)
            manifest = "".join(p if isinstance(p, str) else "TOKEN" for p in manifest["Fn::Join"][1])
        for obj in json.loads(manifest):
            kinds.setdefault(obj["kind"], []).append(obj["metadata"]["name"])
    assert kinds["CronJob"] == ["compile-tenants-graviton"]
    assert sum(n.startswith("compile-minilm-") for n in kinds["Job"]) == 2
