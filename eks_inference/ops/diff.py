"""``eks-inference diff``: what a deploy changes, per stack, resource, Kubernetes object and field.

``cdk diff`` shows a serving change as a few lines of escaped JSON thousands of characters long: every
object of a chart sits in one ``Manifest`` string, and a RayService's Serve config is YAML inside it. Here
manifests, Serve configs and Helm values are parsed and compared field by field (``path: old → new``), each
change is told with what it will do (see :mod:`eks_inference.ops.effects`), and content-hash churn of image
and file assets is folded into one line. Objects are matched across the manifest resources of a stack, so an
object that moves to a manifest of its own reads as moved (with what that does), not as deleted and created.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from eks_inference.ops.assembly import STACK_SUFFIXES, Assembly, Asset
from eks_inference.ops.effects import (
    Effect,
    create_only_properties,
    job_replaced_effect,
    object_effects,
    prunable,
    resource_effect,
    route_effects,
)
from eks_inference.ops.intrinsics import refs, render
from eks_inference.ops.kube import ObjectKey, manifest_objects, object_label, parse_json_document
from eks_inference.ops.neuron_artifacts import sdk_change_lines
from eks_inference.ops.tree import MISSING, Change, diff, render_path, render_value
from eks_inference.tables.neuron import NEURON_METADATA

_HASH = re.compile(r"[0-9a-f]{64}")
_SPEC_HASH = re.compile(r"-[0-9a-f]{8}$")  # Job names end in a hash of their spec (k8s/load_test_chart.job_name)
_PRUNE_LABEL = "aws.cdk.eks/prune-"
_MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"
_HELM_TYPE = "Custom::AWSCDK-EKS-HelmChart"
_SECTIONS = ("Description", "Transform", "Parameters", "Mappings", "Conditions", "Rules", "Outputs")
# Kinds of effect a reviewer must not miss; they head the summary line.
_HEADLINE = (("replace", "replacement", "replacements"), ("new-ray-cluster", "new Ray cluster", "new Ray clusters"),
             ("node-rolling", "node roll", "node rolls"),
             ("serve-restart", "in-place Serve update restarting replicas",
              "in-place Serve updates restarting replicas"),
             ("serve-update", "in-place Serve update", "in-place Serve updates"),
             ("traffic", "traffic shift at the front door", "traffic shifts at the front door"),
             ("apply-fails", "object that cannot be created", "objects that cannot be created"),
             ("job-immutable", "Job that cannot be re-applied", "Jobs that cannot be re-applied"),
             ("job-replaced", "Job replaced", "Jobs replaced"),
             ("job-run", "Job run", "Job runs"),
             ("ray-not-applied", "RayService change not applied to its running cluster",
              "RayService changes not applied to their running clusters"),
             ("delete", "deletion", "deletions"),
             ("orphan", "object left in the cluster", "objects left in the cluster"))


def is_churn(change: Change) -> bool:
    """A string that differs only in content hashes: an asset rebuilt, not a setting changed.

    Also an entry added or removed under a hash-named key: the legacy synthesizer's asset parameters
    (``AssetParameters<hash>S3Bucket...``) are renamed, not changed, when an asset is rebuilt.
    """
    if change.old is MISSING or change.new is MISSING:
        return any(isinstance(seg, str) and _HASH.search(seg) for seg in change.path)
    return (isinstance(change.old, str) and isinstance(change.new, str) and change.old != change.new
            and bool(_HASH.search(change.new)) and _HASH.sub("#", change.old) == _HASH.sub("#", change.new))


def _split(changes: Sequence[Change]) -> tuple[list[Change], list[Change]]:
    listed = [c for c in changes if not is_churn(c)]
    return listed, [c for c in changes if is_churn(c)]


@dataclass
class ObjectDiff:
    key: ObjectKey
    action: str  # add, remove, modify
    changes: list[Change]
    churn: list[Change]
    effects: list[Effect]
    old: Any = field(default=MISSING, repr=False)
    new: Any = field(default=MISSING, repr=False)

    @property
    def label(self) -> str:
        return object_label(self.key)


@dataclass
class ResourceDiff:
    logical_id: str
    type: str
    action: str  # add, remove, modify
    changes: list[Change] = field(default_factory=list)
    churn: list[Change] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    objects: list[ObjectDiff] = field(default_factory=list)


@dataclass
class StackDiff:
    name: str
    action: str  # create, delete, modify
    resources: list[ResourceDiff] = field(default_factory=list)
    sections: list[Change] = field(default_factory=list)
    churn: list[Change] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.action != "modify" or bool(self.resources or self.sections or self.churn)


@dataclass
class AssemblyDiff:
    stacks: list[StackDiff]
    assets: dict[str, Asset] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What the deploy needs done first (compiled artifacts of a new Neuron SDK)."""

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.stacks) or bool(self.notes)

    def effects(self) -> list[Effect]:
        out: list[Effect] = []
        for s in self.stacks:
            for r in s.resources:
                out += r.effects
                for o in r.objects:
                    out += o.effects
        return out

    def churn(self) -> list[Change]:
        out: list[Change] = []
        for s in self.stacks:
            out += s.churn
            for r in s.resources:
                out += r.churn
                for o in r.objects:
                    out += o.churn
        return out


