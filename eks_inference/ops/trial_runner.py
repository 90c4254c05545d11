"""The real side of ``eks-inference trial``: each step as the commands docs/deploy.md has a person type.

Every step is a command line built by a pure function (tested) and run as a child process whose output goes to the
terminal and to ``RUN_DIR/logs/STEP.log``. Each is idempotent: ``cdk deploy`` of an unchanged app changes nothing,
``publish`` finds the weights already there (the bucket refuses a replacement), ``kubectl wait`` on what is ready
returns at once, the report is rebuilt from the same results, and ``cdk destroy`` of nothing succeeds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eks_inference.ops.capacity_errors import capacity_advice
from eks_inference.ops.trial import DEADLINE_CONTEXT, RUN_ID_CONTEXT, TrialContext, run_ids

SERVING_NAMESPACE = "eks-inference"
LOADTEST_NAMESPACE = "eks-inference-loadtest"
WAIT_TIMEOUT = "3600s"


class StepFailed(RuntimeError):
    pass


def cdk(project: Path) -> list[str]:
    """The CDK CLI the project installs (``npm ci``), never a global one of another version."""
    return [str(project / "node_modules" / ".bin" / "cdk")]


def deploy_command(project: Path, ctx: TrialContext, *, run_id: str | None = None) -> list[str]:
    cmd = [*cdk(project), "deploy", "--all", "--require-approval", "never", "-c", f"env={ctx.config.env_name}",
           "-c", f"{DEADLINE_CONTEXT}={ctx.deadline_iso}", "--outputs-file", str(ctx.run_dir / "outputs.json")]
    if run_id:
        cmd += ["-c", f"{RUN_ID_CONTEXT}={run_id}"]
    return cmd


def preflight_commands(project: Path, ctx: TrialContext) -> list[list[str]]:
    """Synthesize what the deploy will deploy (the deadline stack included), then check the account against it."""
    assembly = str(ctx.run_dir / "cdk.out")
    return [[*cdk(project), "synth", "--quiet", "-c", f"env={ctx.config.env_name}",
             "-c", f"{DEADLINE_CONTEXT}={ctx.deadline_iso}", "-o", assembly],
            [sys.executable, "-m", "eks_inference.cli", "preflight", "--env", ctx.config.env_name,
             "--assembly", assembly]]


def destroy_command(project: Path, ctx: TrialContext) -> list[str]:
    return [*cdk(project), "destroy", "--all", "--force", "-c", f"env={ctx.config.env_name}",
            "-c", f"{DEADLINE_CONTEXT}={ctx.deadline_iso}"]


def outputs(ctx: TrialContext) -> dict[str, str]:
    """Every stack output of the deploy, by key (``ModelRepositoryUri``, ``UpdateKubeconfig``, ...)."""
    path = ctx.run_dir / "outputs.json"
    if not path.is_file():
        raise StepFailed(f"{path}: no stack outputs; the deploy step writes them")
    doc = json.loads(path.read_text())
    return {k: str(v) for stack in doc.values() for k, v in stack.items()}


def publish_commands(ctx: TrialContext, bucket: str) -> list[list[str]]:
    """Each model's weights from its ``local_source``; publishing what is there already is a no-op."""
    return [[sys.executable, "-m", "eks_inference.cli", "publish", m.local_source, "--to", bucket,
             "--name", m.name, "--revision", m.revision, "--task", m.task.value] for m in ctx.config.models]


def wait_commands(kind: str, ctx: TrialContext) -> list[list[str]]:
    if kind == "compile":  # then: every model on inf2 has an artifact by the pinned Neuron compiler, or the step fails
        return [["kubectl", "-n", SERVING_NAMESPACE, "wait", "--for=condition=complete", "job",
                 "-l", "eks-inference/role=compile", f"--timeout={WAIT_TIMEOUT}"],
                [sys.executable, "-m", "eks_inference.cli", "preflight", "--env", ctx.config.env_name,
                 "--artifacts-only"]]
    if kind == "verify":  # a RayService turns Ready only once its replicas serve the verified weights
        return [["kubectl", "-n", SERVING_NAMESPACE, "wait", "--for=condition=Ready", "rayservice", "--all",
                 f"--timeout={WAIT_TIMEOUT}"]]
    if kind == "loadtest":
        return [["kubectl", "-n", LOADTEST_NAMESPACE, "wait", "--for=condition=complete", "job",
                 "-l", f"eks-inference/run-id={rid}", f"--timeout={WAIT_TIMEOUT}"] for rid in run_ids(ctx)]
    raise ValueError(kind)


def report_command(ctx: TrialContext, bucket: str, pricing: str) -> list[str]:
    return [sys.executable, "-m", "eks_inference.cli", "loadtest", "report",
            *(f"{bucket.rstrip('/')}/results/{rid}/" for rid in run_ids(ctx)),
            "--out", str(ctx.run_dir / "report"), "--pricing", pricing, "--quiet"]


