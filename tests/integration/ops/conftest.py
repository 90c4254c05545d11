"""Session fixtures for the operator tooling: variant synths of the dev app, and AWS clients on moto.

Variant synths change one thing in the dev environment and synthesize the real app in a child process
(``tests.conftest.synth_variant``). The unchanged side of every pair is one of the session's synths: ``cdk
synth -c env=dev`` (``assemblies["dev"]``), or dev during a load-test run (``run_assembly``), so the whole set
costs three synths on top of the ones the suite already runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, synth_variant, with_load_test_run

_COPY_IGNORE = shutil.ignore_patterns(".venv", ".venv-checkov", "node_modules", "cdk.out", ".git", "out",
                                      "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", "*.egg-info")


def _node_group(env: dict[str, Any], name: str) -> dict[str, Any]:
    (group,) = [g for g in env["node_groups"] if g["name"] == name]
    return group


def _batch_16(env: dict[str, Any]) -> None:
    env["models"][0]["serving"]["max_batch_size"] = 16


def _graviton_bigger_during_a_run(env: dict[str, Any]) -> None:
    """The session's ``run_assembly`` (dev with load-test run run-001) with a bigger graviton group, so that
    what the change does to the run's Jobs is part of the diff."""
    with_load_test_run(env)
    group = _node_group(env, "graviton")
    group["instance_types"] = ["c7g.4xlarge"]
    group["max_size"] += 2


@pytest.fixture(scope="session")
def variant_assemblies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three one-change variants: of dev a serving field and a rebuilt image, of dev during a load-test run
    (``run_assembly``) a node group."""
    base = tmp_path_factory.mktemp("variants")
    out = {
        "batch16": synth_variant(base / "batch16", _batch_16),
        "graviton": synth_variant(base / "graviton", _graviton_bigger_during_a_run),
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
