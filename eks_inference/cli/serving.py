"""CLI sub-commands ``local``, ``compile`` and ``publish`` (registered by :mod:`eks_inference.cli`).

Heavy imports (torch, Ray, boto3) happen inside the commands, so ``eks-inference --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from eks_inference.artifacts.resolve import check_model_source
from eks_inference.cli.help import add_command
from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    ConfigError,
    DType,
    ModelSpec,
    Processor,
    ServingSpec,
    Task,
    load_environment,
    parse_model,
    read_project_context,
)
from eks_inference.serving.local import serving_cores
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
    n = cpus or serving_cores()
    threads = 1 if n <= 4 else 2
    return max(1, min(4, n // threads)), threads


def _env_model(cdk_json: Path, env: str, name: str | None) -> dict[str, Any]:
    """One model entry of an environment, as ``cdk.json`` writes it, once the whole environment has passed the
    validation synth applies: ``local --env`` serves no shape that ``cdk synth`` would refuse."""
    if not cdk_json.is_file():
        raise ConfigError(f"--env: {cdk_json}: not found; run from the project root or pass --cdk-json")
    config = load_environment(env, cdk_json=cdk_json)
    names = [m.name for m in config.models]
    if not names:
        raise ConfigError(f"--env: environment {env!r} serves no model; add one under its models in {cdk_json}")
    if name is not None and name not in names:
        raise ConfigError(f"--model: {name!r} is not a model of environment {env!r}; use one of {names}")
    models = read_project_context(cdk_json)[ENVIRONMENTS_KEY][env]["models"]
    return dict(next(m for m in models if m["name"] == (name or names[0])))


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Serving fields given explicitly on the command line (they win over the environment's)."""
    o: dict[str, Any] = {}
    for flag, field in (("max_batch_size", "max_batch_size"), ("max_seq_length", "max_seq_length"),
                        ("threads", "num_threads"), ("replicas", "num_replicas"), ("min_replicas", "min_replicas"),
                        ("max_replicas", "max_replicas"), ("dtype", "dtype")):
        if getattr(args, flag, None) is not None:
            o[field] = getattr(args, flag)
    if args.batch_wait_ms is not None:
        o["batch_wait_timeout_s"] = args.batch_wait_ms / 1000.0
    return o


