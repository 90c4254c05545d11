"""The trial's scheduled teardown: its stack as synthesized (cdk-nag, cfn-lint, checkov, least privilege) and its
function's logic against CloudFormation as moto serves it on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_cdk import App, Environment, Validations
from cdk_nag import AwsSolutionsChecks

from eks_inference.config import ConfigError
from eks_inference.constructs import trial_deadline_handler as fn
from eks_inference.constructs.trial_deadline import EVERY_MINUTES, parse_deadline
from eks_inference.stacks.trial_deadline_stack import TrialDeadlineStack
from tests.conftest import ROOT

DEADLINE = dt.datetime(2026, 12, 7, 13, 0, tzinfo=dt.UTC)
OTHERS = ["EksInference-dev-Inference", "EksInference-dev-Cluster", "EksInference-dev-Network"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("deadline")
    app = App(outdir=str(out), context={"aws:cdk:enable-path-metadata": True})
    stack = TrialDeadlineStack(app, "EksInference-dev-TrialDeadline", delete_first=OTHERS, deadline=DEADLINE,
                               env=Environment(account="111122223333", region="us-west-2"))
    stack.acknowledge_findings()
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # a cdk-nag finding without a written reason fails here
    path = out / "EksInference-dev-TrialDeadline.template.json"
    return path, json.loads(path.read_text())


def _of(t: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in t["Resources"].values() if r["Type"] == kind]


def test_the_schedule_starts_at_the_deadline_and_calls_the_function(template: tuple[Path, dict[str, Any]]) -> None:
    _, t = template
    (schedule,) = _of(t, "AWS::Scheduler::Schedule")
    p = schedule["Properties"]
    assert p["StartDate"] == "2026-12-07T13:00:00Z" and p["EndDate"] == "2026-12-07T19:00:00Z"
    assert p["ScheduleExpression"] == f"rate({EVERY_MINUTES} minutes)" and p["FlexibleTimeWindow"]["Mode"] == "OFF"
    (function,) = _of(t, "AWS::Lambda::Function")
    stacks = json.loads(function["Properties"]["Environment"]["Variables"]["STACKS"])
    assert stacks == [*OTHERS, "EksInference-dev-TrialDeadline"]  # reverse order of creation, itself last


def test_the_function_may_only_describe_and_delete_the_trials_stacks(template: tuple[Path, dict[str, Any]]) -> None:
    _, t = template
    statements = [s for pol in _of(t, "AWS::IAM::Policy") for s in pol["Properties"]["PolicyDocument"]["Statement"]]
    (stmt,) = [s for s in statements if "cloudformation:DeleteStack" in s["Action"]]
    assert sorted(stmt["Action"]) == ["cloudformation:DeleteStack", "cloudformation:DescribeStacks"]
    names = [json.dumps(r) for r in stmt["Resource"]]
    assert len(names) == 4 and all(":stack/" in n for n in names)
    assert all(any(f"/{s}/*" in n for n in names) for s in [*OTHERS, "EksInference-dev-TrialDeadline"])
    invoke = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke and all(s["Resource"] != "*" for s in invoke)
    (sched_role,) = [r for r in _of(t, "AWS::IAM::Role")
                     if "scheduler" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])]
    trust = sched_role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == "111122223333"


def test_the_stack_is_clean_for_cfn_lint_and_checkov(template: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from tests.unit.test_checkov import CLOUDFORMATION_SKIPS, run_checkov

    path, _ = template
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "cfn-lint"), str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tmp_path / path.name).write_text(path.read_text())
    run_checkov(tmp_path, "cloudformation", CLOUDFORMATION_SKIPS)


@pytest.mark.parametrize("value", ["tomorrow", "2026-12-07T13:00:00", ""])
def test_a_deadline_must_be_a_utc_time(value: str) -> None:
    with pytest.raises(ConfigError, match=r"trial_deadline: .* is not a UTC time; write it as YYYY-MM-DDTHH:MM:SSZ"):
        parse_deadline(value)
    assert parse_deadline("2026-12-07T13:00:00Z") == DEADLINE


_TOPIC = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})


def test_each_call_deletes_the_next_stack_in_order_itself_last(moto_s3_endpoint: str) -> None:
    """GIVEN the trial's stacks in CloudFormation (moto) WHEN the schedule calls the function again and again
    THEN each call deletes one stack, in the order given, and then there is nothing left."""
    cfn = boto3.client("cloudformation", endpoint_url=moto_s3_endpoint, region_name="us-west-2",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    names = [f"deadline-test-{n}" for n in ("inference", "cluster", "network", "self")]
    for name in reversed(names):
        cfn.create_stack(StackName=name, TemplateBody=_TOPIC)
    done = [fn.advance(cfn, names) for _ in range(5)]
    assert done[:4] == [f"deleting {n} (was CREATE_COMPLETE)" for n in names]
    assert done[4] == "nothing left to delete"
    assert all(fn.stack_status(cfn, n) in (None, "DELETE_COMPLETE") for n in names)


def test_a_stack_busy_with_another_operation_is_waited_for() -> None:
    """moto finishes every operation at once, so this one path uses a stand-in with CloudFormation's statuses."""
    class Busy:
        class exceptions:
            ClientError = Exception

        deleted: list[str] = []

        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            return {"Stacks": [{"StackStatus": {"a": "DELETE_IN_PROGRESS", "b": "CREATE_COMPLETE"}[StackName]}]}

        def delete_stack(self, StackName: str) -> None:
            self.deleted.append(StackName)

    busy = Busy()
    assert fn.advance(busy, ["a", "b"]) == "waiting: a is DELETE_IN_PROGRESS" and busy.deleted == []


def test_the_app_adds_the_teardown_when_a_trial_sets_a_deadline(tmp_path: Path) -> None:
    """GIVEN dev's context WHEN the app is built with ``-c trial_deadline`` THEN it has the stack, deployed before
    the network (and so destroyed after it) and deleting the other three; without it (every other synth in the
    suite) there is none, as build_app adds it only under that key."""
    from eks_inference.app_builder import build_app
    from eks_inference.config import read_project_context

    context = {**read_project_context(ROOT / "cdk.json"), "env": "dev"}
    trial = build_app(App(context={**context, "trial_deadline": "2026-12-07T13:00:00Z"},
                          outdir=str(tmp_path / "b")), checks=False)
    assert trial.trial_deadline is not None
    assert trial.trial_deadline in trial.network.dependencies
    assert trial.trial_deadline.deadline.stack_names == [*OTHERS, "EksInference-dev-TrialDeadline"]
