"""A teardown that holds without the machine that started it: at a trial's deadline, delete its stacks.

``eks-inference trial`` tears down when it ends, fails or is interrupted, but a laptop that sleeps, loses its
network or runs out of battery ends nothing. So the deploy itself creates an EventBridge Scheduler schedule that
starts at the deadline and calls a small function every few minutes; each call deletes the next of the trial's
stacks, in reverse order of creation (:mod:`eks_inference.constructs.trial_deadline_handler`), the stack holding
the schedule last, which removes the schedule, the function and their roles with it.

What it cannot remove: what CloudFormation keeps by policy (a retained bucket or key, and log groups Lambda or EKS
create outside the stacks), and a stack whose deletion fails (it retries that stack at every call until the
schedule's end, and the failure stays in the stack's events for a person to read). Deleting uses the stacks' own
CloudFormation service role (the CDK bootstrap's execution role that created them), so this function needs no
rights over what the stacks hold, only ``cloudformation:DeleteStack`` and ``DescribeStacks`` on those stacks.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from eks_inference.config import ConfigError

HANDLER = Path(__file__).with_name("trial_deadline_handler.py")
"""The function's source, inlined into the template (``index.handler``)."""
EVERY_MINUTES = 5
"""How often the schedule calls the function once the deadline has passed: an EKS cluster takes about ten
minutes to delete, so a few calls per stack."""
RUNS_FOR = dt.timedelta(hours=6)
"""The schedule's end, after the deadline: long enough for every stack, bounded so a stuck one is not retried
forever."""


def parse_deadline(value: str) -> dt.datetime:
    """``2026-12-07T13:00:00Z`` → an aware UTC datetime; ConfigError naming the fix otherwise."""
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        at = None
    if at is None or at.tzinfo is None:
        raise ConfigError(f"trial_deadline: {value!r} is not a UTC time; write it as YYYY-MM-DDTHH:MM:SSZ, e.g. "
                          "-c trial_deadline=2026-12-07T13:00:00Z")
    return at.astimezone(dt.UTC)


class TrialDeadline(Construct):
    """The schedule, the function and their roles (module docstring).

    :param stack_names: the stacks to delete, in the order to delete them; the stack holding this construct last.
    :param deadline: when the teardown starts (aware datetime).
    """

    def __init__(self, scope: Construct, construct_id: str, *, stack_names: Sequence[str],
                 deadline: dt.datetime) -> None:
        super().__init__(scope, construct_id)
        if deadline.tzinfo is None:
            raise ConfigError("trial_deadline: a time without a zone is ambiguous; give it in UTC with a 'Z'")
        own = Stack.of(self).stack_name
        if not stack_names or stack_names[-1] != own:
            raise ConfigError(f"TrialDeadline: the stacks to delete must end with its own stack {own!r}, so that the "
                              "schedule goes last")
        stack = Stack.of(self)
        self.stack_names = list(stack_names)
        self.log_group = logs.LogGroup(self, "Logs", retention=logs.RetentionDays.ONE_MONTH,
                                       removal_policy=RemovalPolicy.DESTROY)
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description="Deletes an eks-inference trial's stacks at its deadline")
        self.log_group.grant_write(self.role)
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["cloudformation:DescribeStacks", "cloudformation:DeleteStack"],
            resources=[stack.format_arn(service="cloudformation", resource="stack", resource_name=f"{name}/*")
                       for name in self.stack_names]))
        self.function = lambda_.Function(
            self, "Function", runtime=lambda_.Runtime.PYTHON_3_14, handler="index.handler",
            code=lambda_.Code.from_inline(HANDLER.read_text()), timeout=Duration.minutes(1), role=self.role,
            log_group=self.log_group, reserved_concurrent_executions=1,
            environment={"STACKS": json.dumps(self.stack_names)},
            description="Deletes an eks-inference trial's stacks, one per call, from the deadline on")
        self.scheduler_role = iam.Role(
            self, "SchedulerRole",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account}}),
            description="Lets EventBridge Scheduler call the trial's teardown function")
        self.function.grant_invoke(self.scheduler_role)
        utc = deadline.astimezone(dt.UTC)
        self.schedule = scheduler.CfnSchedule(
            self, "Schedule",
            description=f"eks-inference trial teardown from {utc:%Y-%m-%dT%H:%M:%SZ}",
            schedule_expression=f"rate({EVERY_MINUTES} minutes)",
            schedule_expression_timezone="UTC",
            start_date=f"{utc:%Y-%m-%dT%H:%M:%SZ}",
            end_date=f"{utc + RUNS_FOR:%Y-%m-%dT%H:%M:%SZ}",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=self.function.function_arn, role_arn=self.scheduler_role.role_arn,
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(maximum_retry_attempts=0)),
        )
