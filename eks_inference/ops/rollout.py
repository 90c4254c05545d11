"""``eks-inference rollout``: a new revision of a model proves itself on a slice of traffic before it takes all of it.

The order is a small state machine, recorded step by step in a state file so that an interrupted rollout continues
where it stopped (every step is safe to run again):

1. ``deploy-canary``: the new revision is served beside the current one (a second RayService per processor, see
   :mod:`eks_inference.k8s.rollout`), and must serve within ``rollout.ready_timeout_minutes``;
2. ``verify``: ``eks-inference verify`` against the canary alone, before any user request reaches it;
3. ``route-canary``: the model's route sends ``rollout.canary_percent`` of its requests to the canary;
4. ``bake``: ``rollout.bake_minutes`` during which none of ``rollout.alerts`` may fire for the model;
5. ``route-all-to-canary``, ``update-stable`` (the current RayService serves the new revision: a ``serveConfigV2``
   change, applied in place), ``route-stable``, ``remove-canary``: the promotion.

A failed deploy, a failed verify or a firing alert before the promotion rolls back by itself (the route without
the canary, the canary removed) and says why in one line. A gating alert that already fires before anything is
applied holds the rollout: it starts nothing. The cluster, HTTP and alert calls sit behind :class:`RolloutBackend`;
:mod:`eks_inference.ops.rollout_kube` is the cluster's, :mod:`eks_inference.ops.rollout_local` serves two revisions
on a local Ray behind a weighted router, as the tests run it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eks_inference.config import ConfigError, PlatformConfig
from eks_inference.k8s.rollout import check_canary_names, weighted_route
from eks_inference.observability.rules import rules_for
from eks_inference.ops.effects import route_effects

PROMOTE_STEPS = ("route-all-to-canary", "update-stable", "route-stable", "remove-canary")
STEPS = ("deploy-canary", "verify", "route-canary", "bake", *PROMOTE_STEPS)
ROLLBACK_STEPS = ("route-back", "remove-canary")
"""A rollback: the route without the canary (the current revision takes all), then the canary removed."""
TERMINAL = ("promoted", "rolled-back", "held")
STATE_DIR = Path(".eks-inference") / "rollouts"
EXIT_PROMOTED, EXIT_ROLLED_BACK, EXIT_HELD, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 3, 2, 130


class StepFailed(Exception):
    """A step found the canary unfit (or could not do its part); the message is the one-line reason."""


@dataclass(frozen=True)
class VerifyOutcome:
    passed: bool
    line: str


class RolloutBackend(Protocol):
    """The seam: what a rollout does to the cluster (or the local stand-in), and what it reads back."""

    def deploy_canary(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        """Serve ``revision`` beside the current one and return once it serves; StepFailed otherwise."""

    def verify(self, revision: str) -> VerifyOutcome:
        """``eks-inference verify`` against the canary alone."""

    def set_canary_share(self, percent: float) -> None:
        """The model's route with ``percent`` of its requests on the canary (0: none, the route as configured)."""

    def firing_alerts(self, names: Sequence[str]) -> list[str]:
        """One line per alert of ``names`` now firing for the model."""

    def update_stable(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        """The current targets serve ``revision`` (and say so) before this returns."""

    def remove_canary(self) -> None:
        """Delete the canary's objects (nothing when there are none)."""


# ---------------------------------------------------------------------------------------------------
# Alerts: Prometheus's /api/v1/alerts, as Amazon Managed Service for Prometheus and Prometheus answer it
# ---------------------------------------------------------------------------------------------------

def firing_for(doc: Any, names: Sequence[str], model: str) -> list[str]:
    """The firing alerts of ``names`` for ``model`` in a ``GET /api/v1/alerts`` answer (``{"status": "success",
    "data": {"alerts": [{"labels": {"alertname": ...}, "state": "firing", ...}]}}``). An alert with an
    ``application`` label counts for that model only; one without counts for every model."""
    if not isinstance(doc, Mapping) or doc.get("status") != "success":
        raise StepFailed(f"the alerts source answered {str(doc)[:120]!r}, not a Prometheus alerts list")
    out = []
    for a in (doc.get("data") or {}).get("alerts") or []:
        labels = a.get("labels") or {}
        if a.get("state") != "firing" or labels.get("alertname") not in names:
            continue
        if labels.get("application") not in (None, model):
            continue
        where = ", ".join(f"{k}={labels[k]}" for k in ("application", "processor") if k in labels)
        summary = (a.get("annotations") or {}).get("summary")
        out.append(f"{labels['alertname']} ({where})" + (f": {summary}" if summary else ""))
    return sorted(out)


def fetch_alerts(url: str, *, timeout_s: float = 10.0,
                 sign: Callable[[urllib.request.Request], urllib.request.Request] | None = None) -> Any:
    """``GET {url}`` (a Prometheus-compatible ``.../api/v1/alerts``), signed by ``sign`` where the source needs it."""
    req = urllib.request.Request(url, headers={"accept": "application/json"})
    if sign is not None:
        req = sign(req)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as e:
        raise StepFailed(f"the alerts source {url} could not be read: {e}") from None


def check_alert_names(config: PlatformConfig) -> None:
    """Every gating alert must be one the environment's rules define: one line per unknown name."""
    known = {r["alert"] for g in rules_for(config)["groups"] for r in g["rules"] if "alert" in r}
    unknown = [a for a in config.rollout.alerts if a not in known]
    if unknown:
        raise ConfigError(*(f"rollout.alerts: {a!r} is not an alert of this environment's rules; use one of "
                            f"{', '.join(sorted(known))}" for a in unknown))


# ---------------------------------------------------------------------------------------------------
# The state file
# ---------------------------------------------------------------------------------------------------

@dataclass
class RolloutState:
    env: str
    model: str
    revision: str
    from_revision: str
    weights_sha256: str | None
    canary_percent: float
    bake_s: float
    alerts: list[str]
    ready_timeout_s: float
    phase: str = "running"
    """``running``, ``rolling-back``, or one of :data:`TERMINAL`."""
    done: list[str] = field(default_factory=list)
    rollback_done: list[str] = field(default_factory=list)
    bake_started_at: float | None = None
    reason: str | None = None
    log: list[str] = field(default_factory=list)

    @property
    def next_step(self) -> str | None:
        return next((s for s in STEPS if s not in self.done), None)

    @property
    def promoting(self) -> bool:
        return any(s in self.done for s in PROMOTE_STEPS[1:])

    def to_doc(self) -> dict[str, Any]:
        return {"format": "eks-inference.rollout", **asdict(self)}

    @staticmethod
    def from_doc(doc: Mapping[str, Any], where: str) -> RolloutState:
        if doc.get("format") != "eks-inference.rollout":
            raise ConfigError(f"{where}: not a rollout state file; remove it or give another --state-dir")
        kw = {k: v for k, v in doc.items() if k != "format"}
        try:
            return RolloutState(**kw)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}; remove the file or give another --state-dir") from None


