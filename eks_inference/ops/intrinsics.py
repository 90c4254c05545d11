"""Render CloudFormation intrinsic functions as readable ``${...}`` placeholders.

A Kubernetes manifest or Helm values document in a template is a JSON string that CDK splices deploy-time
values into with ``Fn::Join`` (bucket names, image URIs). Rendering each token in CloudFormation's own
``Fn::Sub`` notation (``${Bucket}``, ``${Role.Arn}``, ``${AWS::Region}``) turns the string back into a
document that parses, and a reviewer sees which value is resolved at deploy time.
"""

from __future__ import annotations

import json
from typing import Any

_FUNCTIONS = {"Ref", "Fn::GetAtt", "Fn::Join", "Fn::Sub", "Fn::Select", "Fn::Split", "Fn::ImportValue",
              "Fn::GetAZs", "Fn::Base64", "Fn::If", "Fn::GetStackOutput", "Fn::FindInMap", "Fn::Cidr",
              "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::Contains", "Fn::Length", "Fn::ToJsonString",
              "Condition"}


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _FUNCTIONS


def token(value: Any) -> str:
    """One intrinsic as a placeholder string; strings pass through."""
    if isinstance(value, str):
        return value
    if not is_intrinsic(value):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    (fn, arg), = value.items()
    if fn == "Ref":
        return "${" + str(arg) + "}"
    if fn == "Fn::GetAtt":
        parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
        return "${" + ".".join(token(p) for p in parts) + "}"
    if fn == "Fn::Join":
        sep, parts = arg
        return token(sep).join(token(p) for p in (parts if isinstance(parts, list) else [parts]))
    if fn == "Fn::Sub":
        return arg if isinstance(arg, str) else token(arg[0])
    if fn == "Fn::GetStackOutput":
        return "${" + f"{arg.get('StackName')}.Outputs.{arg.get('OutputName')}" + "}"
    if fn == "Fn::ImportValue":
        return "${Import:" + token(arg) + "}"
    args = arg if isinstance(arg, list) else [arg]
    return "${" + fn.removeprefix("Fn::") + "(" + ", ".join(token(a) for a in args) + ")}"


def render(value: Any) -> Any:
    """The same structure with every intrinsic replaced by its placeholder string."""
    if is_intrinsic(value):
        return token(value)
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def refs(value: Any) -> set[str]:
    """Logical IDs a value refers to through ``Ref`` or ``Fn::GetAtt``."""
    found: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"Ref"} and isinstance(value["Ref"], str) and not value["Ref"].startswith("AWS::"):
            found.add(value["Ref"])
        elif set(value) == {"Fn::GetAtt"}:
            arg = value["Fn::GetAtt"]
            first = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
            if isinstance(first, str):
                found.add(first)
        for v in value.values():
            found |= refs(v)
    elif isinstance(value, list):
        for v in value:
            found |= refs(v)
    return found
