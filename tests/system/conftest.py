"""Fixtures of the system layer: the session's dev/prod assemblies, and one extra pair for redeploys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, Assembly, offline_env


@pytest.fixture(scope="session")
def redeploy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Assembly]]:
    """``before``/``after`` assemblies of two consecutive deploys of dev with a load-test run (tests.system.variants).

    One subprocess builds both Apps, so the pair costs about one synth (~15 s, ~600 MB).
    """
    out = tmp_path_factory.mktemp("redeploy")
    proc = subprocess.run([sys.executable, "-m", "tests.system.variants", str(out)], cwd=ROOT, env=offline_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"synth of the redeploy pair failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    yield {name: Assembly(out / name, "") for name in ("before", "after")}
