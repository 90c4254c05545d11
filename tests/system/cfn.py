"""Reading a synthesized cloud assembly as CloudFormation and the CDK CLI will act on it.

- :func:`resolve` turns intrinsic functions into plain text (placeholders for what only a deploy knows), so
  manifests embedded in templates become the JSON ``kubectl`` receives.
- :class:`DeployOrder` is the "created after" relation of a ``cdk deploy --all``: the CDK CLI deploys a
  stack only after its dependency stacks and its own asset publishes (aws/aws-cdk
  packages/aws-cdk/lib/util/work-graph-builder.ts, ``addStack``/``addAsset``), and CloudFormation creates
  a resource only after everything it names in ``DependsOn``, ``Ref``, ``Fn::GetAtt`` or ``Fn::Sub``
  (CloudFormation User Guide, "DependsOn attribute": resources without such an edge are created in
  parallel, in any order).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import Assembly

PSEUDO = {"AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws", "AWS::NoValue": ""}
MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_TYPE = "Custom::AWSCDK-EKS-HelmChart"


def resolve(value: Any, *, account: str = "111122223333", region: str = "us-west-2") -> Any:
    """A template value with intrinsics replaced: ``Ref X`` → ``ref-x``, ``Fn::GetAtt [X, A]`` → ``x-a``."""
    pseudo = {**PSEUDO, "AWS::AccountId": account, "AWS::Region": region}

    def go(v: Any) -> Any:
        if isinstance(v, list):
            return [go(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return pseudo.get(arg, f"ref-{arg.lower()}")
            if k == "Fn::GetAtt":
                return f"{arg[0].lower()}-{arg[1].lower()}"
            if k == "Fn::Join":
                return str(arg[0]).join(str(go(x)) for x in arg[1])
            if k == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                extra = {} if isinstance(arg, str) else {n: go(x) for n, x in arg[1].items()}
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(extra.get(m[1], pseudo.get(m[1], f"sub-{m[1]}"))),
                              text)
            if k == "Fn::GetStackOutput":
                return f"output-{arg['OutputName'].lower()}"
        return {k: go(x) for k, x in v.items()}

    return go(value)


def references(value: Any) -> set[str]:
    """Logical ids a value refers to through Ref, Fn::GetAtt or Fn::Sub (parameters and pseudo params too)."""
    found: set[str] = set()

    def go(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                go(x)
        elif isinstance(v, dict):
            for k, x in v.items():
                if k == "Ref" and isinstance(x, str):
                    found.add(x)
                elif k == "Fn::GetAtt":
                    found.add(x[0] if isinstance(x, list) else x.split(".")[0])
                elif k == "Fn::Sub":
                    text = x if isinstance(x, str) else x[0]
                    found.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                    go(x if isinstance(x, str) else x[1])
                else:
                    go(x)

    go(value)
    return found


def manifest_objects(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The Kubernetes objects a KubernetesManifest resource applies, as kubectl receives them."""
    return list(json.loads(resolve(resource["Properties"]["Manifest"])))


@dataclass(frozen=True, order=True)
class Node:
    """One thing a deploy creates: a resource of a stack, or the asset publishes of a stack."""

    stack: str
    logical_id: str


@dataclass
class DeployOrder:
    """``before(a, b)``: in every order ``cdk deploy --all`` may take, ``a`` is complete before ``b`` starts."""

    templates: dict[str, dict[str, Any]]
    stack_deps: dict[str, list[str]]
    parents: dict[Node, set[Node]] = field(default_factory=dict)

    @classmethod
    def of(cls, asm: Assembly) -> DeployOrder:
        arts = asm.manifest["artifacts"]
        stacks = [n for n, a in arts.items() if a["type"] == "aws:cloudformation:stack"]
        return cls.build({s: json.loads((asm.path / f"{s}.template.json").read_text()) for s in stacks},
                         {s: [d for d in arts[s].get("dependencies", []) if d in stacks] for s in stacks})

    @classmethod
    def build(cls, templates: dict[str, dict[str, Any]], stack_deps: dict[str, list[str]]) -> DeployOrder:
        order = cls(templates=templates, stack_deps=stack_deps)
        for s, t in templates.items():
            publish = Node(s, "#assets")
            order.parents[publish] = set()
            ids = set(t["Resources"])
            for rid, res in t["Resources"].items():
                deps = res.get("DependsOn", [])
                deps = [deps] if isinstance(deps, str) else deps
                refs = references(res.get("Properties", {})) & ids
                parents = {Node(s, d) for d in {*deps, *refs}} | {publish}
                for dep_stack in stack_deps[s]:
                    parents |= {Node(dep_stack, r) for r in templates[dep_stack]["Resources"]}
                    parents.add(Node(dep_stack, "#assets"))
                order.parents[Node(s, rid)] = parents
        return order

    def ancestors(self, node: Node) -> set[Node]:
        seen: set[Node] = set()
        todo = list(self.parents[node])
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(self.parents[n])
        return seen

    def before(self, a: Node, b: Node) -> bool:
        return a in self.ancestors(b)

    def resources(self, type_: str | None = None) -> Iterator[tuple[Node, dict[str, Any]]]:
        for s, t in self.templates.items():
            for rid, res in t["Resources"].items():
                if type_ is None or res["Type"] == type_:
                    yield Node(s, rid), res
