"""``eks-inference trial``: the estimate and the budget gate, the steps' order, resume, and teardown on every way out.

The AWS and Kubernetes side is a recorder (tests/unit/trial_fakes.py); the orchestration, the state file and the CLI
are the real ones, and Ctrl-C is a real SIGINT to a real process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eks_inference.cli import main
from eks_inference.config import load_environment
from eks_inference.ops.trial import (
    EXIT_DONE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OVER_BUDGET,
    STEPS,
    Trial,
    TrialContext,
    estimate,
    over_budget,
)
from eks_inference.ops.trial_runner import (
    count_nodes,
    deploy_command,
    destroy_command,
    preflight_commands,
    publish_commands,
    report_command,
)
from tests.unit.trial_fakes import LOG_ENV, Killed, Recorder

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 12, 7, 10, 0, tzinfo=dt.UTC)


def _clock(step_minutes: float = 6) -> Iterator[dt.datetime]:
    t = T0
    while True:
        yield t
        t += dt.timedelta(minutes=step_minutes)


def _trial(runner: Recorder, run_dir: Path, *, hours: float = 3, clock: Iterator[dt.datetime] | None = None,
           out: list[str] | None = None) -> Trial:
    config = load_environment("dev", cdk_json=ROOT / "cdk.json")
    ctx = TrialContext(config=config, run_dir=run_dir, deadline=T0 + dt.timedelta(hours=hours), run_id="trial-x")
    ticks = clock or _clock()
    return Trial(runner, ctx, say=(out if out is not None else []).append, clock=lambda: next(ticks))


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "state.json").read_text())


def test_every_step_runs_once_in_order_then_the_teardown(tmp_path: Path) -> None:
    # GIVEN a runner that succeeds  WHEN the trial runs
    r, out = Recorder(), list[str]()
    rc = _trial(r, tmp_path, out=out).run()
    # THEN the steps ran in order, the stacks were destroyed, and the report and the hours used are printed
    assert rc == EXIT_DONE
    assert r.calls == [*STEPS, "destroy"]
    assert out[-1] == f"report: {tmp_path / 'report' / 'report.html'}"
    used = next(x for x in out if x.startswith("instance hours used"))
    assert "inf2.xlarge" in used and "m7i.large" in used and "On-Demand prices of" in used
    state = _state(tmp_path)
    assert state["steps"]["preflight"]["status"] == "done" and state["steps"]["fetch"]["status"] == "done"
    assert state["steps"]["deploy"]["status"] == "torn down" and state["teardowns"][0]["status"] == "done"


def test_instance_hours_count_each_sample_until_the_next(tmp_path: Path) -> None:
    trial = _trial(Recorder(), tmp_path, hours=48, clock=_clock(step_minutes=30))
    assert trial.run() == EXIT_DONE
    hours = trial.node_hours()
    # nodes appear with the deploy and are gone at the teardown's end; every clock reading is 30 minutes apart
    assert hours["inf2.xlarge"] > 0 and hours["m7i.large"] == pytest.approx(2 * hours["inf2.xlarge"])
    assert hours["inf2.xlarge"] * 60 % 30 == pytest.approx(0)


def test_a_failed_step_tears_down_and_a_resume_redoes_what_lived_in_the_stacks(tmp_path: Path) -> None:
    first, out = Recorder(fail_at="verify"), list[str]()
    assert _trial(first, tmp_path, out=out).run() == EXIT_FAILED
    assert first.calls == ["preflight", "deploy", "publish", "compile", "verify", "destroy"]
    assert any("verify failed on purpose; tearing down" in x for x in out)
    assert _state(tmp_path)["steps"]["verify"]["status"] == "failed"
    # WHEN run again with the same folder: preflight is skipped, the stacks are built again
    second, out = Recorder(), list[str]()
    assert _trial(second, tmp_path, out=out).run() == EXIT_DONE
    assert second.calls == ["deploy", "publish", "compile", "verify", "loadtest", "fetch", "destroy"]
    assert "[1/7] preflight: done before, skipped" in out


def test_a_failure_before_the_deploy_has_nothing_to_tear_down(tmp_path: Path) -> None:
    r, out = Recorder(fail_at="preflight"), list[str]()
    assert _trial(r, tmp_path, out=out).run() == EXIT_FAILED
    assert r.calls == ["preflight"] and "[teardown] nothing was deployed" in out


def test_a_process_that_died_mid_step_resumes_from_that_step(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        _trial(Recorder(kill_at="compile"), tmp_path).run()
    state = _state(tmp_path)
    assert state["steps"]["compile"]["status"] == "running" and not state["teardowns"]
    deadline = state["deadline"]
    again = Recorder()
    assert _trial(again, tmp_path, hours=9).run() == EXIT_DONE
    assert again.calls == ["compile", "verify", "loadtest", "fetch", "destroy"]
    assert _state(tmp_path)["deadline"] == deadline  # the stacks' scheduled teardown keeps its time


def test_a_passed_deadline_stops_before_the_next_step_and_tears_down(tmp_path: Path) -> None:
    r, out = Recorder(), list[str]()
    assert _trial(r, tmp_path, hours=0.75, clock=_clock(step_minutes=4), out=out).run() == EXIT_FAILED
    assert r.calls == ["preflight", "deploy", "publish", "destroy"]
    assert any("deadline" in x and "has passed before" in x for x in out)


def test_a_failed_teardown_says_what_still_removes_the_stacks(tmp_path: Path) -> None:
    out: list[str] = []
    assert _trial(Recorder(fail_destroy=True), tmp_path, out=out).run() == EXIT_FAILED
    assert any("teardown failed" in x and "scheduled teardown at 2026-12-07T13:00:00Z" in x for x in out)
    assert _state(tmp_path)["teardowns"][0]["status"] == "failed"


def test_the_estimate_names_every_group_and_the_budget_is_held_against_max_sizes() -> None:
    config = load_environment("dev", cdk_json=ROOT / "cdk.json")
    est = estimate(config, hours=3, transfer_gib=10)
    text = "\n".join(est.lines())
    for part in ("node group system: m7i.large, ON_DEMAND, 1 min / 2 desired / 3 max", "loadtest-clients",
                 "NAT gateways", "EKS control plane", "data: 10 GiB through NAT",
                 "load balancer (front door): an internal ALB, hourly charge, 1 min / 1 desired / 1 max at $0.0225/h"):
        assert part in text
    assert est.worst_usd == pytest.approx(est.cost.total(2) * 3 + 10 * 0.045)
    assert over_budget(est, est.worst_usd) is None
    refusal = over_budget(est, est.worst_usd - 0.01)
    assert refusal is not None and "exceeds --budget-usd" in refusal and "\n" not in refusal


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_dry_run_prints_the_plan_and_the_cost_and_creates_nothing(env: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trial", "--env", env, "--budget-usd", "1000", "--dry-run", "--app-dir", str(ROOT),
               "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0 and "estimate: $" in out and "dry run: nothing created" in out
    numbered = [line.split(":")[0].strip() for line in out.splitlines() if re.match(r"  \d+\. ", line)]
    assert numbered == [f"{i}. {step}" for i, step in enumerate(STEPS, 1)]
    assert "then destroy" in out
    assert not (tmp_path / "run").exists()


def test_over_budget_never_reaches_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(LOG_ENV, str(log))
    rc = main(["trial", "--env", "prod", "--budget-usd", "5", "--app-dir", str(ROOT),
               "--run-dir", str(tmp_path / "run"), "--runner", "tests.unit.trial_fakes:recording"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == EXIT_OVER_BUDGET and len(err) == 1 and "exceeds --budget-usd 5" in err[0]
    assert not log.exists() and not (tmp_path / "run").exists()


def test_bad_arguments_are_named_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trial", "--env", "dev", "--budget-usd", "-1", "--hours", "0", "--repeats", "0", "--dry-run",
               "--app-dir", str(ROOT)])
    err = capsys.readouterr().err
    assert rc == 2 and "--budget-usd: -1" in err and "--hours: 0" in err and "--repeats: 0" in err


def test_no_project_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trial", "--env", "dev", "--budget-usd", "10", "--app-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cdk.json: not found" in err[0]


def test_ctrl_c_tears_down(tmp_path: Path) -> None:
    """A real SIGINT to a real `eks-inference trial` process, its load test blocked until then."""
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, LOG_ENV: str(log), "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "eks_inference.cli", "trial", "--env", "dev", "--budget-usd", "100",
                             "--run-dir", str(tmp_path / "run"), "--runner", "tests.unit.trial_fakes:blocking"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        give_up = time.monotonic() + 120
        while not (log.exists() and '"loadtest"' in log.read_text()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < give_up, "the trial never reached its load test"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines()]
    assert proc.returncode == EXIT_INTERRUPTED, out
    assert steps == ["preflight", "deploy", "publish", "compile", "verify", "loadtest", "destroy"]
    assert "interrupted: tearing down" in out
    assert json.loads((tmp_path / "run" / "state.json").read_text())["steps"]["loadtest"]["status"] == "interrupted"


def test_the_real_commands_use_the_projects_cdk_and_carry_the_deadline(tmp_path: Path) -> None:
    config = load_environment("dev", cdk_json=ROOT / "cdk.json")
    ctx = TrialContext(config=config, run_dir=tmp_path, deadline=T0, run_id="trial-x", repeats=2)
    deploy = deploy_command(ROOT, ctx, run_id="trial-x-1")
    assert deploy[0] == str(ROOT / "node_modules" / ".bin" / "cdk") and "--all" in deploy
    assert "trial_deadline=2026-12-07T10:00:00Z" in deploy and "loadtest_run_id=trial-x-1" in deploy
    assert "trial_deadline=2026-12-07T10:00:00Z" in destroy_command(ROOT, ctx)
    (publish,) = publish_commands(ctx, "s3://b")
    assert publish[3:] == ["publish", "bundled:all-minilm-l6-v2", "--to", "s3://b", "--name", "minilm",
                           "--revision", "v1", "--task", "embedding"]
    synth, check = preflight_commands(ROOT, ctx)
    assert synth[1] == "synth" and "trial_deadline=2026-12-07T10:00:00Z" in synth
    assert check[-2:] == ["--assembly", str(tmp_path / "cdk.out")] and synth[-1] == check[-1]
    report = report_command(ctx, "s3://b", "spot")
    assert "s3://b/results/trial-x-1/" in report and "s3://b/results/trial-x-2/" in report and "spot" in report
    nodes = {"items": [{"metadata": {"labels": {"node.kubernetes.io/instance-type": t}}}
                       for t in ("m7i.large", "m7i.large", "inf2.xlarge")]}
    assert count_nodes(nodes) == {"m7i.large": 2, "inf2.xlarge": 1}


def test_a_deploy_can_start_a_load_test_run_without_editing_cdk_json() -> None:
    from eks_inference.config import ENVIRONMENTS_KEY, config_from_context, read_project_context

    context = {**read_project_context(ROOT / "cdk.json"), "env": "dev", "loadtest_run_id": "trial-x-1"}
    assert config_from_context(context).loadtest.run_id == "trial-x-1"
    assert config_from_context({ENVIRONMENTS_KEY: context[ENVIRONMENTS_KEY], "env": "dev"}).loadtest.run_id == ""
