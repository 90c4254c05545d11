"""The GitHub Actions workflows: actionlint (with shellcheck on every ``run:``), actions pinned by commit,
and no job holding a write permission it does not use."""

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
    (job,) = called["jobs"].values()
    assert job["environment"] == "${{ inputs.environment }}"
    text = steps_text(job)
    assert text.index("eks-inference preflight") < text.index("cdk deploy")
