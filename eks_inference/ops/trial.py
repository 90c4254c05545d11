"""``eks-inference trial``: the real race in one command, inside a budget, never leaving a bill running.

Two halves. :func:`estimate` says, before anything exists, what a trial creates, for how long and at what cost
(from the same price table as every other cost), and :func:`over_budget` refuses a trial whose worst case exceeds
the budget. :class:`Trial` then runs the steps in order, each recorded in a state file under the run folder, so a
second invocation with the same folder skips what is done; every way out (success, a failed step, Ctrl-C, the
deadline) runs the teardown. The steps call a :class:`Runner`, the seam between the order and the AWS and
Kubernetes calls: :mod:`eks_inference.ops.trial_runner` is the real one, tests pass recorders.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eks_inference.config import LOADTEST_RUN_ID_KEY, TRIAL_DEADLINE_KEY, ConfigError, PlatformConfig
from eks_inference.costs import EnvironmentCost, Line, environment_cost
from eks_inference.k8s.load_test_nodes import load_test_node_group
from eks_inference.tables.prices import DEFAULT_PRICES, PriceTable

STEPS = ("preflight", "deploy", "publish", "compile", "verify", "loadtest", "fetch")
"""In order; ``destroy`` follows every run, whatever happened."""
STEP_WHAT = {
    "preflight": "check the account, the quotas, the config and the tools (eks-inference preflight)",
    "deploy": "cdk deploy the stacks, with the scheduled teardown at the deadline",
    "publish": "publish the weights to the model repository",
    "compile": "wait for the compile Jobs (Inferentia), then check their artifacts are published",
    "verify": "wait until every target answers and verifies against its reference",
    "loadtest": "the in-cluster load test, once per repeat",
    "fetch": "fetch the report and write the fleet plan",
}
"""What each step does, for the dry run's plan."""
IN_THE_STACKS = frozenset({"deploy", "publish", "compile", "verify", "loadtest"})
"""Steps whose work lives in the stacks: a teardown undoes them, so a later resume does them again."""
STATE_FILE = "state.json"
DEADLINE_CONTEXT = TRIAL_DEADLINE_KEY
RUN_ID_CONTEXT = LOADTEST_RUN_ID_KEY

EXIT_DONE, EXIT_FAILED, EXIT_OVER_BUDGET, EXIT_INTERRUPTED = 0, 1, 3, 130

NAT_DATA_PER_GB = {"us-east-1": 0.045, "us-east-2": 0.045, "us-west-2": 0.045, "eu-west-1": 0.048}
"""NAT gateway data processing, USD per GB, checked with the hourly NAT prices in ``costs.py`` (Amazon VPC pricing
page): ECR image pulls leave through the NAT gateways (the VPC's only gateway endpoint is S3's)."""
ALB_HOURLY = {"us-east-1": 0.0225, "us-east-2": 0.0225, "us-west-2": 0.0225}
"""Application Load Balancer, USD per ALB-hour (Elastic Load Balancing pricing page, checked 2026-12-07); the
LCU-hours on top ($0.008 each in these regions) follow the traffic and are not estimated. Other regions: n/a."""
DEFAULT_HOURS = 3.0
DEFAULT_TRANSFER_GIB = 20.0
"""An assumption, not a measurement: image pulls through NAT for a few nodes; give yours with --transfer-gib."""


