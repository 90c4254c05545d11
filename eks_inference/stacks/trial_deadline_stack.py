"""The stack of a trial's scheduled teardown (``-c trial_deadline=...``): apart from the others, deleted last."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from constructs import Construct

from eks_inference.constructs.trial_deadline import TrialDeadline
from eks_inference.nag import acknowledge, checkov_skip


class TrialDeadlineStack(Stack):
    """:param delete_first: the trial's other stacks, in the order to delete them (the reverse of their creation)."""

    def __init__(self, scope: Construct, construct_id: str, *, delete_first: Sequence[str], deadline: dt.datetime,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.deadline = TrialDeadline(self, "TrialDeadline", stack_names=[*delete_first, self.stack_name],
                                      deadline=deadline)

    def acknowledge_findings(self) -> None:
        acknowledge(self.deadline, {
            "AwsSolutions-IAM5": "cloudformation:DeleteStack and DescribeStacks name each of the trial's stacks; the "
            "'/*' is the id CloudFormation appends to a stack's ARN, not a wildcard over stacks.",
        })
        checkov_skip(self.deadline, "AWS::Lambda::Function", {
            "CKV_AWS_116": "Invoked asynchronously by EventBridge Scheduler every few minutes; a failed call is "
                           "retried by the next one and logged, so a dead-letter queue would hold nothing new.",
            "CKV_AWS_117": "It only calls the CloudFormation API and needs no VPC access (the VPC is among what it "
                           "deletes).",
            "CKV_AWS_173": "Its one variable lists the stack names it deletes, which are in the template anyway.",
        })
        checkov_skip(self.deadline, "AWS::Logs::LogGroup", {
            "CKV_AWS_158": "The teardown function logs one line per call naming a stack, no data; CloudWatch Logs "
                           "encrypts it at rest.",
        })
