"""``eks-inference rollout start|status|promote|rollback``: a new revision on a canary slice first (registered by
:mod:`eks_inference.cli`; the order is :mod:`eks_inference.ops.rollout`, the cluster side
:mod:`eks_inference.ops.rollout_kube`).

Exit codes: 0 promoted (or nothing to do); 1 rolled back, the reason on one line; 3 held by an alert that already
fires; 2 usage or configuration error, or a promotion step that failed (run the command again to resume);
130 interrupted (run it again to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.config import ConfigError, PlatformConfig

_EPILOG_STATE = "state: .eks-inference/rollouts/ENV/MODEL.json (--state-dir); a second start resumes it"


def register(sub: Any) -> None:
    p = add_command(
        sub, "rollout",
        summary="roll a new weights revision of a model out on a canary slice, and back by itself when it is unfit",
        description="Serve the new revision beside the current one, verify it, give it rollout.canary_percent of "
                    "the model's front-door requests for rollout.bake_minutes while rollout.alerts stay quiet, then "
                    "promote it; a failed deploy or verify or a firing alert rolls it back, saying why. "
                    "docs/rollouts.md has the whole story. " + _EPILOG_STATE,
        example_lines=(
            "eks-inference rollout start --env dev --model minilm --revision v2 --dry-run",
            "eks-inference rollout start --env prod --model minilm --revision v2 --weights-sha256 DIGEST \\",
            "    --alerts-url https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-ID/api/v1/alerts",
            "eks-inference rollout status --env prod --model minilm",
            "eks-inference rollout rollback --env prod --model minilm",
        ))
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, summary in (("start", "start a rollout, or resume the one in the state file"),
                          ("status", "where the rollout stands"),
                          ("promote", "end the bake now and promote (the alerts are still read once)"),
                          ("rollback", "roll back now (before the promotion has updated the current targets)")):
        a = actions.add_parser(name, help=summary, description=summary)
        a.add_argument("--env", required=True, help="environment in cdk.json")
        a.add_argument("--model", required=True, help="the model to roll out")
        a.add_argument("--state-dir", type=Path, default=Path(".eks-inference") / "rollouts",
                       help="where rollouts keep their state files")
        a.add_argument("--app-dir", type=Path, default=Path("."), help="directory holding cdk.json")
        if name in ("start", "promote", "rollback"):
            a.add_argument("--alerts-url", help="the workspace's Prometheus-compatible alerts endpoint "
                                                "(.../workspaces/ID/api/v1/alerts); start and promote need it "
                                                "(not --dry-run)")
        if name == "start":
            a.add_argument("--revision", required=True, help="the weights revision to roll out (published under "
                                                             "models/MODEL/REVISION)")
            a.add_argument("--weights-sha256", help="pin the revision's digest (the one `eks-inference publish` "
                                                    "prints); replicas refuse other weights")
            a.add_argument("--dry-run", action="store_true", help="print the plan and its traffic, change nothing")
        a.set_defaults(func=cmd_rollout)


def _config(a: argparse.Namespace) -> PlatformConfig:
    from eks_inference.ops.project import platform_config, read_context

    return platform_config(read_context(a.app_dir, {"env": a.env}))


def configured_route(config: PlatformConfig, model: str) -> dict[str, Any] | None:
    """The model's HTTPRoute as the stack renders it (None without a front door)."""
    from eks_inference.k8s.front_door_chart import Backend, Route, http_route, serve_service
    from eks_inference.k8s.serving_chart import service_name

    spec = next(m for m in config.models if m.name == model)
    if not config.front_door.enabled:
        return None
    weights = config.front_door.weights(spec)
    route = Route(model=model, path_prefix=f"/{model}", backends=tuple(
        Backend(processor=p, service=serve_service(service_name(spec, p)), weight=weights[p])
        for p in spec.processors))
    return http_route(route, config.front_door)