def _merge_serving(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The environment's serving block with the command line's fields on top; a fixed --replicas replaces the
    environment's bounds and --min/--max-replicas its fixed count, so the two never meet."""
    merged = dict(base)
    if "num_replicas" in overrides:
        merged.pop("min_replicas", None)
        merged.pop("max_replicas", None)
    if "min_replicas" in overrides or "max_replicas" in overrides:
        merged.pop("num_replicas", None)
    return {**merged, **overrides}


def local_cores_per_replica(serving: ServingSpec) -> float:
    """Cores one replica keeps busy here: the Ray CPUs it asks for or its torch threads, whichever is more. In
    the cluster each replica has a worker pod sized the same way; on one machine, replicas whose threads add up
    to more than its cores slow every forward down, so the throughput under load falls instead of rising."""
    return max(serving.cpus_per_replica, float(serving.num_threads))


def local_replica_cap(serving: ServingSpec, cpus: int | None = None) -> int:
    """Replicas this machine's CPUs hold (:func:`local_cores_per_replica` each): one more would either wait for
    a node no autoscaler adds here or oversubscribe the cores the others compute on. From three cores up one is
    left to the load client (:func:`eks_inference.serving.local.serving_cores`)."""
    n = cpus or serving_cores()
    return max(1, int(n // local_cores_per_replica(serving)))


def _fit_machine(spec: ModelSpec, out: Any = None) -> ModelSpec:
    """The model with its replica bounds capped to what this machine holds (:func:`local_replica_cap`)."""
    lo, hi = spec.serving.replicas
    cap = local_replica_cap(spec.serving)
    if hi <= cap:
        return spec
    serving = dataclasses.replace(spec.serving, num_replicas=None, min_replicas=min(lo, cap), max_replicas=cap)
    print(f"eks-inference: model {spec.name!r}: this machine's {serving_cores()} CPUs for serving hold {cap} "
          f"replica(s) of "
          f"{local_cores_per_replica(spec.serving):g} CPU; serving {min(lo, cap)}..{cap} instead of {lo}..{hi}",
          file=out or sys.stderr)
    return dataclasses.replace(spec, serving=serving)


def local_model_spec(args: argparse.Namespace) -> ModelSpec:
    """The model to serve: an environment's model from cdk.json (its exact serving shape, on processor cpu),
    a JSON file with one model entry, or the bundled model tuned for this machine (autoscaling from one replica
    to as many as :func:`local_defaults` gives). Serving flags given explicitly (``--dtype fp32``,
    ``--replicas 2``, ``--max-replicas 3``, ...) override the environment's values; replica bounds beyond this
    machine's CPUs are capped to them."""
    if args.env or args.config:
        data = (_env_model(Path(args.cdk_json), args.env, args.model if args.model != DEFAULT_LOCAL_MODEL else None)
                if args.env else json.loads(Path(args.config).read_text()))
        data["processors"] = ["cpu"]
        data.setdefault("local_source", args.source)
        data["serving"] = _merge_serving(data.get("serving") or {}, _overrides(args))
        return _fit_machine(parse_model(data))
    replicas, threads = local_defaults()
    o = _overrides(args)
    fixed = o.get("num_replicas")
    lo = None if fixed is not None else o.get("min_replicas", 1)
    hi = None if fixed is not None else o.get("max_replicas", max(replicas, o.get("min_replicas", 1)))
    serving = ServingSpec(
        max_batch_size=o.get("max_batch_size", 32),
        batch_wait_timeout_s=o.get("batch_wait_timeout_s", LOCAL_BATCH_WAIT_S),
        max_seq_length=o.get("max_seq_length", 128),
        num_threads=o.get("num_threads", threads),
        cpus_per_replica=float(o.get("num_threads", threads)),
        dtype=DType(o.get("dtype", "fp32")),
        num_replicas=fixed, min_replicas=lo, max_replicas=hi,
    )
    return _fit_machine(ModelSpec(name=args.model, task=Task(args.task), processors=(Processor.CPU,),
                                  serving=serving, local_source=args.source))


def render_local_config(args: argparse.Namespace) -> dict[str, Any]:
    """The serve config ``local`` runs (and ``--print-config`` prints), its weights source checked first."""
    spec = local_model_spec(args)
    explicit = args.source != DEFAULT_LOCAL_SOURCE or not (args.env or args.config)
    check_model_source(spec.local_source, where="--source" if explicit else f"model {spec.name!r} local_source")
    state_dir = Path(args.state_dir).resolve()
    artifact_uri = args.artifact_uri or str(state_dir / "artifacts")
    return render_serve_config(spec, Processor.CPU, model_uri=spec.local_source,
                               artifact_uri=artifact_uri, cache_dir=str(state_dir / "cache"),
                               http_host=args.host, http_port=args.port, s3_endpoint_url=args.s3_endpoint_url)


def _foreground_argv(args: argparse.Namespace) -> list[str]:
    """The same ``local`` command without --detach, for the background process."""
    argv = ["local"]
    for opt in ("port", "host", "model", "source", "env", "cdk_json", "config", "task", "dtype", "replicas",
                "min_replicas", "max_replicas", "threads", "max_batch_size", "batch_wait_ms", "max_seq_length",
                "artifact_uri", "s3_endpoint_url", "state_dir", "timeout"):
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
    try:
        if args.detach:
            return local.start_detached(_foreground_argv(args), state_dir=state_dir, timeout_s=args.timeout)
        return local.run_foreground(config, state_dir=state_dir, timeout_s=args.timeout)
    except local.AlreadyRunning as e:
        print(f"eks-inference: {e}", file=sys.stderr)
        return 1


def _not_found(e: Exception) -> int:
    print(f"eks-inference: {e}", file=sys.stderr)
    return 1


def _serve_app(text: str) -> tuple[dict[str, Any], Any, Any]:
    """``(app, args, user_config)`` of a serve-config application given as JSON, as its replicas parse it."""
    from eks_inference.serving.serve_config import parse_app_args, parse_user_config

    try:
        app = json.loads(text)
        a = parse_app_args(app["args"])
        cfg = parse_user_config(app["user_config"], batch_buckets=a.batch_buckets)
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"--serve-app: {text[:80]!r} is not a serve-config application ({type(e).__name__}: {e}); "
                          'give {"args": {...}, "user_config": {...}} as render_serve_config writes them') from None
    if not a.artifact_uri:
        raise ConfigError(f"--serve-app: application {a.model!r} has no artifact_uri; the artifact would reach no "
                          "replica: render it with the repository's artifacts URI")
    return app, a, cfg


def _compile_app(a: Any, cfg: Any, out: Path, *, wait_for_weights_s: float = 0.0) -> dict[str, Any]:
    """Compile and publish the artifact replicas with args ``a`` and user config ``cfg`` load (create-only)."""
    import threading

    from eks_inference.artifacts.resolve import ArtifactNotFound, resolve_artifact, resolve_model
    from eks_inference.compile.trace import compile_artifact
    from eks_inference.serving.artifact import replica_artifact
    from eks_inference.serving.weights import Backoff, WeightsWatch, wait_for_weights

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kw: dict[str, Any] = {"cache_dir": out / "cache", "endpoint_url": a.s3_endpoint_url,
                          "expected_digest": a.weights_sha256}
    try:
        model = resolve_model(a.model_uri, **kw)
    except ArtifactNotFound as e:
        if wait_for_weights_s <= 0 or e.missing is None:
            raise
        print(f"eks-inference: {e}; waiting up to {wait_for_weights_s:.0f} s for them", file=sys.stderr)
        stop = threading.Event()
        timer = threading.Timer(wait_for_weights_s, stop.set)
        timer.start()
        try:
            found = wait_for_weights(a.model_uri, watch=WeightsWatch(model=a.model, missing=e.missing,
                                                                     command=e.command, reason=str(e)),
                                     stop=stop, backoff=Backoff(*a.weights_poll_s), **kw)
        finally:
            timer.cancel()
        if found is None:
            raise
        model = found
    wanted = replica_artifact(a, cfg)
    res = resolve_artifact(wanted.request, model, cache_dir=out, artifact_uri=a.artifact_uri,
                           endpoint_url=a.s3_endpoint_url, compile_fn=compile_artifact)
    return {"model": a.model, "processor": a.processor.value, "weights_digest": model.digest, "cache_key": res.key,
            "dtype": wanted.request.dtype, "dtype_note": wanted.dtype_note, "source": res.source, "uri": res.uri,
            "seconds": round(res.seconds, 2), "checks": res.manifest.get("checks")}


def _family_index(a: Any) -> Any:
    from eks_inference.artifacts.family_index import read_index
    from eks_inference.storage import open_store

    return read_index(open_store(a.model_uri, endpoint_url=a.s3_endpoint_url), a.model)


def compile_serve_app(text: str, out: Path, *, wait_for_weights_s: float = 0.0,
                      model_id: str | None = None) -> dict[str, Any]:
    """Compile and publish exactly the artifact that replicas of one serve-config application load.

    ``text`` is ``{"args": ..., "user_config": ...}`` of the application (the compile Job passes its target's). The
    weights must carry the pinned digest (``weights_sha256``), as for a replica; they are waited for up to
    ``wait_for_weights_s`` when not published yet. The artifact goes to the application's ``artifact_uri``,
    create-only: an artifact already there is kept (any compilation under its cache key is equivalent).

    A family's application compiles one member, ``model_id``, as its replicas load it (``serving.family``,
    ``member_app_args``): the member's weights and digest from the family's index. Run it when the member is
    published, so replicas that never compile (Inferentia) find its artifact on their first request.
    """
    from eks_inference.serving.family import member_app_args

    app, a, cfg = _serve_app(text)
    is_family = isinstance(app.get("args"), dict) and "family" in app["args"]
    if is_family != (model_id is not None):
        raise ConfigError(f"--model-id: application {a.model!r} is a model family: name the member to compile"
                          if is_family else f"--model-id: application {a.model!r} is not a model family")
    if model_id is not None:
        index = _family_index(a)
        if model_id not in index.members:
            raise ConfigError(f"--model-id: {model_id!r} is not a member of family {a.model!r} (index generation "
                              f"{index.generation}); publish it first with publish --family {a.model} --model-id "
                              f"{model_id}")
        a = member_app_args(a, index.members[model_id])
    return _compile_app(a, cfg, out, wait_for_weights_s=wait_for_weights_s)


def compile_missing_members(text: str, out: Path) -> dict[str, Any]:
    """Compile, create-only, every member of a family whose artifact the family's replicas would not find.

    ``text`` is the family's serve-config application (what its member-compile CronJob passes). Reads the family's
    current index; a member is *present* when the artifact repository holds the manifest under the cache key its
    replicas request (:func:`~eks_inference.serving.artifact.replica_artifact` of ``member_app_args``, as the replica
    computes it), and every other member is compiled as ``--model-id`` would, one after the other, each in a scratch
    directory of its own that is removed once its artifact is published. Idempotent: a second run finds them all
    present. A member that fails is reported in one line on stderr and the others still compile; the result lists
    ``present``, ``compiled`` and ``failed``.
    """
    import shutil

    from eks_inference.artifacts.manifests import MANIFEST
    from eks_inference.artifacts.resolve import artifact_prefix
    from eks_inference.serving.artifact import replica_artifact
    from eks_inference.serving.family import member_app_args
    from eks_inference.storage import open_store

    app, a, cfg = _serve_app(text)
    if not (isinstance(app.get("args"), dict) and "family" in app["args"]):
        raise ConfigError(f"--missing: application {a.model!r} is not a model family; compile it with --serve-app "
                          "alone")
    index = _family_index(a)
    store = open_store(a.artifact_uri, endpoint_url=a.s3_endpoint_url)
    present: list[str] = []
    compiled: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    for model_id, entry in sorted(index.members.items()):
        member = member_app_args(a, entry)
        try:
            req = replica_artifact(member, cfg).request
            if store.read_bytes(f"{artifact_prefix(req.model, req.revision, req.key(entry.digest))}/{MANIFEST}"):
                present.append(model_id)
                continue
            scratch = out / "members" / model_id
            done = _compile_app(member, cfg, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            compiled.append({"model_id": model_id, **{k: done[k] for k in ("cache_key", "source", "uri", "seconds")}})
        except Exception as e:  # one member's failure must not stop the others
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            print(f"eks-inference: family {a.model!r} member {model_id!r} was not compiled: {reason}", file=sys.stderr)
            failed.append({"model_id": model_id, "error": reason})
    return {"family": a.model, "processor": a.processor.value, "index_generation": index.generation,
            "present": present, "compiled": compiled, "failed": failed}


def cmd_compile(args: argparse.Namespace) -> int:
    from eks_inference.artifacts.resolve import (
        ArtifactNotFound,
        ArtifactRequest,
        resolve_artifact,
        resolve_model,
        sdk_versions,
    )
    from eks_inference.compile.trace import compile_artifact
    from eks_inference.config import batch_buckets_up_to
    from eks_inference.runtime.bucketing import seq_buckets_for

    if args.missing:
        if not args.serve_app or args.model_id:
            raise ConfigError("--missing: give the family's --serve-app and no --model-id (it compiles every member "
                              "whose artifact is missing)")
        result = compile_missing_members(args.serve_app, Path(args.out).resolve())
        print(json.dumps(result, indent=2))
        return 1 if result["failed"] else 0
    if args.serve_app:
        try:
            result = compile_serve_app(args.serve_app, Path(args.out).resolve(),
                                       wait_for_weights_s=args.wait_for_weights, model_id=args.model_id)
        except ArtifactNotFound as e:
            return _not_found(e)
        print(json.dumps(result, indent=2))
        return 0
    if not args.source or not args.name:
        raise ConfigError("compile: give SOURCE and --name (or --serve-app with a serve-config application)")
    check_model_source(args.source, where="SOURCE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    processor = Processor(args.processor)
    buckets = args.batch_buckets or batch_buckets_up_to(args.max_batch_size)
    if list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
        raise ConfigError(f"--batch-buckets: {list(buckets)} is not strictly increasing positive sizes; "
                          "use e.g. 1,2,4,8,16,32")
    out = Path(args.out).resolve()
    try:
        model = resolve_model(args.source, cache_dir=out / "cache", endpoint_url=args.s3_endpoint_url,
                              expected_digest=args.weights_sha256)
    except ArtifactNotFound as e:
        return _not_found(e)
    req = ArtifactRequest(model=args.name, revision=args.revision, task=args.task, processor=processor.value,
                          backend=processor.backend, dtype=args.dtype, batch_buckets=tuple(buckets),
                          seq_buckets=seq_buckets_for(processor.backend, args.max_seq_length),
                          versions=sdk_versions(processor.backend))
    artifact_uri = f"{args.publish_to.rstrip('/')}/artifacts" if args.publish_to else None
    res = resolve_artifact(req, model, cache_dir=out, artifact_uri=artifact_uri, endpoint_url=args.s3_endpoint_url,
                           compile_fn=compile_artifact)
    print(json.dumps({"cache_key": res.key, "path": str(res.path), "source": res.source, "uri": res.uri,
                      "seconds": round(res.seconds, 2), "checks": res.manifest.get("checks")}, indent=2))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from eks_inference.compile.publish import publish_artifact, publish_model

    try:
        from eks_inference.verify.reference import references_for_publish
    except ImportError:  # an image without the verification package
        def references_for_publish(src: Path, uri: str, *, task: str | None, digest: str,
                                   endpoint_url: str | None) -> tuple[str, ...]:
            return ("no reference outputs stored: eks_inference.verify is not installed here",)

    if args.family or args.model_id:
        from eks_inference.compile.family import publish_member

        if not (args.family and args.model_id and args.source):
            raise ConfigError("publish: a family member needs MODEL_DIR (or bundled:NAME), --family and --model-id")
        m = publish_member(args.source, args.to, family=args.family, model_id=args.model_id, revision=args.revision,
                           task=args.task, endpoint_url=args.s3_endpoint_url, references=references_for_publish)
        from eks_inference.compile.family import compile_now_command

        now = compile_now_command(m.family)
        print(json.dumps({"uri": m.uri, "status": m.status, "family": m.family, "model_id": m.model_id,
                          "digest": m.digest, "bytes": m.bytes, "index_generation": m.generation,
                          "references": list(m.references), "compile_now": now}, indent=2))
        print(f"eks-inference: the family's compile CronJobs compile {m.model_id!r} at their next run; to compile it "
              f"now: {now}", file=sys.stderr)
        return 0
    if args.artifact:
        res = publish_artifact(args.artifact, args.to, endpoint_url=args.s3_endpoint_url)
    else:
        if not args.source or not args.name:
            raise ConfigError("publish: give MODEL_DIR (or bundled:NAME) and --name, or --artifact DIR")
        res = publish_model(args.source, args.to, name=args.name, revision=args.revision, task=args.task,
                            endpoint_url=args.s3_endpoint_url, references=references_for_publish)
    print(json.dumps({"uri": res.uri, "status": res.status, "files": res.files, "bytes": res.bytes,
                      "digest": res.digest, "references": list(res.references)}, indent=2))
    return 0


def register(sub: Any) -> None:
    p = add_command(
        sub, "local", summary="serve a model on this machine with the RayService's serve config",
        description="Start a private Ray on this machine, deploy the serveConfigV2 that render_serve_config "
                    "produces for the model (processor cpu), wait until it is healthy and print its URL. Stops on "
                    "Ctrl-C, SIGTERM or `local --stop`. Weights on S3 that are not published yet are waited for "
                    "(the reason and the publish command are printed); serving starts once they appear.",
        example_lines=(
            "eks-inference local --detach                      # the bundled all-MiniLM-L6-v2, in the background",
            "eks-inference local --env dev --detach            # the dev environment's serving shape, on this CPU",
            "eks-inference local --min-replicas 1 --max-replicas 2   # Serve adds a replica under load",
            "eks-inference local --source ./my-model --model mymodel --task classification",
            "eks-inference local --source s3://BUCKET/models/minilm/v1 --s3-endpoint-url http://127.0.0.1:5000",
            "eks-inference local --print-config --env dev      # the serveConfigV2 it would run",
            "eks-inference local --stop",
        ))
    p.add_argument("--stop", action="store_true", help="stop the local serving started earlier")
    p.add_argument("--detach", action="store_true",
                   help="start in the background; return once healthy (or waiting for unpublished weights)")
    p.add_argument("--print-config", action="store_true", help="print the rendered serveConfigV2 and exit")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument("--model", default=DEFAULT_LOCAL_MODEL, help="model name = route prefix (/NAME/predict)")
    p.add_argument("--source", default=DEFAULT_LOCAL_SOURCE,
                   help="weights: bundled:NAME, a model directory or s3://BUCKET/models/NAME/REVISION")
    p.add_argument("--env", default=None,
                   help="serve this environment's model from cdk.json with its exact serving shape (on cpu)")
    p.add_argument("--cdk-json", default=CDK_JSON, help="project config read by --env")
    p.add_argument("--config", help="JSON file with one model entry (as in cdk.json); overrides the flags above")
    p.add_argument("--task", default="embedding", choices=[t.value for t in Task], help="what the model does")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="default fp32 (or the environment's)")
    p.add_argument("--replicas", type=int, default=None,
                   help="a fixed replica count (default: autoscale between --min-replicas and --max-replicas)")
    p.add_argument("--min-replicas", type=int, default=None, help="fewest replicas when autoscaling (default 1)")
    p.add_argument("--max-replicas", type=int, default=None,
                   help="most replicas when autoscaling (default: by CPU count, 2 on 2 cores; never more than the "
                        "CPUs hold)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per replica (default 1, 2 above 4 cores)")
    p.add_argument("--max-batch-size", type=int, default=None, help="default 32 (or the environment's)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="batch wait when the processor is idle (default 0 ms, or the environment's)")
    p.add_argument("--max-seq-length", type=int, default=None, help="default 128 (or the environment's)")
    p.add_argument("--artifact-uri", help="compiled-artifact cache (default: STATE_DIR/artifacts)")
    p.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL)")
    p.add_argument("--state-dir", default=".eks-inference", help="state file, log and caches")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait until healthy; time spent waiting for unpublished weights does not count")
    p.set_defaults(func=cmd_local)

    c = add_command(
        sub, "compile", summary="trace/compile a model for a processor and write a verified artifact",
        description="Trace (cpu, cuda) or compile (neuron) a model for its batch and sequence buckets, check the "
                    "result against the eager model, and write the artifact with a manifest of sha256 sums. With "
                    "--publish-to it goes to the repository's compiled-artifact cache, where replicas with the "
                    "same cache key download it instead of compiling.",
        example_lines=(
            "eks-inference compile bundled:all-minilm-l6-v2 --name minilm",
            "eks-inference compile s3://BUCKET/models/minilm/v1 --name minilm --processor inferentia "
            "--publish-to s3://BUCKET",
            "eks-inference compile ./my-model --name mymodel --dtype bf16 --batch-buckets 1,4,16 --max-seq-length 256",
            "eks-inference compile --serve-app \"$(cat app.json)\" --wait-for-weights 3600   # the compile Job",
            "eks-inference compile --serve-app \"$(cat family-app.json)\" --missing   # a family's compile CronJob",
        ))
    c.add_argument("source", nargs="?", help="model directory, bundled:NAME or s3://BUCKET/models/NAME/REVISION")
    c.add_argument("--name", help="model name (as in the config); required with SOURCE")
    c.add_argument("--serve-app", default=None,
                   help='compile what replicas of this serve-config application load: {"args": ..., "user_config": '
                        "...} as rendered for a RayService; the weights must match its weights_sha256, and the "
                        "artifact goes to its artifact_uri (the compile Job runs this)")
    c.add_argument("--model-id", default=None,
                   help="with --serve-app of a model family: the member to compile, as the family's replicas load it "
                        "(run when it is published: replicas that never compile find it on its first request)")
    c.add_argument("--missing", action="store_true",
                   help="with --serve-app of a model family: compile every member whose artifact is missing, "
                        "create-only (the family's compile CronJob runs this); exits 1 if any member failed")
    c.add_argument("--wait-for-weights", type=float, default=0.0,
                   help="with --serve-app: seconds to wait for weights not published yet (default 0: fail at once)")
    c.add_argument("--weights-sha256", default=None,
                   help="refuse weights whose digest is not this one (the digest `publish` printed)")
    c.add_argument("--revision", default="v1", help="weights revision (part of the cache key)")
    c.add_argument("--task", default="embedding", choices=[t.value for t in Task], help="what the model does")
    c.add_argument("--processor", default="cpu", choices=[p.value for p in Processor], help="target processor")
    c.add_argument("--dtype", default="fp32", choices=[d.value for d in DType], help="compute type")
    c.add_argument("--batch-buckets", type=_buckets, default=None,
                   help="batch sizes to compile, e.g. 1,2,4,8,16,32 (default: powers of 2 up to --max-batch-size)")
    c.add_argument("--max-batch-size", type=int, default=32, help="largest batch")
    c.add_argument("--max-seq-length", type=int, default=128, help="longest sequence in tokens")
    c.add_argument("--out", default=".eks-inference/compiled", help="output directory")
    c.add_argument("--publish-to", default=None,
                   help="repository s3://BUCKET/PREFIX (or a directory) to publish to (default: keep it local)")
    c.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL)")
    c.set_defaults(func=cmd_compile)

    u = add_command(
        sub, "publish", summary="upload a model directory or a compiled artifact to the model repository",
        description="Upload a Hugging Face model directory (or a bundled model) to REPO/models/NAME/REVISION/ with "
                    "a manifest of sha256 sums, or a compiled artifact to REPO/artifacts/. The manifest is written "
                    "last and create-only: replicas waiting for the weights start loading when it appears, and a "
                    "published revision never changes under them (publish different files under a new --revision).",
        example_lines=(
            "eks-inference publish bundled:all-minilm-l6-v2 --to s3://BUCKET --name minilm --revision v1",
            "eks-inference publish ./my-model --to s3://BUCKET/team-a --name mymodel --revision 2026-01-15",
            "eks-inference publish --artifact .eks-inference/compiled/artifacts/minilm/v1/KEY --to s3://BUCKET",
            "eks-inference publish ./acme-model --to s3://BUCKET --family tenants --model-id acme --task embedding",
        ))
    u.add_argument("source", nargs="?", help="model directory or bundled:NAME")
    u.add_argument("--to", required=True, help="repository: s3://BUCKET/PREFIX or a directory")
    u.add_argument("--name", help="model name (models/NAME/REVISION/); required with SOURCE")
    u.add_argument("--revision", default="v1", help="weights revision")
    u.add_argument("--task", default=None, choices=[t.value for t in Task],
                   help="recorded in the manifest (default: not recorded)")
    u.add_argument("--artifact", default=None, help="a compiled artifact directory (with manifest.json)")
    u.add_argument("--family", default=None, help="publish SOURCE as a member of this family (models/FAMILY/members/"
                   "ID/REVISION/) and add it to the family's index: replicas serve it on its first request")
    u.add_argument("--model-id", default=None, help="the member's model id (with --family)")
    u.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint (default: AWS, or AWS_ENDPOINT_URL)")
    u.set_defaults(func=cmd_publish)
