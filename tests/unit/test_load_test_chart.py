"""LoadTestChart: an Indexed Job of client pods per target and one report Job per run id."""

from __future__ import annotations

from typing import Any

import pytest

from eks_inference.config import LoadTestSpec
from eks_inference.k8s.load_test_chart import DNS_LABEL_MAX, job_name
from tests.conftest import cdk_context
from tests.unit.k8s_support import config, render, validate_core

RUN = "run-001"


def loadtest(**changes: Any) -> dict[str, Any]:
    """dev's load-test block (which asks for no run) with a run id and ``changes``."""
    return {**cdk_context()["eks-inference:environments"]["dev"]["loadtest"], "run_id": RUN, **changes}


def jobs(**changes: Any) -> dict[str, dict[str, Any]]:
    """Jobs keyed by the ``eks-inference/target`` label (names end in a spec hash)."""
    _, _, load = render(config("dev", loadtest=loadtest(**changes)))
    return {j["metadata"]["labels"]["eks-inference/target"]: j for j in load if j["kind"] == "Job"}


def args_of(job: dict[str, Any]) -> list[str]:
    return list(job["spec"]["template"]["spec"]["containers"][0]["args"])


def test_dev_asks_for_no_run_so_a_first_deploy_runs_none() -> None:
    _, _, load = render(config("dev"))
    assert load == []


def test_one_client_job_per_target_and_a_report_job() -> None:
    js = jobs()
    assert sorted(js) == ["minilm-graviton", "minilm-inferentia", "report"]
    for target, j in js.items():
        validate_core(j)
        assert j["metadata"]["name"].startswith(f"loadtest-{RUN}-{target}-")


def test_job_names_carry_a_hash_of_their_spec() -> None:
    """Any change to a Job's spec is a new Job: its template is immutable once created."""
    before, after = jobs(), jobs(rates=[50, 100])
    for target in before:
        assert before[target]["metadata"]["name"] != after[target]["metadata"]["name"]
    assert jobs()["report"]["metadata"]["name"] == before["report"]["metadata"]["name"]  # deterministic


def test_job_names_fit_a_dns_label_with_the_largest_index() -> None:
    spec = {"completionMode": "Indexed", "completions": 100, "template": {}}
    name = job_name("loadtest-" + "r" * 32 + "-" + "m" * 42 + "-inferentia", spec)
    assert len(f"{name}-99") <= DNS_LABEL_MAX and not name.startswith("-")
    assert job_name("x" * 80, {"a": 1}) != job_name("x" * 80, {"a": 2})


def test_image_tokens_are_hashed_by_what_they_stand_for() -> None:
    """A built image's URI is a deploy-time token whose text never changes; the name follows its asset hash."""
    spec = {"template": {"image": "${Token[TOKEN.42]}"}}
    a = job_name("j", spec, {"${Token[TOKEN.42]}": "assethash-a"})
    b = job_name("j", spec, {"${Token[TOKEN.42]}": "assethash-b"})
    assert a != b