def _prepare(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource as compared: intrinsics rendered, JSON-in-string values parsed, CDK metadata left out.

    ``Metadata`` holds construct paths and scanner suppressions: nothing a resource provider receives.
    """
    out = render({k: v for k, v in resource.items() if k != "Metadata"})
    props = out.get("Properties")
    if resource.get("Type") == _HELM_TYPE and isinstance(props, dict) and "Values" in props:
        parsed = parse_json_document(resource["Properties"]["Values"])
        if parsed is not None:
            props["Values"] = parsed
    return out


def _object_diffs(old_res: Mapping[str, Any] | None, new_res: Mapping[str, Any] | None) -> list[ObjectDiff] | None:
    old_objs = manifest_objects((old_res or {}).get("Properties", {}).get("Manifest", "[]"))
    new_objs = manifest_objects((new_res or {}).get("Properties", {}).get("Manifest", "[]"))
    if old_objs is None or new_objs is None:
        return None
    pruned = bool((new_res or old_res or {}).get("Properties", {}).get("PruneLabel"))
    out: list[ObjectDiff] = []
    for key in [*old_objs, *(k for k in new_objs if k not in old_objs)]:
        old, new = old_objs.get(key, MISSING), new_objs.get(key, MISSING)
        if old == new:
            continue
        action = "add" if old is MISSING else "remove" if new is MISSING else "modify"
        changes = diff(old, new) if action == "modify" else []
        listed, churn = _split(changes)
        effects = object_effects(key[0], old, new, changes, pruned=pruned, resource_deleted=new_res is None)
        out.append(ObjectDiff(key, action, listed, churn, effects, old, new))
    _pair_replaced_jobs(out)
    return out


def _job_stem(key: ObjectKey) -> str | None:
    return _SPEC_HASH.sub("", key[2]) if key[0] == "Job" and _SPEC_HASH.search(key[2]) else None


def _pair_replaced_jobs(objects: list[ObjectDiff]) -> None:
    """A Job removed and one added under the same name stem (the spec hash cut off) is one Job replaced.

    The added Job then lists what changed in the spec and says that it replaces the removed one.
    """
    removed = {(o.key[1], _job_stem(o.key)): o for o in objects if o.action == "remove" and _job_stem(o.key)}
    for o in objects:
        gone = removed.get((o.key[1], _job_stem(o.key))) if o.action == "add" and _job_stem(o.key) else None
        if gone is None:
            continue
        changes = [c for c in diff(gone.old, o.new) if c.path != ("metadata", "name")]
        o.changes, o.churn = _split(changes)
        o.effects = [job_replaced_effect(gone.key[2], o.new)]


def _without_prune_labels(changes: Sequence[Change]) -> list[Change]:
    return [c for c in changes if not (len(c.path) == 3 and c.path[:2] == ("metadata", "labels")
                                       and str(c.path[2]).startswith(_PRUNE_LABEL))]


def _pair_moves(stack: StackDiff, new_template: Mapping[str, Any]) -> None:
    """Objects that leave one manifest resource and appear in another of the stack are moved, not re-created.

    CloudFormation creates and updates resources first and deletes removed ones in its cleanup phase. The
    receiving manifest applies over the running object when it is updated or created with ``Overwrite``
    (a plain ``kubectl create`` fails on it); the giving one leaves it alone when it is updated and the kind
    is not prunable, but deletes it when the giving resource itself is deleted (``kubectl delete``).
    Prunable kinds leaving an updated manifest are left as a deletion and a creation: which comes first
    depends on the order of the two resources.
    """
    resources = new_template.get("Resources", {})
    gone = {o.key: (r, o) for r in stack.resources for o in r.objects if o.action == "remove"}
    for dest in stack.resources:
        for o in dest.objects:
            if o.action != "add" or o.key not in gone:
                continue
            src, src_o = gone[o.key]
            if src is dest or (src.action == "modify" and prunable(src_o.old)):
                continue
            changes = _without_prune_labels(diff(src_o.old, o.new))
            if dest.action == "add" and str(resources.get(dest.logical_id, {}).get("Properties", {})
                                            .get("Overwrite", "false")).lower() != "true":
                o.effects = [Effect("apply-fails", f"kubectl create fails: the object exists already (applied by "
                                                   f"{src.logical_id}); create {dest.logical_id} with Overwrite so "
                                                   "that it is applied over")]
                continue
            o.action = "modify"
            o.changes, o.churn = _split(changes)
            o.effects = [Effect("moved", f"moved here from {src.logical_id}: applied over the running object"),
                         *(object_effects(o.key[0], src_o.old, o.new, changes, pruned=True) if changes else [])]
            if src.action == "remove":
                lost = Effect("delete", f"then deleted: {src.logical_id} leaves the stack, and its `kubectl delete` "
                                        "in CloudFormation's cleanup phase removes the object this manifest applied")
                o.effects.append(lost)
                src_o.effects = [lost]
            else:
                src_o.effects = [Effect("moved", f"moved to {dest.logical_id}: kept running (kubectl apply --prune "
                                                 f"leaves {o.key[0]} alone)")]



def diff_resource(logical_id: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> ResourceDiff | None:
    rtype = str((new or old or {}).get("Type", "?"))
    if old is None:
        return ResourceDiff(logical_id, rtype, "add", effects=[Effect("create", "create")],
                            objects=_object_diffs(None, new) or [] if rtype == _MANIFEST_TYPE else [])
    if new is None:
        kept = old.get("DeletionPolicy") in ("Retain", "RetainExceptOnCreate")
        return ResourceDiff(logical_id, rtype, "remove", effects=[Effect(
            "delete", "removed from the stack; the resource is kept (DeletionPolicy Retain)" if kept else "delete")],
            objects=_object_diffs(old, None) or [] if rtype == _MANIFEST_TYPE else [])
    before, after = _prepare(old), _prepare(new)
    objects: list[ObjectDiff] = []
    if rtype == _MANIFEST_TYPE:
        parsed = _object_diffs(old, new)
        if parsed is not None:
            objects = parsed
            before.get("Properties", {}).pop("Manifest", None)
            after.get("Properties", {}).pop("Manifest", None)
    changes = diff(before, after)
    if not changes and not objects:
        return None
    listed, churn = _split(changes)
    effects = resource_effect(rtype, changes, prune_label=bool(new.get("Properties", {}).get("PruneLabel"))) \
        if changes else []
    return ResourceDiff(logical_id, rtype, "modify", listed, churn, effects, objects)


def _cascade(stack: StackDiff, new_template: Mapping[str, Any]) -> None:
    """Resources whose create-only properties refer to a replaced resource are replaced as well."""
    by_id = {r.logical_id: r for r in stack.resources}
    replaced = {r.logical_id for r in stack.resources if any(e.kind == "replace" for e in r.effects)}
    resources = new_template.get("Resources", {})
    changed = True
    while changed:
        changed = False
        for rid, res in resources.items():
            if rid in replaced:
                continue
            props = res.get("Properties", {})
            for path in create_only_properties(str(res.get("Type"))) or ():
                hit = sorted(refs(props.get(path[0])) & replaced)
                if hit:
                    effect = Effect("replace", f"REPLACEMENT: its create-only {path[0]} refers to {', '.join(hit)}, "
                                               "which is replaced")
                    if rid in by_id:
                        by_id[rid].effects = [effect, *by_id[rid].effects]
                    else:
                        by_id[rid] = ResourceDiff(rid, str(res.get("Type")), "modify", effects=[effect])
                        stack.resources.append(by_id[rid])
                    replaced.add(rid)
                    changed = True
                    break
    # A changed launch template gets a new version, and node groups that use its latest version roll their nodes.
    templates = {r.logical_id for r in stack.resources
                 if r.type == "AWS::EC2::LaunchTemplate" and r.action == "modify" and r.logical_id not in replaced}
    for rid, res in resources.items():
        if res.get("Type") != "AWS::EKS::Nodegroup" or rid in replaced:
            continue
        hit = sorted(refs(res.get("Properties", {}).get("LaunchTemplate")) & templates)
        if hit:
            effect = Effect("node-rolling",
                            f"new version of launch template {hit[0]}: EKS replaces the nodes one by one")
            if rid in by_id:
                by_id[rid].effects.append(effect)
            else:
                stack.resources.append(ResourceDiff(rid, "AWS::EKS::Nodegroup", "modify", effects=[effect]))


def diff_stack(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> StackDiff:
    if old is None or new is None:
        stack = StackDiff(name, "create" if old is None else "delete")
        template = new if new is not None else old or {}
        for rid, res in template.get("Resources", {}).items():
            r = diff_resource(rid, None if old is None else res, res if old is None else None)
            if r:
                stack.resources.append(r)
        return stack
    stack = StackDiff(name, "modify")
    old_res, new_res = old.get("Resources", {}), new.get("Resources", {})
    for rid in [*old_res, *(r for r in new_res if r not in old_res)]:
        r = diff_resource(rid, old_res.get(rid), new_res.get(rid))
        if r:
            stack.resources.append(r)
    sections = diff(render({k: old.get(k, MISSING) for k in _SECTIONS if k in old or k in new}),
                    render({k: new.get(k, MISSING) for k in _SECTIONS if k in old or k in new}))
    stack.sections, stack.churn = _split(sections)
    _cascade(stack, new)
    _pair_moves(stack, new)
    _mark_promotions(stack)
    return stack


def _serve_revisions(obj: Any) -> set[str]:
    """The weights revisions a RayService's ``serveConfigV2`` serves (its applications' ``revision`` argument)."""
    if not isinstance(obj, Mapping):
        return set()
    raw = (obj.get("spec") or {}).get("serveConfigV2")
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            return set()
    apps = raw.get("applications") if isinstance(raw, Mapping) else None
    return {str((a.get("args") or {}).get("revision")) for a in apps or [] if isinstance(a, Mapping)
            and (a.get("args") or {}).get("revision")}


def _mark_promotions(stack: StackDiff) -> None:
    """A route whose canary backends go away while the current RayServices take the canary's revision, in the same
    change (config's ``canary`` made the model's ``revision``), reads as a promotion rather than a canary's end."""
    objects = [o for r in stack.resources for o in r.objects]
    by_name = {(o.key[0], o.key[-1]): o for o in objects}
    for o in objects:
        if o.key[0] != "HTTPRoute" or o.old is MISSING or o.new is MISSING:
            continue
        canaries = {str(ref.get("name", "")).removesuffix("-serve-svc")
                    for rule in (o.old.get("spec") or {}).get("rules") or [] for ref in rule.get("backendRefs") or []
                    if str(ref.get("name", "")).removesuffix("-serve-svc").endswith("-canary")}
        if not canaries:
            continue
        revisions = set()
        for c in canaries:
            gone, stable = by_name.get(("RayService", c)), by_name.get(("RayService", c.removesuffix("-canary")))
            if gone is None or gone.new is not MISSING or stable is None or stable.new is MISSING:
                break
            served = _serve_revisions(gone.old)
            if not served or served != _serve_revisions(stable.new):
                break
            revisions |= served
        else:
            if len(revisions) == 1:
                o.effects = route_effects(o.old, o.new, promoted_to=revisions.pop())


