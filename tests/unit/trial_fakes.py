"""Stand-ins for the trial's AWS and Kubernetes side: they record each call, in order, to a JSON-lines file."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eks_inference.ops.trial import TrialContext

LOG_ENV = "EKS_INFERENCE_TRIAL_FAKE_LOG"


class Killed(BaseException):
    """The process dying mid-step (a laptop that disconnects): nothing after it runs, not even a teardown."""


class Recorder:
    def __init__(self, log: Path | None = None, *, fail_at: str | None = None, kill_at: str | None = None,
                 block_at: str | None = None, fail_destroy: bool = False) -> None:
        self.log, self.fail_at, self.kill_at, self.block_at = log, fail_at, kill_at, block_at
        self.fail_destroy = fail_destroy
        self.calls: list[str] = []
        self.up = False

    def _call(self, step: str, ctx: TrialContext) -> Any:
        self.calls.append(step)
        if self.log is not None:
            with self.log.open("a") as f:
                f.write(json.dumps({"step": step, "deadline": ctx.deadline_iso}) + "\n")
        if step == self.kill_at:
            raise Killed(step)
        if step == self.fail_at:
            raise RuntimeError(f"{step} failed on purpose")
        if step == self.block_at:
            while True:  # until SIGINT arrives
                time.sleep(0.05)
        if step == "deploy":
            self.up = True
        return {"fetch": str(ctx.run_dir / "report" / "report.html")}.get(step, f"{step} ok")

    def preflight(self, ctx: TrialContext) -> Any:
        return self._call("preflight", ctx)

    def deploy(self, ctx: TrialContext) -> Any:
        return self._call("deploy", ctx)

    def publish(self, ctx: TrialContext) -> Any:
        return self._call("publish", ctx)

    def compile(self, ctx: TrialContext) -> Any:
        return self._call("compile", ctx)

    def verify(self, ctx: TrialContext) -> Any:
        return self._call("verify", ctx)

    def loadtest(self, ctx: TrialContext) -> Any:
        return self._call("loadtest", ctx)

    def fetch(self, ctx: TrialContext) -> Any:
        return self._call("fetch", ctx)

    def destroy(self, ctx: TrialContext) -> Any:
        self._call("destroy", ctx)
        if self.fail_destroy:
            raise RuntimeError("DELETE_FAILED")
        self.up = False

    def nodes(self, ctx: TrialContext) -> Mapping[str, int]:
        return {"m7i.large": 2, "inf2.xlarge": 1} if self.up else {}


def recording(project: Path, args: argparse.Namespace) -> Recorder:
    """``--runner tests.unit.trial_fakes:recording``: every step succeeds."""
    return Recorder(Path(os.environ[LOG_ENV]))


def blocking(project: Path, args: argparse.Namespace) -> Recorder:
    """``--runner tests.unit.trial_fakes:blocking``: the load test runs until Ctrl-C."""
    return Recorder(Path(os.environ[LOG_ENV]), block_at="loadtest")