def state_path(state_dir: Path, env: str, model: str) -> Path:
    return state_dir / env / f"{model}.json"


def read_state(path: Path) -> RolloutState | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e}); remove it or give another --state-dir") from None
    return RolloutState.from_doc(doc, str(path))


def write_state(path: Path, state: RolloutState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_doc(), indent=1) + "\n")
    os.replace(tmp, path)  # a crash leaves the old state or the new one, never half of one


def new_state(config: PlatformConfig, model: str, revision: str, *, weights_sha256: str | None = None,
              canary_percent: float | None = None, bake_s: float | None = None) -> RolloutState:
    """The rollout of ``revision`` of ``model`` with the environment's ``rollout`` settings (overridable)."""
    spec = next((m for m in config.models if m.name == model), None)
    if spec is None:
        raise ConfigError(f"--model: {model!r} is not served in {config.env_name!r}; use one of "
                          f"{', '.join(m.name for m in config.models)}")
    check_canary_names(spec)
    if revision == spec.revision:
        raise ConfigError(f"--revision: {revision!r} is the revision {model!r} already serves; name the new one")
    r = config.rollout
    return RolloutState(env=config.env_name, model=model, revision=revision, from_revision=spec.revision,
                        weights_sha256=weights_sha256,
                        canary_percent=float(r.canary_percent if canary_percent is None else canary_percent),
                        bake_s=float(r.bake_s if bake_s is None else bake_s), alerts=list(r.alerts),
                        ready_timeout_s=r.ready_timeout_s)


