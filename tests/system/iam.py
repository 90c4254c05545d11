"""IAM policy evaluation, reproduced for the requests the synthesized policies must allow or refuse.

AWS publishes no source for its evaluator; this follows its documented rules, each cited where it is used:

- IAM User Guide, "Policy evaluation logic": an explicit Deny in any applicable policy wins; otherwise an Allow in an
  identity-based policy or in the resource's policy allows (one account); otherwise the request is implicitly denied.
  A role's trust policy alone decides who may assume it (the caller here is a service principal).
- IAM User Guide, "IAM JSON policy elements: Condition operators": every operator of a Condition block must match
  (AND), any value listed for a key may (OR), condition key names are case-insensitive, and a key absent from the
  request fails every operator except ``Null`` (true when the key is absent) and the ``...IfExists`` forms.
- "IAM JSON policy elements: Action / Resource": ``*`` and ``?`` wildcards; action names are case-insensitive.
- ``ArnLike``/``ArnEquals`` compare the six colon-separated ARN parts, wildcards allowed in each.

Template values go through :func:`tests.system.cfn.resolve` first (``Ref``/``Fn::GetAtt`` become placeholders), so a
request built from the same placeholders stands for "this very resource".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.system.cfn import resolve

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class Request:
    """One API call: who makes it, the action, the resource (None for AssumeRole) and its condition context."""

    principal: Mapping[str, str]
    """``{"Service": "pods.eks.amazonaws.com"}`` or ``{"AWS": role_arn}``."""
    action: str
    resource: str | None = None
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list | tuple) else [v]


def _glob(pattern: str, value: str, *, case: bool = True) -> bool:
    """``*`` any run (``:`` included), ``?`` one character; nothing else is special."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, flags=0 if case else re.IGNORECASE) is not None


def _arn_like(pattern: str, value: str) -> bool:
    p, v = pattern.split(":", 5), value.split(":", 5)
    return len(p) == len(v) == 6 and all(_glob(a, b) for a, b in zip(p, v, strict=True))


_OPERATORS = {
    "stringequals": lambda want, got: got == want,
    "stringnotequals": lambda want, got: got != want,
    "stringlike": lambda want, got: _glob(want, got),
    "stringnotlike": lambda want, got: not _glob(want, got),
    "arnequals": _arn_like,
    "arnlike": _arn_like,
    "bool": lambda want, got: str(got).lower() == str(want).lower(),
}
_NEGATED = {"stringnotequals", "stringnotlike"}


def conditions_match(block: Mapping[str, Mapping[str, Any]] | None, context: Mapping[str, Any]) -> bool:
    ctx = {k.lower(): _list(v) for k, v in context.items()}
    for operator, keys in (block or {}).items():
        op = operator.lower()
        for key, wanted in keys.items():
            values = ctx.get(key.lower())
            wanted = [str(w) for w in _list(wanted)]
            if op == "null":
                if (values is None) != (wanted[0].lower() == "true"):
                    return False
                continue
            if op not in _OPERATORS:
                raise NotImplementedError(f"condition operator {operator} is not reproduced here; add it")
            if values is None:
                return False
            test = _OPERATORS[op]
            # Negated operators hold when no value matches any listed value; the others when some value matches.
            hit = (all(test(w, str(v)) for w in wanted for v in values) if op in _NEGATED
                   else any(test(w, str(v)) for w in wanted for v in values))
            if not hit:
                return False
    return True


def _principal_matches(element: Any, principal: Mapping[str, str]) -> bool:
    if element == "*" or element == {"AWS": "*"}:
        return True
    if not isinstance(element, Mapping):
        return False
    return any(kind in principal and any(_glob(p, principal[kind]) for p in _list(names))
               for kind, names in element.items())


def statement_applies(st: Mapping[str, Any], req: Request, *, resource_policy: bool) -> bool:
    if resource_policy and not _principal_matches(st.get("Principal"), req.principal):
        return False
    if "Action" in st and not any(_glob(a, req.action, case=False) for a in _list(st["Action"])):
        return False
    if "NotAction" in st and any(_glob(a, req.action, case=False) for a in _list(st["NotAction"])):
        return False
    if req.resource is not None:
        if "Resource" in st and not any(_glob(r, req.resource) for r in _list(st["Resource"])):
            return False
        if "NotResource" in st and any(_glob(r, req.resource) for r in _list(st["NotResource"])):
            return False
    return conditions_match(st.get("Condition"), req.context)


def decide(req: Request, *, identity: Iterable[Doc] = (), resource: Iterable[Doc] = ()) -> str:
    """``"allow"``, ``"deny"`` (an explicit Deny) or ``"implicit"`` (nothing allows it)."""
    allowed = False
    for docs, is_resource in ((identity, False), (resource, True)):
        for doc in docs:
            for st in _list(resolve(doc)["Statement"]):
                if statement_applies(st, req, resource_policy=is_resource):
                    if st["Effect"] == "Deny":
                        return "deny"
                    allowed = True
    return "allow" if allowed else "implicit"


def role_policies(template: Mapping[str, Any], role_id: str) -> list[Doc]:
    """Every identity-based policy document attached to the role ``role_id`` of ``template`` (inline and
    ``AWS::IAM::Policy`` resources naming it)."""
    docs: list[Doc] = [p["PolicyDocument"] for p in template["Resources"][role_id]["Properties"].get("Policies", [])]
    for res in template["Resources"].values():
        if res["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in res["Properties"].get("Roles", []):
            docs.append(res["Properties"]["PolicyDocument"])
    return docs