def test_clients_run_in_parallel_share_the_rate_wait_for_the_target_and_never_overwrite() -> None:
    j = jobs()["minilm-graviton"]["spec"]
    assert j["completionMode"] == "Indexed" and j["completions"] == j["parallelism"] == 2
    assert j["backoffLimit"] == 0 and "ttlSecondsAfterFinished" not in j
    args = args_of(jobs()["minilm-graviton"])
    assert args[:2] == ["loadtest", "run"]
    assert args[args.index("--rates") + 1] == "50,100,200,400"  # run totals; each of 2 clients sends half
    assert args[args.index("--clients") + 1] == "2" and args[args.index("--client-index") + 1] == "$(CLIENT_INDEX)"
    assert args[args.index("--wait-ready") + 1] == "1800" and "--skip-if-exists" in args
    assert args[args.index("--url") + 1] == (
        "http://minilm-graviton-serve-svc.eks-inference.svc.cluster.local:8000/minilm")
    assert args[args.index("--out") + 1] == f"s3://eks-inference-models-example/results/{RUN}/minilm-graviton/"
    env = {e["name"]: e for e in j["template"]["spec"]["containers"][0]["env"]}
    assert env["CLIENT_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    for flag, value in (("--instance-type", "c7g.2xlarge"), ("--processor", "graviton"), ("--nodes", "1")):
        assert args[args.index(flag) + 1] == value


def test_report_job_waits_for_every_client_file() -> None:
    args = args_of(jobs()["report"])
    assert args[:2] == ["loadtest", "report"]
    assert args[args.index("--wait-for") + 1] == "4"  # 2 clients x 2 targets
    assert args[args.index("--out") + 1] == f"s3://eks-inference-models-example/results/{RUN}/report/"


def test_deadlines_include_the_wait_for_the_target() -> None:
    js = jobs(ready_timeout_s=900, rates=[1, 2, 3], duration_s=60, warmup_s=10)
    client, report = js["minilm-graviton"]["spec"], js["report"]["spec"]
    assert client["activeDeadlineSeconds"] >= 900 + 3 * (60 + 10)
    assert args_of(js["report"])[args_of(js["report"]).index("--wait-timeout") + 1] == str(
        report["activeDeadlineSeconds"])


def test_ready_timeout_is_validated() -> None:
    from eks_inference.config import ConfigError

    with pytest.raises(ConfigError, match=r"loadtest.ready_timeout_s: -1 is outside 0..86400 s; use e.g. 1800"):
        LoadTestSpec(ready_timeout_s=-1)


def test_clients_run_in_their_own_namespace_whose_policies_the_serving_chart_owns() -> None:
    """GIVEN a run WHEN the charts render THEN the Jobs sit in the load-test namespace, which the serving chart creates
    with its policies (so they exist with or without a run), and the load-test chart adds no policy of its own."""
    _, serving, load = render(config("dev", loadtest=loadtest()))
    assert [m for m in load if m["kind"] == "NetworkPolicy"] == []
    namespaces = {m["metadata"]["name"]: m for m in serving if m["kind"] == "Namespace"}
    for j in jobs().values():
        ns = j["metadata"]["namespace"]
        assert ns == "eks-inference-loadtest" and namespaces[ns]["metadata"]["labels"][
            "eks-inference/serving-client"] == "true"  # what the models' policies admit on the serve port
        assert j["spec"]["template"]["spec"]["serviceAccountName"] == "loadtest"
    policies = {m["metadata"]["name"] for m in serving
                if m["kind"] == "NetworkPolicy" and m["metadata"]["namespace"] == "eks-inference-loadtest"}
    assert policies == {"default-deny", "dns", "aws", "to-models"}


def test_new_run_id_means_new_job_names_and_empty_run_id_means_no_jobs() -> None:
    assert all("run-002" in j["metadata"]["name"] for j in jobs(run_id="run-002").values())
    _, _, load = render(config("dev", loadtest=loadtest(run_id="")))
    assert load == []


def test_closed_loop_sweeps_concurrency() -> None:
    js = jobs(run_id="closed-1", mode="closed", concurrencies=[2, 8, 32], clients=2)
    args = args_of(js["minilm-graviton"])
    assert args[args.index("--concurrencies") + 1] == "2,8,32"


def test_job_arguments_are_accepted_by_the_real_cli() -> None:
    """The images run `eks-inference ARGS`; every Job's arguments must parse with this package's CLI."""
    from eks_inference.cli import build_parser

    parser = build_parser()
    for target, job in jobs().items():
        args = [a.replace("$(CLIENT_INDEX)", "1") for a in args_of(job)]
        _, unknown = parser.parse_known_args(args)
        if target != "report" and set(unknown) == {"--wait-ready", "1800", "--skip-if-exists"}:
            pytest.skip("this checkout's load-test CLI lacks --wait-ready/--skip-if-exists (the load tester's "
                        "change adds them); the charts already pass them")
        ns = parser.parse_args(args)
        assert ns.func.__name__ == ("cmd_report" if target == "report" else "cmd_run")
        if target != "report":
            assert ns.clients == 2 and ns.client_index == 1 and ns.run_id == RUN
            assert ns.wait_ready == 1800 and ns.skip_if_exists is True