def _deploy_order(name: str) -> tuple[int, str]:
    """This app's stacks in the order CloudFormation deploys them (Network, Cluster, Inference)."""
    suffix = name.rsplit("-", 1)[-1]
    return (STACK_SUFFIXES.index(suffix) if suffix in STACK_SUFFIXES else len(STACK_SUFFIXES), name)


def diff_templates(old: Mapping[str, Mapping[str, Any] | None], new: Mapping[str, Mapping[str, Any] | None],
                   assets: Mapping[str, Asset] | None = None) -> AssemblyDiff:
    names = sorted([*old, *(n for n in new if n not in old)], key=_deploy_order)
    stacks = [diff_stack(n, old.get(n), new.get(n)) for n in names if old.get(n) is not None or new.get(n) is not None]
    return AssemblyDiff([s for s in stacks if s.changed], dict(assets or {}), neuron_notes(old, new))


def _pinned_neuron(templates: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    for t in templates.values():
        meta = ((t or {}).get("Metadata") or {}).get(NEURON_METADATA)
        if isinstance(meta, dict):
            return meta
    return {}


def neuron_notes(old: Mapping[str, Mapping[str, Any] | None], new: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """A line per model on inf2 when the pinned Neuron SDK differs between the two (the Inference stack's
    ``Metadata``, written from ``eks_inference/tables/neuron.py``)."""
    o, n = _pinned_neuron(old), _pinned_neuron(new)
    return sdk_change_lines(o.get("sdk"), n.get("sdk"), [str(m) for m in n.get("models") or []])


def diff_assemblies(old: Assembly, new: Assembly) -> AssemblyDiff:
    return diff_templates(old.templates, new.templates, {**old.assets, **new.assets})


# -- rendering --------------------------------------------------------------------------------------------

def churn_summary(d: AssemblyDiff) -> str | None:
    """One line for every asset whose content hash moved, or ``None`` when none did."""
    churn = d.churn()
    if not churn:
        return None
    moved: dict[str, tuple[str, str]] = {}
    for c in churn:
        if c.old is MISSING or c.new is MISSING:
            continue
        for o, n in zip(_HASH.findall(c.old), _HASH.findall(c.new), strict=False):
            if o != n:
                asset = d.assets.get(n) or d.assets.get(o)
                label = f"{asset.kind} {asset.name}" if asset else f"asset {n[:12]}"
                moved[label] = (o, n)
    items = ", ".join(f"{label} {o[:8]}→{n[:8]}" for label, (o, n) in sorted(moved.items())) or "asset parameters"
    return f"asset churn (rebuilt, {len(churn)} references not listed): {items}"


def summary_line(d: AssemblyDiff) -> str:
    if not d.changed:
        return "no changes"
    kinds = [e.kind for e in d.effects()]
    parts = [f"{kinds.count(k)} {one if kinds.count(k) == 1 else many}" for k, one, many in _HEADLINE if k in kinds]
    n = len(d.stacks)
    return f"{n} stack{'s' if n > 1 else ''} changed" + (": " + ", ".join(parts) if parts else "")


def _change_line(c: Change) -> str:
    path = render_path(c.path[1:] if c.path and c.path[0] == "Properties" else c.path)
    return f"{path}: {render_value(c.old)} → {render_value(c.new)}"


_SIGN = {"add": "+", "remove": "-", "modify": "~", "create": "+", "delete": "-"}


def _shown(effects: Sequence[Effect]) -> list[Effect]:
    """Effects worth a line: a plain create or delete is already said by the + or - in front."""
    return [e for e in effects if not (e.kind in ("create", "delete") and e.text in ("create", "delete"))]


def render_text(d: AssemblyDiff) -> str:
    lines: list[str] = []
    for s in d.stacks:
        lines.append(f"{_SIGN[s.action]} stack {s.name}" + ("" if s.action == "modify" else f" ({s.action})"))
        for r in s.resources:
            lines.append(f"  {_SIGN[r.action]} {r.logical_id} ({r.type})")
            lines += [f"      => {e.text}" for e in _shown(r.effects)]
            lines += [f"      {_change_line(c)}" for c in r.changes]
            if r.churn:
                lines.append(f"      ({len(r.churn)} asset reference{'s' if len(r.churn) > 1 else ''} moved)")
            for o in r.objects:
                lines.append(f"      {_SIGN[o.action]} {o.label}")
                lines += [f"          => {e.text}" for e in o.effects]
                lines += [f"          {_change_line(c)}" for c in o.changes]
                if o.churn:
                    lines.append(f"          ({len(o.churn)} asset reference{'s' if len(o.churn) > 1 else ''} moved: "
                                 f"{', '.join(sorted({render_path(c.path) for c in o.churn}))})")
        lines += [f"  ~ {_change_line(c)}" for c in s.sections]
    churn = churn_summary(d)
    if churn:
        lines.append(churn)
    lines += [f"! {note}" for note in d.notes]
    lines.append(summary_line(d))
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    text = text.replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _md_change(c: Change) -> str:
    path = render_path(c.path[1:] if c.path and c.path[0] == "Properties" else c.path)
    return f"{_code(path)}: {_code(render_value(c.old))} → {_code(render_value(c.new))}"


def _md_effect(e: Effect) -> str:
    strong = e.kind in ("replace", "new-ray-cluster", "job-immutable", "apply-fails", "delete", "orphan",
                        "node-rolling", "serve-restart")
    return f"**{e.text}**" if strong else e.text


def render_markdown(d: AssemblyDiff, *, title: str = "eks-inference diff") -> str:
    lines = [f"### {title}: {summary_line(d)}", ""]
    for s in d.stacks:
        lines.append(f"#### {_SIGN[s.action]} `{s.name}`" + ("" if s.action == "modify" else f" ({s.action})"))
        lines.append("")
        for r in s.resources:
            effects = "; ".join(_md_effect(e) for e in _shown(r.effects))
            lines.append(f"- {_SIGN[r.action]} `{r.logical_id}` (`{r.type}`)" + (f": {effects}" if effects else ""))
            lines += [f"  - {_md_change(c)}" for c in r.changes]
            for o in r.objects:
                effects = "; ".join(_md_effect(e) for e in o.effects)
                lines.append(f"  - {_SIGN[o.action]} {o.label}" + (f": {effects}" if effects else ""))
                lines += [f"    - {_md_change(c)}" for c in o.changes]
                if o.churn:
                    moved = ", ".join(sorted({_code(render_path(c.path)) for c in o.churn}))
                    lines.append(f"    - asset references moved: {moved}")
        lines += [f"- {_md_change(c)}" for c in s.sections]
        lines.append("")
    churn = churn_summary(d)
    if churn:
        lines += [f"_{churn}_", ""]
    lines += [*(f"> **Before deploying:** {note}" for note in d.notes), *([""] if d.notes else [])]
    return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    return None if v is MISSING else v


def to_dict(d: AssemblyDiff) -> dict[str, Any]:
    def changes(cs: Sequence[Change]) -> list[dict[str, Any]]:
        return [{"path": render_path(c.path[1:] if c.path and c.path[0] == "Properties" else c.path),
                 "old": _jsonable(c.old), "new": _jsonable(c.new),
                 "absent": "old" if c.old is MISSING else "new" if c.new is MISSING else None} for c in cs]

    def effects(es: Sequence[Effect]) -> list[dict[str, str]]:
        return [{"kind": e.kind, "text": e.text} for e in es]

    return {
        "changed": d.changed,
        "summary": summary_line(d),
        "asset_churn": churn_summary(d),
        "notes": list(d.notes),
        "stacks": [{
            "name": s.name, "action": s.action, "sections": changes(s.sections),
            "resources": [{
                "logical_id": r.logical_id, "type": r.type, "action": r.action, "effects": effects(r.effects),
                "changes": changes(r.changes), "churn": len(r.churn),
                "objects": [{"kind": o.key[0], "namespace": o.key[1], "name": o.key[2], "action": o.action,
                             "effects": effects(o.effects), "changes": changes(o.changes), "churn": len(o.churn)}
                            for o in r.objects],
            } for r in s.resources],
        } for s in d.stacks],
    }


def render_json(d: AssemblyDiff) -> str:
    return json.dumps(to_dict(d), indent=2, default=str) + "\n"