def plan_command(ctx: TrialContext, target_rps: float, pricing: str) -> list[str]:
    return [sys.executable, "-m", "eks_inference.cli", "plan", str(ctx.run_dir / "report"),
            "--target-rps", f"{target_rps:g}", "--pricing", pricing]


def count_nodes(doc: Mapping[str, Any]) -> dict[str, int]:
    """``kubectl get nodes -o json`` → nodes by ``node.kubernetes.io/instance-type``."""
    out: dict[str, int] = {}
    for item in doc.get("items") or []:
        itype = ((item.get("metadata") or {}).get("labels") or {}).get("node.kubernetes.io/instance-type", "unknown")
        out[itype] = out.get(itype, 0) + 1
    return out


class CommandRunner:
    """Runs each step's commands in ``project`` (the folder holding cdk.json)."""

    def __init__(self, project: Path, *, pricing: str = "on-demand", target_rps: float = 1000.0) -> None:
        self.project, self.pricing, self.target_rps = project, pricing, target_rps

    def _run(self, ctx: TrialContext, step: str, commands: Sequence[Sequence[str]]) -> str:
        log = ctx.run_dir / "logs" / f"{step}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = []
        with log.open("a", encoding="utf-8") as f:
            for cmd in commands:
                f.write("$ " + " ".join(cmd) + "\n")
                f.flush()
                proc = subprocess.run(list(cmd), cwd=self.project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, check=False)
                f.write(proc.stdout)
                out.append(proc.stdout)
                if proc.returncode != 0:
                    tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
                    raise StepFailed(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} exited {proc.returncode}: "
                                     f"{tail[0]} (all of it in {log})")
        return "".join(out)

    def preflight(self, ctx: TrialContext) -> Any:
        for tool in ("kubectl", "aws"):
            if shutil.which(tool) is None:
                raise StepFailed(f"{tool} is not on PATH; install it before a trial")
        self._run(ctx, "preflight", preflight_commands(self.project, ctx))
        return None

    def deploy(self, ctx: TrialContext) -> Any:
        try:
            self._run(ctx, "deploy", [deploy_command(self.project, ctx)])
        except StepFailed:
            advice = self._capacity_advice(ctx)
            if advice:
                raise StepFailed(advice) from None
            raise
        kubeconfig = outputs(ctx).get("UpdateKubeconfig")
        if kubeconfig:
            self._run(ctx, "deploy", [kubeconfig.split()])
        return {"bucket": outputs(ctx).get("ModelRepositoryUri")}

    def _capacity_advice(self, ctx: TrialContext) -> str | None:
        """What the node groups' stack says, when a group could not get its instances."""
        stack = f"EksInference-{ctx.config.env_name}-Cluster"
        proc = subprocess.run(["aws", "cloudformation", "describe-stack-events", "--stack-name", stack,
                               "--region", ctx.config.region, "--output", "json"], cwd=self.project,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None
        return capacity_advice(json.loads(proc.stdout).get("StackEvents") or [])

    def _bucket(self, ctx: TrialContext) -> str:
        bucket = (ctx.results.get("deploy") or {}).get("bucket") or outputs(ctx).get("ModelRepositoryUri")
        if not bucket:
            raise StepFailed("no ModelRepositoryUri among the stack outputs")
        return str(bucket)

    def publish(self, ctx: TrialContext) -> Any:
        self._run(ctx, "publish", publish_commands(ctx, self._bucket(ctx)))

    def compile(self, ctx: TrialContext) -> Any:
        self._run(ctx, "compile", wait_commands("compile", ctx))

    def verify(self, ctx: TrialContext) -> Any:
        self._run(ctx, "verify", wait_commands("verify", ctx))

    def loadtest(self, ctx: TrialContext) -> Any:
        for rid in run_ids(ctx):
            self._run(ctx, "loadtest", [deploy_command(self.project, ctx, run_id=rid)])
        self._run(ctx, "loadtest", wait_commands("loadtest", ctx))
        return list(run_ids(ctx))

    def fetch(self, ctx: TrialContext) -> Any:
        self._run(ctx, "fetch", [report_command(ctx, self._bucket(ctx), self.pricing)])
        plan = self._run(ctx, "fetch", [plan_command(ctx, self.target_rps, self.pricing)])
        (ctx.run_dir / "plan.txt").write_text(plan)
        return str(ctx.run_dir / "report" / "report.html")

    def destroy(self, ctx: TrialContext) -> Any:
        self._run(ctx, "destroy", [destroy_command(self.project, ctx)])

    def nodes(self, ctx: TrialContext) -> Mapping[str, int]:
        proc = subprocess.run(["kubectl", "get", "nodes", "-o", "json", "--request-timeout=20s"], cwd=self.project,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return {}
        return count_nodes(json.loads(proc.stdout))
