"""`eks_inference.summary` reads a real synthesized cloud assembly and shows what a reviewer checks.

Every expected value comes from the environment's config (the same cdk.json block, with the synth's account and
region), never from a figure written here.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from eks_inference.config import ENVIRONMENTS_KEY, PlatformConfig, load_config, worker_pod_requests
from eks_inference.serving.serve_config import ADMISSION_SPARE, BURST_QUEUE_FACTOR, INDEX_APP_NAME
from eks_inference.summary import main, render, summarize
from tests.conftest import OWN_ACCOUNT, OWN_REGION, RUN_ID, Assembly, cdk_context


@pytest.fixture(scope="module")
def config() -> PlatformConfig:
    """The dev environment as the synth saw it: `-c account=... -c region=...` replace the block's values."""
    envs = cdk_context()[ENVIRONMENTS_KEY]
    return load_config("dev", {**envs, "dev": {**envs["dev"], "account": OWN_ACCOUNT, "region": OWN_REGION}})


def test_summary_reports_what_the_config_asked_for(own_account_assembly: Assembly, config: PlatformConfig) -> None:
    s = summarize(own_account_assembly.path)
    assert (s.environment, s.account, s.region) == ("dev", OWN_ACCOUNT, OWN_REGION)
    assert s.zones == list(config.availability_zones)
    assert s.nat_gateways == config.nat_gateways and s.s3_gateway_endpoint
    assert s.vpc_cidr == config.vpc_cidr and s.flow_log_retention_days == config.log_retention_days
    assert (s.endpoint_public, s.endpoint_private) == (True, True)
    assert s.public_access_cidrs == list(config.public_access_cidrs)
    assert s.secrets_encrypted and len(s.control_plane_logs) == 5
    assert {b["encryption"] for b in s.buckets} == {"KMS", "S3-managed"}
    assert any(b["output"] == "ModelRepositoryUri" and b["versioned"] for b in s.buckets)

    groups = {g["processor"]: g for g in s.node_groups}
    for spec in config.enabled_node_groups:
        g = groups[spec.processor_label]
        assert g["instances"] == ", ".join(spec.instance_types)
        desired = spec.desired_size if spec.desired_size is not None else spec.min_size
        assert g["size"] == f"{spec.min_size}..{spec.max_size} (desired {desired})"

    images = {im["image"]: im for im in s.images}
    # A load-test image only with a run (test_summary_of_a_load_test_run); the example ships without one.
    assert not config.loadtest.run_id and not s.jobs
    assert set(images) == {p.value for m in config.models for p in m.processors}
    assert images["graviton"]["built_from"] == "model_images/graviton/Dockerfile (linux/arm64)"
    assert images["graviton"]["uri"].startswith(f"{OWN_ACCOUNT}.dkr.ecr.{OWN_REGION}.amazonaws.com/")

    services = {r.name: r for r in s.ray_services}
    for model in config.models:
        for processor in model.processors:
            r = services[f"{model.name}-{processor.value}"]
            (d,) = r.deployments
            serving = model.serving
            lo, hi = serving.replicas
            scaling = d["autoscaling_config"]
            assert (scaling["min_replicas"], r.workers, r.min_workers) == (lo,) * 3
            assert scaling["max_replicas"] == r.max_workers == hi
            assert d["user_config"]["max_batch_size"] == serving.max_batch_size
            assert d["user_config"]["batch_wait_timeout_s"] == serving.batch_wait_timeout_s
            assert d["user_config"]["num_threads"] == serving.num_threads
            assert d["application"] == model.name
            assert r.applications == [model.name, INDEX_APP_NAME]  # the route index has no replicas to size
            req = worker_pod_requests(serving, processor)
            devices = {"aws.amazon.com/neuroncore": req.neuron_cores, "nvidia.com/gpu": req.gpus}
            assert r.worker_requests == {"cpu": str(req.cpu), "memory": f"{req.memory_gib}Gi",
                                         **{k: n for k, n in devices.items() if n}}
            # The replica sheds load above its own limit; Serve's limits sit above it as a backstop.
            limit = serving.max_ongoing_requests + serving.max_queued_requests
            assert d["replica_limit"] == limit
            assert (d["max_ongoing_requests"], d["max_queued_requests"]) == (limit + ADMISSION_SPARE,
                                                                             BURST_QUEUE_FACTOR * limit)


def test_summary_of_a_load_test_run(run_assembly: Assembly) -> None:
    """dev with a load-test run: the load-test image (built for amd64) and the run's Jobs, named after the run."""
    s = summarize(run_assembly.path)
    images = {im["image"]: im for im in s.images}
    assert images["loadtest"]["built_from"] == "model_images/loadtest/Dockerfile (linux/amd64)"
    targets = [r.name for r in s.ray_services]
    assert len(s.jobs) == len(targets) + 1
    for stem in [*targets, "report"]:  # Job names end in a hash of their spec
        assert len([j for j in s.jobs if re.fullmatch(f"loadtest-{RUN_ID}-{stem}-[0-9a-f]{{8}}", j)]) == 1, s.jobs


def test_summary_prints_it_compactly(own_account_assembly: Assembly, config: PlatformConfig) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([str(own_account_assembly.path)]) == 0
    text = out.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) <= 40, text
    head = "\n".join(lines[:4])
    assert f"account {OWN_ACCOUNT} · region {OWN_REGION}" in head
    assert ", ".join(config.availability_zones) in head and "1 NAT gateway" in head
    assert f"API endpoint public from {config.public_access_cidrs[0]}, and private" in text
    assert "ModelRepositoryUri" in text and "model_images/inferentia2/Dockerfile (linux/amd64)" in text
    s = config.models[0].serving
    row = next(ln for ln in lines if ln.startswith(f"{config.models[0].name}-graviton"))
    assert f"{s.max_batch_size} / {s.batch_wait_timeout_s * 1000:g} ms / {s.max_seq_length}" in row
    limit = s.max_ongoing_requests + s.max_queued_requests
    assert f"{limit} · {limit + ADMISSION_SPARE} / {BURST_QUEUE_FACTOR * limit}" in row
    assert s.dtype.value in row


def test_summary_of_the_private_prod_environment(assemblies: dict[str, Assembly]) -> None:
    prod = load_config("prod", cdk_context()[ENVIRONMENTS_KEY])
    s = summarize(assemblies["prod"].path)
    assert (s.endpoint_public, s.endpoint_private, s.nat_gateways) == (False, True, prod.nat_gateways)
    assert s.zones == list(prod.availability_zones)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        render(s)
    assert "API endpoint private only (from the VPC)" in out.getvalue()


def test_summary_without_an_assembly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "no manifest.json; run `cdk synth` first" in capsys.readouterr().err