# ---------------------------------------------------------------------------------------------------
# Before anything exists: what, for how long, at what cost
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialEstimate:
    config: PlatformConfig
    hours: float
    cost: EnvironmentCost
    prices: PriceTable
    transfer_gib: float
    nat_data_per_gb: float | None

    @property
    def data_usd(self) -> float | None:
        return None if self.nat_data_per_gb is None else self.transfer_gib * self.nat_data_per_gb

    def usd(self, size: int) -> float:
        """Cost of the whole trial with every group at ``size`` (1 desired, 2 max) for ``hours``, data included."""
        return self.cost.total(size) * self.hours + (self.data_usd or 0.0)

    @property
    def expected_usd(self) -> float:
        return self.usd(1)

    @property
    def worst_usd(self) -> float:
        """Every group at its max_size for the whole trial: what the budget is held against."""
        return self.usd(2)

    def lines(self) -> list[str]:
        c = self.config
        out = [f"trial of {c.env_name!r} in {c.account}/{c.region} for {self.hours:g} h "
               f"(instance prices: {self.prices.label}; NAT, EKS, ElastiCache and ALB at list prices):"]
        for line in self.cost.lines:
            out.append("  " + _describe(line, c, self.hours))
        data = self.data_usd
        out.append(f"  data: {self.transfer_gib:g} GiB through NAT (assumed; --transfer-gib) at "
                   + ("n/a" if self.nat_data_per_gb is None else f"${self.nat_data_per_gb:g}/GB = ${data:,.2f}"))
        if not c.front_door.enabled:
            out.append("  load balancers: none (front_door is off: endpoints are reached through the API server)")
        if self.cost.unpriced:
            out.append("  not priced (no price in the table): " + ", ".join(x.item for x in self.cost.unpriced))
        out.append(f"estimate: ${self.expected_usd:,.2f} at desired sizes, ${self.worst_usd:,.2f} if every group "
                   f"reached max_size for all {self.hours:g} h (the figure held against the budget)")
        return out


def _describe(line: Line, config: PlatformConfig, hours: float) -> str:
    lo, desired, hi = line.counts
    unit = "n/a" if line.unit_hourly is None else f"${line.unit_hourly:,.4g}/h"
    each = line.hourly(1)
    cost = "n/a" if each is None else f"${each * hours:,.2f}"
    note = f" ({line.note})" if line.note else ""
    name = line.item.removeprefix("node group ")
    group = next((g for g in config.node_groups if g.name == name), None)
    capacity = ""
    if group is not None and group.enabled:
        capacity = f", {group.capacity_type.value}"
    return (f"{line.item}: {line.detail}{capacity}, {lo} min / {desired} desired / {hi} max at {unit} -> "
            f"{cost} at desired{note}")


def estimate(config: PlatformConfig, *, hours: float, prices: PriceTable = DEFAULT_PRICES,
             transfer_gib: float = DEFAULT_TRANSFER_GIB) -> TrialEstimate:
    """The synthesized config's node groups (the load-test clients' included), NAT gateways, EKS, the GCS store."""
    targets = sum(len(m.processors) for m in config.models)
    clients = load_test_node_group(config.loadtest, targets)
    cost = environment_cost(config, prices, extra_groups=[(clients, "load-test clients, while a run runs")])
    if config.front_door.enabled:
        alb = Line("load balancer (front door)", f"an {config.front_door.scheme.value} ALB, hourly charge",
                   ALB_HOURLY.get(config.region), (1, 1, 1), "LCU-hours follow the traffic: not counted")
        cost = EnvironmentCost(cost.env_name, cost.region, (*cost.lines, alb))
    return TrialEstimate(config=config, hours=hours, cost=cost, prices=prices, transfer_gib=transfer_gib,
                         nat_data_per_gb=NAT_DATA_PER_GB.get(config.region))


def over_budget(est: TrialEstimate, budget_usd: float) -> str | None:
    """One line when the worst case exceeds the budget, saying by how much and what to change."""
    if est.worst_usd <= budget_usd:
        return None
    hourly = est.cost.total(2)
    fits = max(0.0, (budget_usd - (est.data_usd or 0.0)) / hourly) if hourly else 0.0
    return (f"trial: estimate ${est.worst_usd:,.2f} (every group at max_size for {est.hours:g} h) exceeds "
            f"--budget-usd {budget_usd:g}; raise the budget, lower --hours (at most {fits:.2f} h fit) or the "
            "groups' max_size; nothing was created")


# ---------------------------------------------------------------------------------------------------
# The run: steps in order, a state file, teardown on every way out
# ---------------------------------------------------------------------------------------------------