def _entry_change(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    keys = [k for k in ("revision", "weights_sha256", "canary") if before.get(k) != after.get(k)]
    return [f"  {k}: {json.dumps(before[k]) if k in before else '(absent)'} → "
            f"{json.dumps(after[k]) if k in after else '(absent)'}" for k in keys]


def write_config(a: argparse.Namespace, state: Any, outcome: str) -> None:
    """Keep cdk.json in step with the rollout, so that synth renders what runs and a deploy keeps it: ``start``
    writes the model's ``canary``; a promotion makes its revision (and digest) the model's and removes ``canary``;
    a rollback (or a hold) removes ``canary``. Prints the change."""
    from eks_inference.config import CDK_JSON, write_model_patch

    def edit(entry: dict[str, Any]) -> None:
        if outcome == "start":
            entry["canary"] = {"revision": state.revision, **({"weights_sha256": state.weights_sha256}
                                                              if state.weights_sha256 else {})}
            return
        entry.pop("canary", None)
        if outcome == "promoted":
            entry["revision"] = state.revision
            if state.weights_sha256:
                entry["weights_sha256"] = state.weights_sha256
            else:
                entry.pop("weights_sha256", None)

    path = a.app_dir / CDK_JSON
    _, before, after = write_model_patch(a.env, a.model, edit, cdk_json=path)
    lines = _entry_change(before, after)
    if lines:
        print(f"rollout: {path}: environment {a.env!r}, model {a.model!r}:", flush=True)
        print("\n".join(lines), flush=True)


def cmd_rollout(a: argparse.Namespace) -> int:
    from eks_inference.ops import rollout as r

    config = _config(a)
    r.check_alert_names(config)
    spec = next((m for m in config.models if m.name == a.model), None)
    if spec is None:
        raise ConfigError(f"--model: {a.model!r} is not served in {config.env_name!r}; use one of "
                          f"{', '.join(m.name for m in config.models)}")
    path = r.state_path(a.state_dir, config.env_name, a.model)
    state = r.read_state(path)
    if a.action == "status":
        print("\n".join(r.status_lines(state)) if state else f"no rollout of {a.model} in {a.env} ({path})")
        return 0
    if a.action == "start":
        if state is not None and state.phase in r.TERMINAL:
            state = None  # a finished rollout: a new one starts
        if state is not None and state.revision != a.revision:
            raise ConfigError(f"--revision {a.revision}: a rollout of {state.revision} is {state.phase} ({path}); "
                              "finish it (rollout start with that revision) or roll it back first")
        if state is None:
            state = r.new_state(config, a.model, a.revision, weights_sha256=a.weights_sha256)
        if a.dry_run:
            print("\n".join(r.plan_lines(state, configured_route(config, a.model))))
            return 0
    elif state is None or state.phase in r.TERMINAL:
        print(f"eks-inference rollout: no rollout of {a.model} under way in {a.env} ({path})", file=sys.stderr)
        return 2
    if not config.front_door.enabled:
        raise ConfigError(f"front_door.enabled: false in {config.env_name!r}: a canary takes a slice of the model's "
                          "front-door route; enable the front door first")
    if not a.alerts_url and a.action != "rollback":
        raise ConfigError("--alerts-url: missing; give the workspace's alerts endpoint (aws amp describe-workspace "
                          "--workspace-id ID: prometheusEndpoint, then api/v1/alerts)")
    from eks_inference.ops.rollout_kube import KubeRolloutBackend

    backend = KubeRolloutBackend(spec, alerts_url=a.alerts_url or "", region=config.region)
    controller = r.Rollout(state, backend, path, say=lambda m: print(f"rollout: {m}", flush=True))
    if a.action == "start":
        write_config(a, state, "start")
    try:
        if a.action == "promote":
            phase = controller.promote_now()
        elif a.action == "rollback":
            phase = controller.roll_back_now()
        else:
            phase = controller.run()
    except r.StepFailed as e:
        print(f"eks-inference rollout: {e}; run the same command again to resume", file=sys.stderr)
        return r.EXIT_ERROR
    except KeyboardInterrupt:
        print(f"eks-inference rollout: interrupted at {state.next_step}; the same command resumes from {path}",
              file=sys.stderr)
        return r.EXIT_INTERRUPTED
    if phase in r.TERMINAL:
        write_config(a, state, phase)
    if state.reason:
        print(f"eks-inference rollout: {state.reason}", file=sys.stderr)
    return r.EXIT_CODES.get(phase, r.EXIT_ERROR)
