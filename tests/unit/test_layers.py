"""The floors of the house (DESIGN.md, "Layout and floors") are checked, not hoped for.

``lint-imports`` (import-linter) reads the layers contract in pyproject.toml and follows every import, those inside
functions included. These tests run it on the package, prove it catches an import that dodges the rule inside a
function, and keep every module of the package on some floor, so a new package cannot slip past the contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def contract() -> dict:
    (c,) = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return c


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_package_keeps_its_floors() -> None:
    """GIVEN the package WHEN lint-imports checks the floors contract THEN it is kept."""
    r = lint_imports(ROOT, ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 kept, 0 broken" in r.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    """GIVEN a copy of the package where the load generator imports the report writer from inside a function
    (sideways on floor 2) WHEN lint-imports runs THEN the contract breaks and names the import."""
    shutil.copytree(ROOT / "eks_inference", tmp_path / "eks_inference",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "eks_inference" / "loadgen" / "replicas.py").open("a") as f:
        f.write("\n\ndef _dodge() -> None:\n    from eks_inference.analysis import report  # noqa: F401\n")
    r = lint_imports(tmp_path, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "eks_inference.loadgen.replicas -> eks_inference.analysis.report" in r.stdout


def test_every_module_of_the_package_stands_on_a_floor() -> None:
    """GIVEN the layers of the contract WHEN the package's top-level modules and packages are listed THEN each is
    on exactly one floor (a module left out would be free of every rule)."""
    on_floors = [name.strip() for layer in contract()["layers"] for name in layer.split("|")]
    assert len(on_floors) == len(set(on_floors))
    pkg = ROOT / "eks_inference"
    present = {f"eks_inference.{p.stem}" for p in pkg.iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert present == set(on_floors), (f"not on a floor: {sorted(present - set(on_floors))}; "
                                       f"no such module: {sorted(set(on_floors) - present)}")


def test_dependencies_are_declared_and_used() -> None:
    """GIVEN pyproject's extras WHEN deptry compares them with what the code imports THEN nothing is missing,
    unused or only transitive, but for the ignores that say why."""
    r = subprocess.run([str(Path(sys.executable).with_name("deptry")), "."], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_dead_code() -> None:
    """GIVEN the package WHEN vulture looks for unused code at the confidence pyproject sets THEN it finds none."""
    r = subprocess.run([str(Path(sys.executable).with_name("vulture"))], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
