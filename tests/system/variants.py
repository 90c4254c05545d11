"""Synthesize dev twice, as two consecutive deploys would see it: ``python -m tests.system.variants OUTDIR``.

``OUTDIR/before``: dev with a load-test run (``run-002``) and a system group sized for it.
``OUTDIR/after``: the same, after a code change to the load tester (a new image tag, exactly as a commit
would make it: the image asset hash is computed over a copy of the build context with one line added to
``eks_inference/loadgen/runner.py``) and a serving change (``max_batch_size`` 32 → 16, which changes the
serve config and the compiled batch buckets).

Both Apps are built in one process (one jsii runtime) so the pair costs little more than one synth. The
environment block is handed to the app as context, the way the CDK CLI passes ``cdk.json`` context.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from typing import Any

RUN_ID = "run-002"
CHANGED_FILE = "eks_inference/loadgen/runner.py"


def environments(*, after: bool) -> dict[str, Any]:
    from tests.conftest import cdk_context, with_load_test_run

    ctx = cdk_context()
    envs = copy.deepcopy(ctx["eks-inference:environments"])
    dev = envs["dev"]
    with_load_test_run(dev, RUN_ID)
    if after:
        dev["models"][0]["serving"]["max_batch_size"] = 16
    return {**ctx, "eks-inference:environments": envs, "env": "dev"}


def changed_context(root: Path, into: Path) -> Path:
    """A copy of the image build context with one load-test source line added."""
    for rel in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(root / rel, into / rel)
    for req in root.glob("requirements-*.txt"):
        shutil.copy2(req, into / req.name)
    shutil.copytree(root / "model_images", into / "model_images")
    shutil.copytree(root / "eks_inference", into / "eks_inference",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with (into / CHANGED_FILE).open("a") as f:
        f.write("# a change to the load tester\n")
    return into


def synth(outdir: Path, context: dict[str, Any], repo_root: Path) -> None:
    from aws_cdk import App

    import eks_inference.constructs.model_image as model_image
    from eks_inference.app_builder import build_app

    model_image.REPO_ROOT = repo_root
    app = App(context=context, outdir=str(outdir))
    build_app(app, checks=False)
    app.synth()


def main(out: Path) -> None:
    from tests.conftest import ROOT

    out.mkdir(parents=True, exist_ok=True)
    synth(out / "before", environments(after=False), ROOT)
    ctx = out / "context-after"
    ctx.mkdir(exist_ok=True)
    synth(out / "after", environments(after=True), changed_context(ROOT, ctx))
    (out / "done.json").write_text(json.dumps({"run_id": RUN_ID}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
