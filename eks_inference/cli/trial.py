"""``eks-inference trial``: the command line of :mod:`eks_inference.ops.trial`."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import math
import sys
from pathlib import Path
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.config import ConfigError
from eks_inference.ops.errors import OpsError
from eks_inference.ops.neuron_artifacts import plan_lines as neuron_plan_lines
from eks_inference.ops.project import parse_context_args, platform_config, read_context
from eks_inference.ops.trial import (
    DEFAULT_HOURS,
    DEFAULT_TRANSFER_GIB,
    EXIT_OVER_BUDGET,
    STATE_FILE,
    STEP_WHAT,
    STEPS,
    Trial,
    TrialContext,
    estimate,
    new_run_id,
    over_budget,
)
from eks_inference.ops.trial_runner import CommandRunner
from eks_inference.tables.prices import PRICING_KEY, PricingKind, load_prices, pricing_kind


def register(sub: Any) -> None:
    p = add_command(
        sub, "trial", summary="the real comparison in your account, in one command, within a budget",
        description="Print what a trial creates (node groups with their sizes and capacity types, NAT gateways, the "
                    "EKS control plane, the GCS store, data through NAT), for how long and at what cost; refuse "
                    "(exit 3) when every group at max_size for --hours would exceed --budget-usd. Then: preflight, "
                    "cdk deploy (with a scheduled teardown at the deadline), publish the weights, wait for the "
                    "compile Jobs and for every RayService to serve verified weights, the in-cluster load test "
                    "(--repeats runs), the report and the plan, and destroy. A state file in --run-dir records each "
                    "step: run the same command again to resume. Success, a failed step and Ctrl-C all tear down.",
        example_lines=(
            "eks-inference trial --env dev --budget-usd 40 --dry-run",
            "eks-inference trial --env dev --budget-usd 40 --hours 3 --repeats 2",
            "eks-inference trial --env dev --budget-usd 40 --run-dir out/trial/trial-20261207t101500   # resume",
        ))
    p.add_argument("--env", required=True, help="environment in cdk.json")
    p.add_argument("--budget-usd", type=float, required=True, help="refuse a trial whose worst case costs more")
    p.add_argument("--hours", type=float, default=DEFAULT_HOURS,
                   help="how long the stacks may live; the scheduled teardown fires then")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the cost, create nothing")
    p.add_argument("--run-dir", type=Path, help="the trial's folder (state, logs, report); default out/trial/RUN_ID")
    p.add_argument("--repeats", type=int, default=2, help="load-test runs, each its own series in the report")
    p.add_argument("--target-rps", type=float, default=1000.0, help="the load the plan sizes a fleet for")
    p.add_argument("--transfer-gib", type=float, default=DEFAULT_TRANSFER_GIB,
                   help="data through the NAT gateways to price (an assumption: image pulls for a few nodes)")
    p.add_argument("--pricing", choices=[k.value for k in PricingKind], default=PricingKind.ON_DEMAND.value,
                   help=f"which rate prices the instance-hours (rates other than On-Demand: {PRICING_KEY!r})")
    p.add_argument("--app-dir", type=Path, default=Path("."), help="directory holding cdk.json")
    p.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                   help="CDK context overrides (account=, region=)")
    p.add_argument("--runner", help=argparse.SUPPRESS)  # MODULE:FACTORY, a test's stand-in for AWS and kubectl
    p.set_defaults(func=cmd_trial)


def _check(a: argparse.Namespace) -> None:
    bad = []
    if not (math.isfinite(a.budget_usd) and a.budget_usd > 0):
        bad.append(f"--budget-usd: {a.budget_usd:g} is not a positive amount; give USD, e.g. 40")
    if not (math.isfinite(a.hours) and 0 < a.hours <= 72):
        bad.append(f"--hours: {a.hours:g} is outside (0, 72]; give the hours the stacks may live, e.g. 3")
    if a.repeats < 1:
        bad.append(f"--repeats: {a.repeats} must be at least 1")
    if not (math.isfinite(a.transfer_gib) and a.transfer_gib >= 0):
        bad.append(f"--transfer-gib: {a.transfer_gib:g} must be 0 or more")
    if bad:
        raise ConfigError("\n".join(bad))


def _runner(a: argparse.Namespace, project: Path) -> Any:
    if not a.runner:
        return CommandRunner(project, pricing=a.pricing, target_rps=a.target_rps)
    module, _, attr = a.runner.partition(":")
    return getattr(importlib.import_module(module), attr)(project, a)


def cmd_trial(a: argparse.Namespace) -> int:
    _check(a)
    try:
        context = read_context(a.app_dir, {**parse_context_args(a.context), "env": a.env})
    except OpsError as e:
        raise ConfigError(str(e)) from None
    config = platform_config(context)
    prices = load_prices(None, kind=pricing_kind(a.pricing), rates=context.get(PRICING_KEY) or {})
    est = estimate(config, hours=a.hours, prices=prices, transfer_gib=a.transfer_gib)
    for line in [*est.lines(), *neuron_plan_lines(config)]:
        print(line)
    refusal = over_budget(est, a.budget_usd)
    if refusal:
        print(refusal, file=sys.stderr)
        return EXIT_OVER_BUDGET
    print(f"within --budget-usd {a.budget_usd:g}")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    run_id = new_run_id(now)
    run_dir = a.run_dir or (a.app_dir / "out" / "trial" / run_id)
    if a.dry_run:
        print("steps:")
        for i, step in enumerate(STEPS, 1):
            print(f"  {i}. {step}: {STEP_WHAT[step]}")
        print(f"  then destroy: cdk destroy on success, failure or Ctrl-C; the scheduled teardown at "
              f"{a.hours:g} h if this machine is gone")
        print(f"dry run: nothing created. A trial would write {run_dir / STATE_FILE}, deploy with a scheduled "
              f"teardown {a.hours:g} h after it starts and destroy everything at the end.")
        return 0
    ctx = TrialContext(config=config, run_dir=run_dir, deadline=now + dt.timedelta(hours=a.hours), run_id=run_id,
                       repeats=a.repeats)
    return Trial(_runner(a, a.app_dir.resolve()), ctx, prices=prices,
                 say=lambda s: print(s, flush=True)).run()

