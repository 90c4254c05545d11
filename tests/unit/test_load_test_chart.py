"""LoadTestChart: an Indexed Job of client pods per target and one report Job per run id."""

from __future__ import annotations

from eks_inference.config import LoadTestSpec
from tests.unit.k8s_support import config, render, validate_core


def jobs(env_changes: dict | None = None) -> dict[str, dict]:  # type: ignore[type-arg]
    _, _, load = render(config("dev", **(env_changes or {})))
    return {j["metadata"]["name"]: j for j in load if j["kind"] == "Job"}


def test_one_client_job_per_target_and_a_report_job() -> None:
    js = jobs()
    assert sorted(js) == ["loadtest-run-001-minilm-graviton", "loadtest-run-001-minilm-inferentia",
                          "loadtest-run-001-report"]
    for j in js.values():
        validate_core(j)


def test_clients_run_in_parallel_and_share_the_rate() -> None:
    j = jobs()["loadtest-run-001-minilm-graviton"]["spec"]
    assert j["completionMode"] == "Indexed" and j["completions"] == j["parallelism"] == 2
    assert j["backoffLimit"] == 0
    args = j["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["loadtest", "run"]
    assert args[args.index("--rates") + 1] == "50,100,200,400"  # run totals; each of 2 clients sends half
    assert args[args.index("--clients") + 1] == "2" and args[args.index("--client-index") + 1] == "$(CLIENT_INDEX)"
    assert args[args.index("--url") + 1] == (
        "http://minilm-graviton-serve-svc.eks-inference.svc.cluster.local:8000/minilm")
    out = args[args.index("--out") + 1]
    assert out == "s3://eks-inference-models-example/results/run-001/minilm-graviton/"
    env = {e["name"]: e for e in j["template"]["spec"]["containers"][0]["env"]}
    assert env["CLIENT_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    for flag, value in (("--instance-type", "c7g.2xlarge"), ("--processor", "graviton"), ("--nodes", "1")):
        assert args[args.index(flag) + 1] == value


def test_report_job_waits_for_every_client_file() -> None:
    args = jobs()["loadtest-run-001-report"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["loadtest", "report"]
    assert args[args.index("--wait-for") + 1] == "4"  # 2 clients x 2 targets
    assert args[args.index("--out") + 1] == "s3://eks-inference-models-example/results/run-001/report/"


def test_clients_accept_no_connections() -> None:
    _, _, load = render(config("dev"))
    (policy,) = [m for m in load if m["kind"] == "NetworkPolicy"]
    validate_core(policy)
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"eks-inference/role": "loadtest",
                                                            "eks-inference/run-id": "run-001"}


def test_load_test_pods_can_reach_the_serve_port() -> None:
    for j in jobs().values():
        labels = j["spec"]["template"]["metadata"]["labels"]
        assert labels["eks-inference/role"] == "loadtest"  # the NetworkPolicy admits this label on port 8000
        assert j["spec"]["template"]["spec"]["serviceAccountName"] == "loadtest"


def test_new_run_id_means_new_job_names_and_empty_run_id_means_no_jobs() -> None:
    assert all("run-002" in n for n in jobs({"loadtest": {"run_id": "run-002"}}))
    assert jobs({"loadtest": {"run_id": ""}}) == {}


def test_closed_loop_sweeps_concurrency() -> None:
    js = jobs({"loadtest": {"run_id": "closed-1", "mode": "closed", "concurrencies": [2, 8, 32], "clients": 2}})
    args = js["loadtest-closed-1-minilm-graviton"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--concurrencies") + 1] == "2,8,32"


def test_deadline_covers_every_step() -> None:
    spec = LoadTestSpec(run_id="x", rates=(1.0, 2.0, 3.0), duration_s=60, warmup_s=10)
    j = jobs({"loadtest": {"run_id": "x", "rates": [1, 2, 3], "duration_s": 60, "warmup_s": 10}})
    deadline = j["loadtest-x-minilm-graviton"]["spec"]["activeDeadlineSeconds"]
    assert deadline >= len(spec.rates) * (spec.duration_s + spec.warmup_s)


def test_job_arguments_are_accepted_by_the_real_cli() -> None:
    """The images run `eks-inference ARGS`; every Job's arguments must parse with this package's CLI."""
    from eks_inference.cli import build_parser

    parser = build_parser()
    for name, job in jobs().items():
        args = [a.replace("$(CLIENT_INDEX)", "1") for a in job["spec"]["template"]["spec"]["containers"][0]["args"]]
        ns = parser.parse_args(args)
        assert ns.func.__name__ == ("cmd_report" if name.endswith("report") else "cmd_run")
        if not name.endswith("report"):
            assert ns.clients == 2 and ns.client_index == 1 and ns.run_id == "run-001"