@dataclass
class TrialContext:
    """What every step may read: the environment, the run folder, the deadline and each earlier step's result."""

    config: PlatformConfig
    run_dir: Path
    deadline: dt.datetime
    run_id: str
    repeats: int = 1
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def deadline_iso(self) -> str:
        return self.deadline.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Runner(Protocol):
    """The AWS and Kubernetes side of each step; every method is idempotent (a resume may repeat a half-done one)
    and returns what later steps need (JSON-serializable), or None."""

    def preflight(self, ctx: TrialContext) -> Any: ...
    def deploy(self, ctx: TrialContext) -> Any: ...
    def publish(self, ctx: TrialContext) -> Any: ...
    def compile(self, ctx: TrialContext) -> Any: ...
    def verify(self, ctx: TrialContext) -> Any: ...
    def loadtest(self, ctx: TrialContext) -> Any: ...
    def fetch(self, ctx: TrialContext) -> Any: ...
    def destroy(self, ctx: TrialContext) -> Any: ...
    def nodes(self, ctx: TrialContext) -> Mapping[str, int]:
        """Running nodes by instance type now ({} when there is no cluster)."""
        ...


class DeadlinePassed(RuntimeError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Trial:
    """The state machine. ``state.json`` holds each step's status (``done``, ``failed``, ``interrupted``) with its
    times and result, the node samples the instance hours are counted from, and the teardowns."""

    def __init__(self, runner: Runner, ctx: TrialContext, *, prices: PriceTable = DEFAULT_PRICES,
                 say: Callable[[str], None] = print, clock: Callable[[], dt.datetime] = _now) -> None:
        self.runner, self.ctx, self.prices, self.say, self.clock = runner, ctx, prices, say, clock
        self.path = ctx.run_dir / STATE_FILE
        self.state = self._load()

    # state --------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self.path.is_file():
            state: dict[str, Any] = json.loads(self.path.read_text())
            if state.get("env") != self.ctx.config.env_name:
                raise ConfigError(f"--run-dir: {self.path} is a trial of {state.get('env')!r}, not "
                                  f"{self.ctx.config.env_name!r}; give another --run-dir")
            self.ctx.run_id = str(state.get("run_id") or self.ctx.run_id)
            self.ctx.deadline = dt.datetime.fromisoformat(str(state["deadline"]).replace("Z", "+00:00"))
            self.ctx.results.update({k: v.get("result") for k, v in state["steps"].items()
                                     if v.get("status") == "done"})
            return state
        return {"env": self.ctx.config.env_name, "run_id": self.ctx.run_id, "deadline": self.ctx.deadline_iso,
                "steps": {}, "teardowns": [], "node_samples": []}

    def _save(self) -> None:
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def _stamp(self) -> str:
        return self.clock().isoformat(timespec="seconds")

    def _sample(self) -> None:
        try:
            nodes = {str(k): int(v) for k, v in self.runner.nodes(self.ctx).items() if v}
        except Exception as e:  # a node count is worth having, never worth failing a step or a teardown for
            self.say(f"  (nodes not counted: {type(e).__name__}: {e})")
            return
        self.state["node_samples"].append([self._stamp(), nodes])
        self._save()

    def done(self, step: str) -> bool:
        return bool(self.state["steps"].get(step, {}).get("status") == "done")

    # run ----------------------------------------------------------------------------------------
    def run(self) -> int:
        self._save()
        self.say(f"trial {self.ctx.run_id}: state in {self.path}; scheduled teardown at {self.ctx.deadline_iso}")
        code = EXIT_DONE
        try:
            for i, step in enumerate(STEPS, 1):
                if self.done(step):
                    self.say(f"[{i}/{len(STEPS)}] {step}: done before, skipped")
                    continue
                if self.clock() >= self.ctx.deadline:
                    raise DeadlinePassed(f"the trial's deadline {self.ctx.deadline_iso} has passed before {step}")
                self.say(f"[{i}/{len(STEPS)}] {step} ...")
                self.state["steps"][step] = {"status": "running", "started": self._stamp()}
                self._save()
                t0 = time.monotonic()
                try:
                    result = getattr(self.runner, step)(self.ctx)
                except KeyboardInterrupt:
                    self.state["steps"][step].update(status="interrupted", ended=self._stamp())
                    raise
                except Exception as e:
                    self.state["steps"][step].update(status="failed", ended=self._stamp(),
                                                     error=f"{type(e).__name__}: {e}")
                    raise
                self.ctx.results[step] = result
                self.state["steps"][step].update(status="done", ended=self._stamp(), result=result)
                self._save()
                self._sample()
                self.say(f"[{i}/{len(STEPS)}] {step}: done in {time.monotonic() - t0:,.0f} s")
        except KeyboardInterrupt:
            self.say("interrupted: tearing down (Ctrl-C again is ignored until the stacks are gone)")
            code = EXIT_INTERRUPTED
        except Exception as e:
            self.say(f"trial: error: {type(e).__name__}: {e}; tearing down")
            code = EXIT_FAILED
        code = self._teardown(code)
        self._usage()
        report = self.ctx.results.get("fetch")
        if code == EXIT_DONE and report:
            self.say(f"report: {report}")
        return code

    def _teardown(self, code: int) -> int:
        """Destroy the stacks, with Ctrl-C ignored meanwhile; a step that lived in the stacks is undone."""
        if "deploy" not in self.state["steps"]:
            self.say("[teardown] nothing was deployed")
            return code
        entry: dict[str, Any] = {"started": self._stamp()}
        self.state["teardowns"].append(entry)
        self._sample()
        ignore = _ignore_sigint()
        try:
            self.say("[teardown] destroy ...")
            self.runner.destroy(self.ctx)
            entry.update(status="done", ended=self._stamp())
            for step in IN_THE_STACKS:
                if self.state["steps"].get(step, {}).get("status") == "done":
                    self.state["steps"][step]["status"] = "torn down"
            self.say("[teardown] destroy: done")
        except Exception as e:
            entry.update(status="failed", ended=self._stamp(), error=f"{type(e).__name__}: {e}")
            self.say(f"trial: error: teardown failed ({type(e).__name__}: {e}); the scheduled teardown at "
                     f"{self.ctx.deadline_iso} still removes the stacks, or run this command again to retry")
            code = code or EXIT_FAILED
        finally:
            ignore.restore()
            self._save()
        self.state["node_samples"].append([self._stamp(), {}])
        self._save()
        return code

    def node_hours(self) -> dict[str, float]:
        """Instance hours by type: each sample's count held until the next sample (the last one is the teardown's
        end, with no nodes)."""
        out: dict[str, float] = {}
        samples = self.state["node_samples"]
        for (t0, nodes), (t1, _) in itertools.pairwise(samples):
            hours = (dt.datetime.fromisoformat(t1) - dt.datetime.fromisoformat(t0)).total_seconds() / 3600
            for itype, n in nodes.items():
                out[itype] = out.get(itype, 0.0) + n * max(0.0, hours)
        return out

    def _usage(self) -> None:
        hours = self.node_hours()
        if not hours:
            self.say("instance hours used: none counted")
            return
        total, parts = 0.0, []
        for itype, h in sorted(hours.items()):
            unit = self.prices.hourly(itype, self.ctx.config.region)
            cost = None if unit is None else unit * h
            total += cost or 0.0
            parts.append(f"{itype} {h:,.2f} h" + ("" if cost is None else f" ${cost:,.2f}"))
        self.say(f"instance hours used: {'; '.join(parts)}; ${total:,.2f} at {self.prices.label} "
                 "(EKS, NAT and data on top)")


class _Ignored:
    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _ignore_sigint() -> _Ignored:
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: None)
    except ValueError:  # not the main thread: nothing to ignore with
        return _Ignored(None)
    return _Ignored(previous)


def new_run_id(now: dt.datetime) -> str:
    return "trial-" + now.strftime("%Y%m%dt%H%M%S").lower()


def run_ids(ctx: TrialContext) -> Sequence[str]:
    """One load-test run per repeat, each its own series in the report."""
    return [f"{ctx.run_id}-{i}" for i in range(1, ctx.repeats + 1)]
