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


@pytest.fixture(scope="session")
def without_torch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a subprocess in which ``import torch`` and ``import transformers`` fail, as in the
    load-test image (which installs only the loadtest extra)."""
    shadow = tmp_path_factory.mktemp("no-torch")
    for name in ("torch", "transformers"):
        (shadow / name).mkdir()
        (shadow / name / "__init__.py").write_text(
            f"raise ImportError(\"No module named '{name}' (this process stands for the load-test image)\")\n")
    return {"PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
