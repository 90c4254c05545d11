"""Lambda source of TrialDeadline (inlined into the template): delete a trial's stacks, one at a time, in order.

EventBridge Scheduler calls it every few minutes from the deadline on. Each call moves one step: the first stack
of the list that still exists is deleted, unless it is already being deleted or is busy with another operation
(then the call waits for the next one). The list ends with the stack holding this function and its schedule, so
the last call removes them too. Only boto3 and the standard library: the Lambda runtime provides both.
"""

import json
import os
from typing import Any

import boto3

GONE = "DELETE_COMPLETE"


def stack_status(cfn: Any, name: str) -> str | None:
    """The stack's status, or None when CloudFormation no longer knows it."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except cfn.exceptions.ClientError as e:
        if "does not exist" in str(e):
            return None
        raise
    return str(stacks[0]["StackStatus"]) if stacks else None


def advance(cfn: Any, names: list[str]) -> str:
    """One step of the teardown; returns what it did, for the function's log."""
    for name in names:
        status = stack_status(cfn, name)
        if status is None or status == GONE:
            continue
        if status.endswith("_IN_PROGRESS"):
            return f"waiting: {name} is {status}"
        cfn.delete_stack(StackName=name)
        return f"deleting {name} (was {status})"
    return "nothing left to delete"


def handler(event: Any, context: Any) -> str:
    result = advance(boto3.client("cloudformation"), json.loads(os.environ["STACKS"]))
    print(json.dumps({"teardown": result}))
    return result
