"""The GitHub Actions workflows: actionlint (with shellcheck on every ``run:``), actions pinned by commit,
no job holding a write permission it does not use, and nothing unverified running where an OIDC token can be had."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = ROOT / ".venv" / "bin"
PINNED = re.compile(r"^\s*(?:-\s*)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*\s*$")
USES = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)")


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job.get("steps", []))


def uses_oidc(job: dict[str, Any]) -> bool:
    if "uses" in job and str(job["uses"]).startswith("./"):
        called = load(ROOT / job["uses"])
        return any(uses_oidc(j) for j in called["jobs"].values())
    return "aws-actions/configure-aws-credentials@" in steps_text(job)


def test_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"pull-request.yml", "deploy.yml", "deploy-environment.yml"}


def test_actionlint_with_shellcheck() -> None:
    actionlint = BIN / "actionlint"
    if not actionlint.exists():
        pytest.fail(".venv/bin/actionlint is missing: run `make setup` (the dev set installs it)")
    assert (BIN / "shellcheck").exists(), ".venv/bin/shellcheck is missing: run `make setup`"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(actionlint), "-verbose", *map(str, WORKFLOWS)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Rule "shellcheck" was disabled' not in proc.stderr


def test_every_action_is_pinned_to_a_commit() -> None:
    seen = 0
    for path in WORKFLOWS:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = USES.match(line)
            if not m or m.group(1).startswith("./"):
                continue
            seen += 1
            assert PINNED.match(line), f"{path.name}:{n}: pin to a full commit SHA with '# vX.Y.Z': {line.strip()}"
    assert seen >= 10


def test_permissions_are_minimal() -> None:
    for path in WORKFLOWS:
        wf = load(path)
        assert wf.get("permissions") == {}, f"{path.name}: set top-level permissions: {{}}"
        for name, job in wf["jobs"].items():
            where = f"{path.name} job {name}"
            perms = job.get("permissions")
            assert isinstance(perms, dict), f"{where}: declare its permissions"
            writes = {k for k, v in perms.items() if v == "write"}
            allowed = set()
            if uses_oidc(job):
                allowed.add("id-token")
            if re.search(r"gh api .*comments", steps_text(job)):
                allowed.add("pull-requests")
            assert writes == allowed, f"{where}: writes {sorted(writes)}, needs {sorted(allowed)}"
            assert set(perms.values()) <= {"read", "write", "none"}


def test_prod_waits_for_dev_and_runs_in_its_environment() -> None:
    deploy = load(ROOT / ".github" / "workflows" / "deploy.yml")
    assert deploy["jobs"]["prod"]["needs"] == "dev"
    assert [deploy["jobs"][e]["with"]["environment"] for e in ("dev", "prod")] == ["dev", "prod"]
    called = load(ROOT / ".github" / "workflows" / "deploy-environment.yml")
    job = called["jobs"]["deploy"]
    assert job["environment"] == "${{ inputs.environment }}"
    text = steps_text(job)
    assert text.index("eks_inference.cli preflight") < text.index("cdk deploy")


# --------------------------------------------------------------------------------------------------
# Jobs that can ask GitHub for an OIDC token (issue "Safe in a shared account", finding 4)
# --------------------------------------------------------------------------------------------------

LOCKED_INSTALL = re.compile(r"pip install (?=.*--require-hashes)(?=.*--only-binary :all:)(?=.*--no-deps)"
                            r"(?=.*--index-url https://pypi\.org/simple)(?=.*-r requirements-deploy\.lock)")


def token_jobs() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, workflow, job) for every job granted ``id-token: write``."""
    out = []
    for path in WORKFLOWS:
        wf = load(path)
        for name, job in wf["jobs"].items():
            if (job.get("permissions") or {}).get("id-token") == "write" and "steps" in job:
                out.append((f"{path.name} job {name}", wf, job))
    return out


def commands(job: dict[str, Any]) -> list[str]:
    """Each ``run:`` of the job, continuation lines joined, one command per line."""
    return [ln.strip() for s in job.get("steps", []) for ln in str(s.get("run", "")).replace("\\\n", " ").splitlines()
            if ln.strip()]


