"""checkov on every synthesized manifest and template: zero failures, and every skip has its reason here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, Assembly
from tests.unit.k8s_support import config, render

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

# Skips live next to what they excuse: Kubernetes objects carry checkov.io/skipN annotations and
# CloudFormation resources Metadata.checkov (eks_inference.nag.checkov_skip), each with its reason.
KUBERNETES_SKIPS: dict[str, str] = {}
# CloudFormation skips are recorded per resource in Metadata.checkov (see eks_inference.nag.checkov_skip).
CLOUDFORMATION_SKIPS: dict[str, str] = {}


def run_checkov(directory: Path, framework: str, skips: dict[str, str]) -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(".venv-checkov/bin/checkov is missing: run `make setup`")
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", framework, "--quiet", "--compact", "-o", "json",
         *(["--skip-check", ",".join(sorted(skips))] if skips else []), "--download-external-modules", "false"],
        capture_output=True, text=True, timeout=600,
    )
    out = json.loads(proc.stdout)
    reports = out if isinstance(out, list) else [out]
    failed = [f"{f['check_id']} {f['check_name']} @ {f['resource']} ({f.get('file_path')})"
              for r in reports for f in r.get("results", {}).get("failed_checks", [])]
    assert failed == [], "\n".join(failed)
    assert sum(r.get("summary", {}).get("passed", 0) for r in reports) > 0, "checkov checked nothing"
    return {"passed": sum(r["summary"]["passed"] for r in reports)}


def test_inline_skips_carry_reasons(assemblies: dict[str, Assembly]) -> None:
    from eks_inference.k8s.load_test_chart import CHECKOV_SKIPS

    for value in CHECKOV_SKIPS.values():
        check, reason = value.split("=", 1)
        assert check.startswith("CKV_") and len(reason) > 40
    for asm in assemblies.values():
        for path in asm.template_paths:
            for res in json.loads(path.read_text())["Resources"].values():
                for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
                    assert skip["id"].startswith("CKV") and len(skip["comment"]) > 40, skip


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_checkov_kubernetes_manifests(tmp_path: Path, env_name: str) -> None:
    _, serving, load = render(config(env_name))
    (tmp_path / "manifests.yaml").write_text(yaml.safe_dump_all(serving + load))
    run_checkov(tmp_path, "kubernetes", KUBERNETES_SKIPS)


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_checkov_cloudformation_templates(tmp_path: Path, assemblies: dict[str, Assembly], env_name: str) -> None:
    for p in assemblies[env_name].template_paths:
        (tmp_path / p.name).write_text(p.read_text())
    run_checkov(tmp_path, "cloudformation", CLOUDFORMATION_SKIPS)