# ---------------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------------

class Rollout:
    """Runs a rollout's steps against a backend, recording each in the state file as it completes.

    :param poll_s: how often the bake reads the alerts.
    :param on_step: called after each recorded step (a caller may stop there, e.g. Ctrl-C).
    """

    def __init__(self, state: RolloutState, backend: RolloutBackend, path: Path, *, poll_s: float = 15.0,
                 say: Callable[[str], None] = lambda _m: None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 on_step: Callable[[str, RolloutState], None] = lambda _s, _st: None) -> None:
        self.state, self.backend, self.path = state, backend, path
        self.poll_s, self.say, self.clock, self.sleep, self.on_step = poll_s, say, clock, sleep, on_step

    def _note(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        self.state.log.append(f"{stamp} {line}")
        write_state(self.path, self.state)
        self.say(line)

    def hold_check(self) -> bool:
        """Before anything is applied: a gating alert that already fires holds the rollout (True)."""
        s = self.state
        if s.done or s.phase != "running":
            return False
        firing = self.backend.firing_alerts(s.alerts)
        if firing:
            s.phase, s.reason = "held", f"held: {firing[0]} already fires, so the canary could not be judged by it"
            self._note(s.reason)
            return True
        return False

    def run(self) -> str:
        """Continue until the rollout is promoted, rolled back or held; returns the phase."""
        s = self.state
        if s.phase in TERMINAL:
            return s.phase
        if self.hold_check():
            return s.phase
        while s.phase == "running":
            step = s.next_step
            if step is None:
                s.phase = "promoted"
                self._note(f"promoted: {s.model} serves revision {s.revision} on all its traffic "
                           f"(was {s.from_revision}); set models[{s.model}].revision to {s.revision!r}"
                           + (f" and weights_sha256 to {s.weights_sha256!r}" if s.weights_sha256 else "")
                           + " in cdk.json before the next deploy, which would otherwise serve "
                           f"{s.from_revision!r} again")
                break
            try:
                self._do(step)
            except StepFailed as e:
                if step in PROMOTE_STEPS:
                    self._note(f"{step} failed: {e}; the canary keeps serving; run the command again to resume")
                    raise
                s.phase, s.reason = "rolling-back", f"rolled back: {step} failed: {e}"
                self._note(s.reason)
                break
            s.done.append(step)
            self._note(f"{step}: done")
            self.on_step(step, s)
        if s.phase == "rolling-back":
            self._roll_back()
        return s.phase

    def _do(self, step: str) -> None:
        s, b = self.state, self.backend
        if step == "deploy-canary":
            self.say(f"deploying revision {s.revision} of {s.model} beside {s.from_revision}")
            b.deploy_canary(s.revision, s.weights_sha256, timeout_s=s.ready_timeout_s)
        elif step == "verify":
            outcome = b.verify(s.revision)
            if not outcome.passed:
                raise StepFailed(f"verify: {outcome.line}")
            self.say(f"verify: {outcome.line}")
        elif step == "route-canary":
            b.set_canary_share(s.canary_percent)
        elif step == "bake":
            self._bake()
        elif step == "route-all-to-canary":
            b.set_canary_share(100.0)
        elif step == "update-stable":
            b.update_stable(s.revision, s.weights_sha256, timeout_s=s.ready_timeout_s)
        elif step == "route-stable":
            b.set_canary_share(0.0)
        elif step == "remove-canary":
            b.remove_canary()

    def _bake(self) -> None:
        s = self.state
        if s.bake_started_at is None:
            s.bake_started_at = self.clock()
            self._note(f"bake: {s.canary_percent:g}% of {s.model}'s requests on {s.revision} for "
                       f"{s.bake_s:g} s while {', '.join(s.alerts)} stay quiet")
        while True:
            firing = self.backend.firing_alerts(s.alerts)
            if firing:
                raise StepFailed(f"alert {firing[0]}")
            left = s.bake_started_at + s.bake_s - self.clock()
            if left <= 0:
                return
            self.sleep(min(self.poll_s, left))

    def _roll_back(self) -> None:
        s = self.state
        for step in ROLLBACK_STEPS:
            if step in s.rollback_done:
                continue
            if step == "route-back":
                self.backend.set_canary_share(0.0)
            else:
                self.backend.remove_canary()
            s.rollback_done.append(step)
            self._note(f"rollback {step}: done")
        s.phase = "rolled-back"
        self._note(f"{s.reason}; {s.model} serves {s.from_revision} on all its traffic")

    def promote_now(self) -> str:
        """End the bake by hand (the alerts are still read once) and promote."""
        s = self.state
        if s.phase != "running" or "route-canary" not in s.done:
            raise ConfigError(f"rollout of {s.model} is {s.phase} at step {s.next_step}: only a canary that is "
                              "verified and routed can be promoted")
        if "bake" not in s.done:
            firing = self.backend.firing_alerts(s.alerts)
            if firing:
                raise ConfigError(f"not promoted: {firing[0]} fires for {s.model}; roll back or wait")
            s.done.append("bake")
            self._note("bake: ended by hand (rollout promote)")
        return self.run()

    def roll_back_now(self, why: str = "by hand (rollout rollback)") -> str:
        s = self.state
        if s.phase in TERMINAL:
            return s.phase
        if s.promoting:
            raise ConfigError(f"rollout of {s.model} is past update-stable: the current targets already serve "
                              f"{s.revision}; finish it with `rollout start`, then roll out {s.from_revision} again")
        s.phase, s.reason = "rolling-back", f"rolled back: {why}"
        self._note(s.reason)
        self._roll_back()
        return s.phase


EXIT_CODES = {"promoted": EXIT_PROMOTED, "rolled-back": EXIT_ROLLED_BACK, "held": EXIT_HELD}


# ---------------------------------------------------------------------------------------------------
# The plan (--dry-run) and status
# ---------------------------------------------------------------------------------------------------

def plan_lines(state: RolloutState, route: Mapping[str, Any] | None) -> list[str]:
    """What a rollout will do, step by step, with each route change as what it does to traffic."""
    s = state
    out = [f"rollout of {s.model} in {s.env}: revision {s.from_revision} -> {s.revision}"
           + (f" (weights {s.weights_sha256[:12]}...)" if s.weights_sha256 else "")]
    steps = {
        "deploy-canary": f"serve {s.revision} beside {s.from_revision} (one canary RayService per processor), "
                         f"ready within {s.ready_timeout_s / 60:g} min",
        "verify": f"verify the canary against the fp32 reference of {s.revision}'s weights, before it takes traffic",
        "route-canary": f"send {s.canary_percent:g}% of {s.model}'s requests to the canary",
        "bake": f"bake {s.bake_s / 60:g} min while {', '.join(s.alerts)} stay quiet for {s.model}",
        "route-all-to-canary": "promote: the canary takes all requests",
        "update-stable": f"the current RayServices serve {s.revision} (serveConfigV2 only: in place, no new cluster)",
        "route-stable": "the route as configured: the current RayServices, now on the new revision, take all",
        "remove-canary": "delete the canary RayServices",
    }
    shares = {"route-canary": s.canary_percent, "route-all-to-canary": 100.0, "route-stable": 0.0}
    current = dict(route) if route is not None else None
    for i, step in enumerate(STEPS, 1):
        mark = "done" if step in s.done else "    "
        out.append(f"  {i}. [{mark}] {step}: {steps[step]}")
        if current is not None and step in shares:
            after = weighted_route(current, shares[step])
            for e in route_effects(current, after):
                out.append(f"       traffic: {e.text}")
            current = after
    out.append("  on a failed deploy or verify, or a firing alert before step 5: the route as configured, the canary "
               "deleted, and the reason in one line")
    if route is not None:
        back = weighted_route(dict(route), s.canary_percent)
        for e in route_effects(back, weighted_route(back, 0.0)):
            out.append(f"       rollback traffic: {e.text}")
    return out


def status_lines(state: RolloutState) -> list[str]:
    s = state
    head = f"{s.model} in {s.env}: {s.from_revision} -> {s.revision}: {s.phase}"
    if s.phase == "running":
        head += f", next step {s.next_step}"
        if s.bake_started_at is not None and "bake" not in s.done:
            head += f" (baking since {time.strftime('%H:%M:%SZ', time.gmtime(s.bake_started_at))})"
    lines = [head]
    if s.reason:
        lines.append(s.reason)
    lines += [f"  {line}" for line in s.log[-8:]]
    return lines
