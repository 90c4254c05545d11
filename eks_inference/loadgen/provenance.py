"""Where a number came from: tool version, git commit, host, command line, times.

A latency figure without the code, configuration and machine that produced it cannot be checked or
repeated, so every result file carries these. The git sha is best effort: images set
``EKS_INFERENCE_GIT_SHA`` at build time, a checkout answers ``git rev-parse``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from eks_inference import __version__

TOOL = "eks-inference loadtest"


def git_sha() -> str | None:
    env = os.environ.get("EKS_INFERENCE_GIT_SHA") or os.environ.get("GIT_SHA")
    if env:
        return env
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    if out.returncode != 0 or not sha:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", str(here)],
                               cwd=here, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return sha + ("-dirty" if dirty else "")


def iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="milliseconds")


def collect(argv: list[str] | None = None) -> dict[str, Any]:
    """Everything about this process that does not change during the run."""
    return {
        "tool": TOOL,
        "tool_version": __version__,
        "git_sha": git_sha(),
        "host": socket.gethostname(),
        "pod": os.environ.get("POD_NAME") or os.environ.get("HOSTNAME"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "pid": os.getpid(),
        "argv": list(sys.argv if argv is None else argv),
    }