def test_token_jobs_install_only_the_hash_locked_deploy_set() -> None:
    """GIVEN every job that can mint an OIDC token WHEN its commands are read THEN Python packages come from
    requirements-deploy.lock alone (hashes, wheels only, PyPI alone, no resolution), Node packages from the lock file
    without install scripts, and nothing else is installed: no `make setup`, no dev set, no extra index."""
    jobs = token_jobs()
    assert {where for where, _, _ in jobs} == {"deploy-environment.yml job deploy",
                                               "pull-request.yml job diff-deployed"}
    for where, wf, job in jobs:
        env = {**wf.get("env", {}), **job.get("env", {})}
        assert "PIP_EXTRA_INDEX_URL" not in env and "PIP_INDEX_URL" not in env, f"{where}: a second index"
        assert env.get("PIP_CONFIG_FILE") == "/dev/null", f"{where}: a pip config file could add an index"
        installs = 0
        for cmd in commands(job):
            assert not re.search(r"\bmake\b", cmd), f"{where}: `{cmd}` installs through the Makefile's dev set"
            if re.search(r"\bpip install\b", cmd):
                assert LOCKED_INSTALL.search(cmd), f"{where}: `{cmd}` is not the locked install"
                installs += 1
            if re.search(r"\bnpm (ci|install|i)\b", cmd):
                assert cmd.startswith("npm ci ") and "--ignore-scripts" in cmd, f"{where}: `{cmd}`"
            assert not re.search(r"\b(pipx|uv|npx|curl|wget|pip download)\b", cmd), f"{where}: `{cmd}` fetches code"
        assert installs == 1, f"{where}: {installs} pip installs"


def test_token_jobs_run_no_container_image_for_qemu() -> None:
    """setup-qemu-action runs an image it pulls by tag, privileged; the arm64 handler comes from the runner's
    signed Ubuntu archive instead."""
    for where, _, job in token_jobs():
        text = steps_text(job)
        assert "setup-qemu-action" not in text and "docker run" not in text, where
    deploy = load(ROOT / ".github" / "workflows" / "deploy-environment.yml")["jobs"]["deploy"]
    assert "apt-get install -y -qq --no-install-recommends qemu-user-static" in steps_text(deploy)


def test_synthesis_runs_without_a_token_and_the_deploy_deploys_its_assembly() -> None:
    jobs = load(ROOT / ".github" / "workflows" / "deploy-environment.yml")["jobs"]
    synth, deploy = jobs["synth"], jobs["deploy"]
    assert "id-token" not in synth["permissions"] and "cdk synth" in steps_text(synth)
    assert deploy["needs"] == "synth" and "cdk synth" not in steps_text(deploy)
    assert "--app cdk.out" in steps_text(deploy)
    upload = [s for s in synth["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    download = [s for s in deploy["steps"] if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    assert upload and download and upload[0]["with"]["name"] == download[0]["with"]["name"]
    assert upload[0]["with"]["include-hidden-files"] is True, "the assembly's .dockerignore files must travel"


def test_diff_and_deploy_assume_separate_roles() -> None:
    """A pull request's job and the deploy never share a role variable; only the deploy job names an environment,
    which is what the deploy role's trust requires (``environment:`` in the token's sub claim)."""
    roles: dict[str, str] = {}
    for where, _, job in token_jobs():
        (step,) = [s for s in job["steps"] if "configure-aws-credentials@" in str(s.get("uses", ""))]
        roles[where] = step["with"]["role-to-assume"]
    assert roles == {"deploy-environment.yml job deploy": "${{ vars.AWS_DEPLOY_ROLE_ARN }}",
                     "pull-request.yml job diff-deployed": "${{ vars.AWS_DIFF_ROLE_ARN }}"}
    pr = load(ROOT / ".github" / "workflows" / "pull-request.yml")
    assert "environment" not in pr["jobs"]["diff-deployed"]
    for path in WORKFLOWS:
        assert "AWS_ROLE_ARN" not in path.read_text().replace("AWS_DEPLOY_ROLE_ARN", "").replace(
            "AWS_DIFF_ROLE_ARN", ""), f"{path.name} still names the shared AWS_ROLE_ARN"
