"""CLI sub-commands ``local``, ``compile`` and ``publish`` (registered by :mod:`eks_inference.cli`).

Heavy imports (torch, Ray, boto3) happen inside the commands, so ``eks-inference --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from eks_inference.config import ConfigError, DType, ModelSpec, Processor, ServingSpec, Task, parse_model
from eks_inference.serving.serve_config import render_serve_config

DEFAULT_LOCAL_MODEL = "minilm"
"""Route name of the bundled model, as the project's cdk.json names it."""
DEFAULT_LOCAL_SOURCE = "bundled:all-minilm-l6-v2"
LOCAL_BATCH_WAIT_S = 0.0
"""Idle-processor batch wait for local serving: none. The busy-aware batcher fills batches under load by
waiting for the running forward instead; an idle wait would only add latency at low load."""


def _buckets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes, e.g. 1,2,4,8") from None


def local_defaults(cpus: int | None = None) -> tuple[int, int]:
    """(replicas, threads per replica) for this machine: 1-thread replicas up to 4 cores, then 2 threads.

    Several single-thread replicas beat one multi-thread replica on small CPUs (intra-op parallelism
    scales poorly for small encoders), and each replica batches on its own.
    """
    n = cpus or os.cpu_count() or 1
    threads = 1 if n <= 4 else 2
    return max(1, min(4, n // threads)), threads


def _env_model(cdk_json: Path, env: str, name: str | None) -> dict[str, Any]:
    from eks_inference.config import ENVIRONMENTS_KEY

    try:
        envs = json.loads(cdk_json.read_text())["context"][ENVIRONMENTS_KEY]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ConfigError(f"--env: cannot read environments from {str(cdk_json)!r} ({e}); run from the project root "
                          "or pass --cdk-json") from None
    if env not in envs:
        raise ConfigError(f"--env: {env!r} is not a defined environment; use one of {', '.join(envs)}")
    models = envs[env].get("models") or []
    chosen = [m for m in models if name is None or m.get("name") == name]
    if not chosen:
        raise ConfigError(f"--model: {name!r} is not a model of environment {env!r}; use one of "
                          f"{[m.get('name') for m in models]}")
    return dict(chosen[0])


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Serving fields given explicitly on the command line (they win over the environment's)."""
    o: dict[str, Any] = {}
    for flag, field in (("max_batch_size", "max_batch_size"), ("max_seq_length", "max_seq_length"),
                        ("threads", "num_threads"), ("replicas", "num_replicas"), ("dtype", "dtype")):
        if getattr(args, flag) is not None:
            o[field] = getattr(args, flag)
    if args.batch_wait_ms is not None:
        o["batch_wait_timeout_s"] = args.batch_wait_ms / 1000.0
    return o


def local_model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model to serve: an environment's model from cdk.json (its exact serving shape, on processor cpu),
    a JSON file with one model entry, or the bundled model tuned for this machine. Serving flags given
    explicitly (``--dtype fp32``, ``--replicas 2``, ...) override the environment's values."""
    if args.env or args.config:
        data = (_env_model(Path(args.cdk_json), args.env, args.model if args.model != DEFAULT_LOCAL_MODEL else None)
                if args.env else json.loads(Path(args.config).read_text()))
        data["processors"] = ["cpu"]
        data.setdefault("local_source", args.source)
        data["serving"] = {**(data.get("serving") or {}), **_overrides(args)}
        return parse_model(data)
    replicas, threads = local_defaults()
    o = _overrides(args)
    serving = ServingSpec(
        max_batch_size=o.get("max_batch_size", 32),
        batch_wait_timeout_s=o.get("batch_wait_timeout_s", LOCAL_BATCH_WAIT_S),
        max_seq_length=o.get("max_seq_length", 128),
        num_threads=o.get("num_threads", threads),
        num_replicas=o.get("num_replicas", replicas),
        cpus_per_replica=float(o.get("num_threads", threads)),
        dtype=DType(o.get("dtype", "fp32")),
    )
    return ModelSpec(name=args.model, task=Task(args.task), processors=(Processor.CPU,), serving=serving,
                     local_source=args.source)


def render_local_config(args: argparse.Namespace) -> dict[str, Any]:
    spec = local_model_spec(args)
    state_dir = Path(args.state_dir).resolve()
    artifact_uri = args.artifact_uri or str(state_dir / "artifacts")
    return render_serve_config(spec, Processor.CPU, model_uri=spec.local_source,
                               artifact_uri=artifact_uri, cache_dir=str(state_dir / "cache"),
                               http_host=args.host, http_port=args.port, s3_endpoint_url=args.s3_endpoint_url)


def _foreground_argv(args: argparse.Namespace) -> list[str]:
    """The same ``local`` command without --detach, for the background process."""
    argv = ["local"]
    for opt in ("port", "host", "model", "source", "env", "cdk_json", "config", "task", "dtype", "replicas", "threads",
                "max_batch_size", "batch_wait_ms", "max_seq_length", "artifact_uri", "s3_endpoint_url",
                "state_dir", "timeout"):
        value = getattr(args, opt)
        if value is not None:
            argv += [f"--{opt.replace('_', '-')}", str(value)]
    return argv


def cmd_local(args: argparse.Namespace) -> int:
    from eks_inference.serving import local

    state_dir = Path(args.state_dir)
    if args.stop:
        return local.stop(state_dir=state_dir)
    config = render_local_config(args)
    if args.print_config:
        print(json.dumps(config, indent=2))
        return 0
    if args.detach:
        return local.start_detached(_foreground_argv(args), state_dir=state_dir, timeout_s=args.timeout)
    return local.run_foreground(config, state_dir=state_dir, timeout_s=args.timeout)


def cmd_compile(args: argparse.Namespace) -> int:
    from eks_inference.serving.artifacts import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
    from eks_inference.serving.bucketing import batch_buckets_up_to, seq_buckets_for

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    processor = Processor(args.processor)
    buckets = args.batch_buckets or batch_buckets_up_to(args.max_batch_size)
    if list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
        raise ConfigError(f"--batch-buckets: {list(buckets)} is not strictly increasing positive sizes; "
                          "use e.g. 1,2,4,8,16,32")
    out = Path(args.out).resolve()
    model = resolve_model(args.source, cache_dir=out / "cache", endpoint_url=args.s3_endpoint_url)
    req = ArtifactRequest(model=args.name, revision=args.revision, task=args.task, processor=processor.value,
                          backend=processor.backend, dtype=args.dtype, batch_buckets=tuple(buckets),
                          seq_buckets=seq_buckets_for(processor.backend, args.max_seq_length),
                          versions=sdk_versions(processor.backend))
    artifact_uri = f"{args.publish_to.rstrip('/')}/artifacts" if args.publish_to else None
    res = resolve_artifact(req, model, cache_dir=out, artifact_uri=artifact_uri, endpoint_url=args.s3_endpoint_url)
    print(json.dumps({"cache_key": res.key, "path": str(res.path), "source": res.source, "uri": res.uri,
                      "seconds": round(res.seconds, 2), "checks": res.manifest.get("checks")}, indent=2))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from eks_inference.compile.publish import publish_artifact, publish_model

    if args.artifact:
        res = publish_artifact(args.artifact, args.to, endpoint_url=args.s3_endpoint_url)
    else:
        if not args.source or not args.name:
            raise ConfigError("publish: give MODEL_DIR (or bundled:NAME) and --name, or --artifact DIR")
        res = publish_model(args.source, args.to, name=args.name, revision=args.revision, task=args.task,
                            endpoint_url=args.s3_endpoint_url)
    print(json.dumps({"uri": res.uri, "status": res.status, "files": res.files, "bytes": res.bytes}, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("local", help="serve a model on this machine with the RayService's serve config",
                       description="Start a private Ray on this machine, deploy the serveConfigV2 that "
                                   "render_serve_config produces for the model (processor cpu), wait until it is "
                                   "healthy and print its URL. Stops on Ctrl-C, SIGTERM or `local --stop`.")
    p.add_argument("--stop", action="store_true", help="stop the local serving started earlier")
    p.add_argument("--detach", action="store_true", help="start in the background, return once healthy")
    p.add_argument("--print-config", action="store_true", help="print the rendered serveConfigV2 and exit")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--model", default=DEFAULT_LOCAL_MODEL,
                   help=f"model name = route prefix (default {DEFAULT_LOCAL_MODEL})")
    p.add_argument("--source", default=DEFAULT_LOCAL_SOURCE,
                   help=f"weights: bundled:NAME, a model directory or s3://... (default {DEFAULT_LOCAL_SOURCE})")
    p.add_argument("--env", default=None,
                   help="serve this environment's model from cdk.json with its exact serving shape (on cpu)")
    p.add_argument("--cdk-json", default="cdk.json", help="project config for --env (default ./cdk.json)")
    p.add_argument("--config", help="JSON file with one model entry (as in cdk.json); overrides the flags above")
    p.add_argument("--task", default="embedding", choices=[t.value for t in Task])
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default fp32 (or the environment's)")
    p.add_argument("--replicas", type=int, default=None, help="default: by CPU count (2 on 2 cores)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per replica (default 1, 2 above 4 cores)")
    p.add_argument("--max-batch-size", type=int, default=None, help="default 32 (or the environment's)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="batch wait when the processor is idle (default 0 ms, or the environment's)")
    p.add_argument("--max-seq-length", type=int, default=None, help="default 128 (or the environment's)")
    p.add_argument("--artifact-uri", help="compiled-artifact cache (default .eks-inference/artifacts)")
    p.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL)")
    p.add_argument("--state-dir", default=".eks-inference", help="state, log and caches (default .eks-inference)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait until healthy (default 600)")
    p.set_defaults(func=cmd_local)

    c = sub.add_parser("compile", help="trace/compile a model for a processor and write a verified artifact")
    c.add_argument("source", help="model directory, bundled:NAME or s3://.../models/NAME/REV")
    c.add_argument("--name", required=True, help="model name (as in the config)")
    c.add_argument("--revision", default="v1")
    c.add_argument("--task", default="embedding", choices=[t.value for t in Task])
    c.add_argument("--processor", default="cpu", choices=[p.value for p in Processor])
    c.add_argument("--dtype", default="fp32", choices=[d.value for d in DType])
    c.add_argument("--batch-buckets", type=_buckets, default=None, help="e.g. 1,2,4,8,16,32 (default powers of 2)")
    c.add_argument("--max-batch-size", type=int, default=32)
    c.add_argument("--max-seq-length", type=int, default=128)
    c.add_argument("--out", default=".eks-inference/compiled", help="output directory")
    c.add_argument("--publish-to", default=None, help="repository s3://BUCKET/PREFIX (or a directory) to publish to")
    c.add_argument("--s3-endpoint-url", default=None)
    c.set_defaults(func=cmd_compile)

    u = sub.add_parser("publish", help="upload a model directory or a compiled artifact to the model repository")
    u.add_argument("source", nargs="?", help="model directory or bundled:NAME")
    u.add_argument("--to", required=True, help="repository: s3://BUCKET/PREFIX or a directory")
    u.add_argument("--name", help="model name (models/NAME/REVISION/)")
    u.add_argument("--revision", default="v1")
    u.add_argument("--task", default=None, choices=[t.value for t in Task])
    u.add_argument("--artifact", default=None, help="a compiled artifact directory (with manifest.json)")
    u.add_argument("--s3-endpoint-url", default=None)
    u.set_defaults(func=cmd_publish)

