"""Session fixtures for the operator tooling: variant synths of the dev app, and AWS clients on moto.

Variant synths change one thing in the dev environment and synthesize the real app (``app.py`` →
``build_app``) in a child process, with the context the CDK CLI would pass (cdk.json, cdk.context.json,
``-c env=dev``) in ``CDK_CONTEXT_JSON``; the child's memory (~600 MB of jsii) goes when it exits. The
unchanged side of every pair is the session's ``cdk synth -c env=dev`` (``assemblies["dev"]``), so the
whole set costs three synths on top of the ones the suite already runs.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, cdk_context, offline_env

ENVIRONMENTS_KEY = "eks-inference:environments"
_CHILD = (
    "import os, pathlib, runpy\n"
    "import eks_inference.constructs.model_image as m\n"
    "root = os.environ.get('EKI_TEST_REPO_ROOT')\n"
    "if root:\n"
    "    m.REPO_ROOT = pathlib.Path(root)\n"
    "runpy.run_path('app.py', run_name='__main__')\n"
)
_COPY_IGNORE = shutil.ignore_patterns(".venv", ".venv-checkov", "node_modules", "cdk.out", ".git", "out",
                                      "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info")


def synth_variant(outdir: Path, edit: Callable[[dict[str, Any]], None], *, env_name: str = "dev",
                  repo_root: Path | None = None) -> Path:
    """Synthesize ``env_name`` with ``edit`` applied to its environment block; returns the assembly directory."""
    context = {**cdk_context(), **json.loads((ROOT / "cdk.context.json").read_text())}
    environments = copy.deepcopy(context[ENVIRONMENTS_KEY])
    edit(environments[env_name])
    context.update({ENVIRONMENTS_KEY: environments, "env": env_name,
                    "aws:cdk:enable-path-metadata": True, "aws:cdk:version-reporting": False})
    env = {**offline_env(), "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(outdir)}
    if repo_root is not None:
        env["EKI_TEST_REPO_ROOT"] = str(repo_root)
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"synth of the {env_name} variant failed:\n{proc.stdout}\n{proc.stderr}"
    return outdir


def _node_group(env: dict[str, Any], name: str) -> dict[str, Any]:
    (group,) = [g for g in env["node_groups"] if g["name"] == name]
    return group


def _batch_16(env: dict[str, Any]) -> None:
    env["models"][0]["serving"]["max_batch_size"] = 16


def _graviton_bigger(env: dict[str, Any]) -> None:
    group = _node_group(env, "graviton")
    group["instance_types"] = ["c7g.4xlarge"]
    group["max_size"] = 6


@pytest.fixture(scope="session")
def variant_assemblies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three one-change variants of dev: a serving field, a node group, a rebuilt image."""
    base = tmp_path_factory.mktemp("variants")
    out = {
        "batch16": synth_variant(base / "batch16", _batch_16),
        "graviton": synth_variant(base / "graviton", _graviton_bigger),
    }
    # The graviton image's base moves to a new Python patch release; nothing else in the app changes.
    repo = base / "repo"
    shutil.copytree(ROOT, repo, ignore=_COPY_IGNORE, symlinks=True)
    dockerfile = repo / "model_images" / "graviton" / "Dockerfile"
    text = dockerfile.read_text()
    assert "python:3.12.13-slim-bookworm" in text
    dockerfile.write_text(text.replace("python:3.12.13-slim-bookworm", "python:3.12.14-slim-bookworm"))
    out["image"] = synth_variant(base / "image", lambda env: None, repo_root=repo)
    return out
