"""Render Ray Serve's ``serveConfigV2`` from the typed config: one source of truth for the serving shape.

The Kubernetes charts write this document into each RayService; ``eks-inference local`` hands the very
same dict to a local Ray. Pure dict building: importable without torch, Ray or boto3, so the CDK side
can call it. The replica parses its half back with :func:`parse_app_args` and :func:`parse_user_config`,
so what is rendered and what is accepted are checked in one module.

Contract (used by ``eks_inference.k8s``)::

    render_serve_config(model, processor, *, model_uri, artifact_uri=None, cache_dir=DEFAULT_CACHE_DIR,
                        http_host="0.0.0.0", http_port=8000, s3_endpoint_url=None,
                        max_body_bytes=1048576, max_input_chars=20000, access_log=False,
                        allow_emulated_bf16=False, body_timeout_s=10.0, forward_timeout_s=30.0) -> dict

returns ``{"proxy_location": ..., "http_options": {...}, "applications": [model app, index app]}``.
The model app comes first: it is named after the model, mounted at ``/{model.name}``, imports
:data:`APP_IMPORT_PATH` with ``args`` carrying what the replica needs, and has one deployment
:data:`DEPLOYMENT_NAME` whose ``user_config`` holds the batching knobs (applied in ``reconfigure``), whose
``ray_actor_options`` hold the processor's resources (``num_cpus``; ``resources: {neuron_cores: N}`` on
inferentia; ``num_gpus`` on gpu) and whose ``autoscaling_config`` (:func:`autoscaling_config`) lets Serve move
the replica count between the model's bounds. The index app (:data:`INDEX_APP_NAME`, route prefix ``/``, see
:mod:`eks_inference.serving.index`) answers ``GET /`` with the model list and every path outside the
model's prefix with a JSON 404, instead of the ingress's plain-text one; it reserves no CPU.
The Ray containers should also carry :func:`ray_cluster_env` (:data:`RAY_CLUSTER_ENV`, or for a model-aware family
:data:`MODEL_AWARE_ENV` in place of HAProxy) in their environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eks_inference.config import AutoCast, ConfigError, DType, FamilyRouting, ModelSpec, Processor, Task

APP_IMPORT_PATH = "eks_inference.serving.app:build_app"
FAMILY_IMPORT_PATH = "eks_inference.serving.family:build_app"
"""A family's application (:mod:`eks_inference.serving.family`): the same deployment name and shape, members
multiplexed by model id."""
DEPLOYMENT_NAME = "InferenceModel"
DEFAULT_CACHE_DIR = "/tmp/eks-inference-cache"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INPUT_CHARS = 20_000
INDEX_APP_NAME = "_index"
"""Name of the route-index application; the underscore keeps it apart from every model name (kebab-case)."""
INDEX_IMPORT_PATH = "eks_inference.serving.index:build_app"
INDEX_DEPLOYMENT_NAME = "RouteIndex"

AUTOSCALING_METRIC_PUSH_S = 2
"""How often each replica reports its ongoing requests to Serve's autoscaler (Ray's default 10 s). With HAProxy
ingress requests bypass the handles, so these reports are the autoscaler's only input
(ray/serve/_private/replica.py, ``should_collect_ongoing_requests``); every 2 s puts several samples in the
look-back window and lets a step in load be seen within seconds, at one small call per replica per 2 s."""

REQUEST_TIMEOUT_S = 60
"""``http_options.request_timeout_s``: Serve answers 408 to a request it has held this long, measured from its
admission (after the whole body arrived, see :mod:`eks_inference.serving.ingress_guard`) through the queue and the
forward. Ray's default is none: a request behind a stuck forward waited for ever."""
DEFAULT_BODY_TIMEOUT_S = 10.0
"""The whole request body must arrive within this many seconds of its headers, or the replica answers 408 before the
request takes an admission slot (:mod:`eks_inference.serving.ingress_guard`)."""
DEFAULT_FORWARD_TIMEOUT_S = 30.0
"""A forward still running after this long (or after :data:`FORWARD_BOUND_FACTOR` times its measured time, if
longer) fails the replica's health check, and Serve replaces the replica."""
HAPROXY_CLIENT_TIMEOUT_S = 30
"""HAProxy drops a client that sends nothing for this long (Ray's default: an hour)."""
HAPROXY_SERVER_TIMEOUT_S = int(DEFAULT_BODY_TIMEOUT_S) + REQUEST_TIMEOUT_S + 5
"""HAProxy gives up on a replica silent for this long (Ray's default: never): a backstop above the replica's own
408s, for a replica whose event loop no longer answers at all."""
INGRESS_GUARD_IMPORT_PATH = "eks_inference.serving.ingress_guard:middlewares"
FORWARD_BOUND_FACTOR = 10
"""A forward counts as stuck only past this many times its measured duration, so a model whose batches
legitimately take longer than ``forward_timeout_s`` is not replaced in a loop."""

RAY_CLUSTER_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": str(AUTOSCALING_METRIC_PUSH_S),
    "RAY_metrics_report_interval_ms": "5000",
    "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(HAPROXY_CLIENT_TIMEOUT_S),
    "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": str(HAPROXY_SERVER_TIMEOUT_S),
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": INGRESS_GUARD_IMPORT_PATH,
}
"""Environment for every Ray container (head and workers) that runs these applications.

Ray 2.60's throughput mode plus HAProxy ingress: HTTP is terminated by HAProxy on port 8000 and sent
straight to the replicas' own HTTP servers, skipping the Python proxy actor. Measured on the bundled
model (2 vCPU): the Python proxy cost ~8 ms of CPU per request and replicas ~13 ms; with these settings
replicas ~7.7 ms and no proxy, for +45 % throughput and −14 ms p50 at concurrency 1. ``/-/healthz`` and
``/-/routes`` (KubeRay's probes) keep working. Not part of ``serveConfigV2``: the charts put it in the
container env; ``eks-inference local`` sets it for its private Ray.

``RAY_metrics_report_interval_ms``: how often each Ray process hands its metrics to the node's metrics agent
(Ray's default 10 s). A load-test step's server metrics are read once the last of them has arrived, one
interval after the step, so a shorter interval shortens the pause between steps; 5 s costs a handful of local
pushes per pod. Local mode uses 2 s (:func:`eks_inference.serving.local.ray_environment`).

Timeouts (Ray 2.60 reads them at import, ``ray/serve/_private/constants.py``): HAProxy's ``timeout client`` and
``timeout server`` (:data:`HAPROXY_CLIENT_TIMEOUT_S`, :data:`HAPROXY_SERVER_TIMEOUT_S`). Ray 2.60 offers no setting
for HAProxy's ``timeout http-request``; the body deadline is kept by the replica instead: every HTTP server Serve
starts (each replica's own, and the fallback proxy) wraps its application in the middlewares that
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names, which read the whole body under a deadline before Serve admits
the request (``ray/serve/_private/replica.py``, ``_direct_ingress_asgi``).
"""

MODEL_AWARE_ENV: dict[str, str] = {
    "RAY_SERVE_ENABLE_HA_PROXY": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}
"""What a model-aware family's Ray containers carry instead of the HAProxy settings (:func:`ray_cluster_env`).

HAProxy off: Serve's Python proxy terminates HTTP and hands each request to its request router, which reads the
``serve_multiplexed_model_id`` header (``ray/serve/_private/proxy.py``) and prefers the replicas that report holding
or loading that model (``ray/serve/_private/request_router/request_router.py``, ``apply_multiplex_routing``; each
replica pushes its ids every 0.1 s, ``ray/serve/multiplex.py``, ``_push_model_ids_info``). Direct ingress off too:
the throughput mode turns it on by default, and with direct ingress but no HAProxy the controller starts the proxy
on the head node only (``ray/serve/_private/controller.py``), where every request would pass one Python process;
off, a proxy runs on every node (the config's ``proxy_location: EveryNode``) and KubeRay's serve Service spreads
requests over them. Every proxy's router sees every replica's models, so the routing holds whichever proxy takes
the request. The throughput mode's other settings stay."""


def ray_cluster_env(*, model_aware: bool = False) -> dict[str, str]:
    """The Ray containers' environment: :data:`RAY_CLUSTER_ENV`, or for a model-aware family the same without HAProxy
    and its settings, with :data:`MODEL_AWARE_ENV`."""
    if not model_aware:
        return dict(RAY_CLUSTER_ENV)
    kept = {k: v for k, v in RAY_CLUSTER_ENV.items() if not k.startswith("RAY_SERVE_HAPROXY_")}
    return {**kept, **MODEL_AWARE_ENV}


def model_aware_app(app: Mapping[str, Any]) -> bool:
    """Whether a rendered application is a family with model-aware routing (``args.family.routing``)."""
    args = app.get("args")
    fam = args.get("family") if isinstance(args, Mapping) else None
    return isinstance(fam, Mapping) and fam.get("routing") == FamilyRouting.MODEL_AWARE.value


RAY_LOG_ENV: dict[str, str] = {
    "RAY_LOG_TO_STDERR": "1",
    "RAY_SERVE_LOG_TO_STDERR": "1",
    "EKS_INFERENCE_ACCESS_LOG_SAMPLE": "0.01",
}
"""Environment of the Ray containers in the cluster (not locally), so that their logs reach the container's stderr,
which the cluster's log agent ships to CloudWatch Logs, and outlive the pod.

``RAY_LOG_TO_STDERR=1``: the raylet leaves the workers' stdout and stderr alone instead of writing them to
``worker-*.out/.err`` (``ray/scripts/scripts.py``, ``RayParams.env_vars``; ``ray/_private/node.py``,
``should_redirect_logs``), and Ray's own processes log to stderr instead of ``/tmp/ray/session_latest/logs``: those
files are gone, ``kubectl logs`` and CloudWatch hold them instead. ``RAY_SERVE_LOG_TO_STDERR=1``: Serve's logger
writes to stderr as well as to its files under ``logs/serve/`` (``ray/serve/_private/logging_utils.py``; the
throughput mode turns the stream off by default), so the dashboard's Serve log view keeps working. Serve's
per-request access lines stay in those files only (Ray marks them ``log_to_stderr: False``); the application writes
a sampled access log instead (:mod:`eks_inference.serving.access_log`, one request in a hundred and every failure).
Locally none of this is set: a terminal is no place for every Ray process's log."""

ADMISSION_SPARE = 8
"""Serve admits this many requests per replica beyond the replica's own limit, so that requests over the
limit reach the application and get its JSON 503 instead of Serve's plain-text one."""
BURST_QUEUE_FACTOR = 4
"""Serve's own queue holds this many times the replica's limit: a burst waits there for the instant it takes
the replica to shed it (in JSON); only a burst beyond that meets Serve's plain-text 503."""

USER_CONFIG_KEYS = ("max_batch_size", "batch_wait_timeout_s", "max_seq_length", "num_threads", "dtype")


def model_repository_uris(repository_uri: str, model: ModelSpec) -> tuple[str, str]:
    """``(model_uri, artifact_uri)`` for a model in a repository laid out as the publisher writes it.

    ``s3://bucket/prefix`` → ``s3://bucket/prefix/models/{name}/{revision}`` and ``s3://bucket/prefix/artifacts``.
    """
    root = repository_uri.rstrip("/")
    if model.family is not None:  # a family's members and index live under its prefix (no revision)
        return f"{root}/models/{model.name}", f"{root}/artifacts"
    return f"{root}/models/{model.name}/{model.revision}", f"{root}/artifacts"


def render_serve_config(
    model: ModelSpec,
    processor: Processor,
    *,
    model_uri: str,
    artifact_uri: str | None = None,
    cache_dir: str = DEFAULT_CACHE_DIR,
    http_host: str = "0.0.0.0",
    http_port: int = 8000,
    s3_endpoint_url: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
    access_log: bool = False,
    allow_emulated_bf16: bool = False,
    compile_on_miss: bool = True,
    compile_hint: str | None = None,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    forward_timeout_s: float = DEFAULT_FORWARD_TIMEOUT_S,
) -> dict[str, Any]:
    """The ``serveConfigV2`` document serving ``model`` on ``processor``.

    :param model: the model; its ``serving`` spec gives batching, replicas and resources.
    :param processor: where it runs; picks the backend (cpu, neuron, cuda) and the Ray resources.
    :param model_uri: weights: ``s3://bucket/prefix/models/NAME/REV`` (published with a manifest),
        a local directory, or ``bundled:all-minilm-l6-v2``.
    :param artifact_uri: root of the compiled-artifact cache (``s3://bucket/prefix/artifacts`` or a
        local directory); default None: compile at start-up and keep the artifact in ``cache_dir`` only.
    :param compile_on_miss: whether a replica that finds no artifact compiles one itself and publishes it to
        ``artifact_uri``; default True (``eks-inference local``, where the user is the only identity). The cluster
        renders False: no identity that a request can reach may write what replicas load, so replicas only read and
        wait (answering 503 with ``compile_hint``) until the compile step publishes the artifact.
    :param compile_hint: who writes the artifact, quoted by a waiting replica; default none.
    :param cache_dir: replica-local download and compile directory, default ``/tmp/eks-inference-cache``.
    :param http_host: default ``0.0.0.0`` (pods); use ``127.0.0.1`` locally.
    :param http_port: default 8000.
    :param s3_endpoint_url: S3 endpoint override (e.g. a local S3); default None (AWS, or AWS_ENDPOINT_URL).
    :param max_body_bytes: larger request bodies get 413; default 1 MiB.
    :param max_input_chars: longer single inputs get 413 (shorter ones are truncated to
        ``max_seq_length`` tokens and flagged); default 20,000.
    :param access_log: one replica log line per request; default False (Serve's metrics count requests,
        and at thousands of requests per second the log line costs more than it tells).
    :param allow_emulated_bf16: serve bf16 on CPUs without bf16 instructions too (slow; for checking
        numerics); default False: such CPUs serve fp32 when the config asks for bf16.
    :param body_timeout_s: the whole request body must arrive within this many seconds, or the replica answers
        408 before the request takes an admission slot; default 10.
    :param forward_timeout_s: a forward running longer than this (or than :data:`FORWARD_BOUND_FACTOR` times its
        measured time, if longer) fails the health check and Serve replaces the replica; default 30, at most
        :data:`REQUEST_TIMEOUT_S`.
    """
    if processor not in model.processors:
        raise ConfigError(
            f"model {model.name!r} processors: {processor.value!r} is not one of "
            f"{[p.value for p in model.processors]}; add it to the model's processors or pick another"
        )
    if not 1 <= http_port <= 65535:
        raise ConfigError(f"http_port: {http_port!r} is not a TCP port; use 1..65535")
    if not model_uri:
        raise ConfigError("model_uri: '' is empty; give an s3:// URI, a directory or bundled:NAME")
    if not compile_on_miss and not artifact_uri:
        raise ConfigError(f"artifact_uri: {artifact_uri!r} while compile_on_miss is false: the replicas of "
                          f"{model.name!r} could load no artifact; give the repository the compile step publishes to")
    if max_body_bytes < 1024 or max_input_chars < 1:
        raise ConfigError(
            f"max_body_bytes/max_input_chars: {(max_body_bytes, max_input_chars)!r} is too small; "
            "use at least 1024 bytes and 1 character"
        )
    _timeout("body_timeout_s", body_timeout_s, DEFAULT_BODY_TIMEOUT_S)
    _timeout("forward_timeout_s", forward_timeout_s, DEFAULT_FORWARD_TIMEOUT_S)
    s = model.serving
    actor: dict[str, Any] = {"num_cpus": s.cpus_per_replica}
    if processor.backend == "neuron":
        actor["resources"] = {"neuron_cores": s.neuron_cores_per_replica}
    elif processor.backend == "cuda":
        actor["num_gpus"] = s.gpus_per_replica
    elif s.cpu_tuning.env():
        # read by oneDNN and PyTorch as the replica's process loads them: the actor's environment, not user_config
        actor["runtime_env"] = {"env_vars": s.cpu_tuning.env()}
    args: dict[str, Any] = {
        "model": model.name,
        "revision": model.revision,
        "task": model.task.value,
        "processor": processor.value,
        "model_uri": model_uri,
        "artifact_uri": artifact_uri,
        "compile_on_miss": compile_on_miss,
        "compile_hint": compile_hint,
        "weights_sha256": model.weights_sha256,
        "cache_dir": cache_dir,
        # CPU and GPU: a fixed set up to a ceiling, so a max_batch_size change is user_config only (no restart)
        "batch_buckets": list(s.live_batch_buckets(processor)),
        "max_inputs": s.max_inputs,
        "max_body_bytes": max_body_bytes,
        "max_input_chars": max_input_chars,
        "s3_endpoint_url": s3_endpoint_url,
        "allow_emulated_bf16": allow_emulated_bf16,
        "max_requests_per_replica": s.replica_limit,
        "body_timeout_s": body_timeout_s,
        "forward_timeout_s": forward_timeout_s,
    }
    if processor.backend == "cpu" and s.cpu_tuning.torch_compile:
        args["torch_compile"] = True
    if processor.backend == "neuron" and s.auto_cast is not None:
        args["auto_cast"] = s.auto_cast.value
    if model.family is not None:
        args["family"] = {"memory_budget_bytes": model.family.memory_budget_bytes,
                          "routing": model.family.routing.value,
                          "disk_budget_bytes": model.family.disk_budget_bytes}
    user_config = {
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
        "max_seq_length": s.max_seq_length,
        "num_threads": s.num_threads,
        "dtype": s.dtype.value,
    }
    deployment = {
        "name": DEPLOYMENT_NAME,
        "autoscaling_config": autoscaling_config(model, processor),
        # The replica itself sheds load above max_requests_per_replica with a JSON 503; Serve's own limits
        # stay above it as a backstop (Serve's 503 body is plain text).
        "max_ongoing_requests": s.replica_limit + ADMISSION_SPARE,
        "max_queued_requests": BURST_QUEUE_FACTOR * s.replica_limit,
        "user_config": user_config,
        "ray_actor_options": actor,
        "health_check_period_s": 10,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": 20,
        "logging_config": {"enable_access_log": access_log},
    }
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": http_host, "port": http_port, "request_timeout_s": REQUEST_TIMEOUT_S},
        "applications": [{
            "name": model.name,
            "route_prefix": f"/{model.name}",
            "import_path": APP_IMPORT_PATH if model.family is None else FAMILY_IMPORT_PATH,
            "args": args,
            "deployments": [deployment],
        }, index_application([model.name], access_log=access_log)],
    }


def autoscaling_config(model: ModelSpec, processor: Processor) -> dict[str, Any]:
    """Serve's ``autoscaling_config`` for the model's deployment (Ray 2.60 ``ray.serve.config.AutoscalingConfig``).

    Serve counts a replica's ongoing requests as those it holds, running or waiting in its batch queue; direct
    (HAProxy) ingress makes each replica push that count itself. The target is what a replica should hold on
    average (by default derived from the batch size and the processor,
    :func:`~eks_inference.config.default_target_ongoing_requests`); the replica admits up to
    ``max_ongoing_requests + max_queued_requests``
    and sheds beyond, so between the target and that limit lies the room that absorbs a rise in load while new
    replicas start. Only at ``max_replicas`` does a sustained overload meet the 503. A fixed count renders
    ``min_replicas == max_replicas``: the same document shape whether or not the model scales.
    """
    s = model.serving
    lo, hi = s.replicas
    return {
        "min_replicas": lo,
        "max_replicas": hi,
        "initial_replicas": lo,
        "target_ongoing_requests": s.target_for(processor),
        "upscale_delay_s": s.upscale_delay_s,
        "downscale_delay_s": s.downscale_delay_s,
        "look_back_period_s": s.look_back_period_s,
    }


def index_application(models: list[str], *, access_log: bool = False) -> dict[str, Any]:
    """The route-index application listing ``models`` (see :mod:`eks_inference.serving.index`)."""
    return {
        "name": INDEX_APP_NAME,
        "route_prefix": "/",
        "import_path": INDEX_IMPORT_PATH,
        "args": {"models": sorted(models)},
        "deployments": [{
            "name": INDEX_DEPLOYMENT_NAME,
            "num_replicas": 1,
            "max_ongoing_requests": 100,
            "ray_actor_options": {"num_cpus": 0},
            "logging_config": {"enable_access_log": access_log},
        }],
    }


@dataclass(frozen=True, kw_only=True)
class AppArgs:
    """What a replica needs that cannot change without a restart (``args`` of the application)."""

    model: str
    revision: str
    task: Task
    processor: Processor
    model_uri: str
    artifact_uri: str | None
    cache_dir: str
    batch_buckets: tuple[int, ...]
    max_inputs: int
    compile_on_miss: bool = True
    """Whether the replica may compile a missing artifact and publish it (the cluster renders false)."""
    compile_hint: str | None = None
    """Who writes the artifact, quoted while the replica waits for it."""
    weights_sha256: str | None = None
    """The only weights digest the replica loads (the model's ``weights_sha256``); None: any."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS
    s3_endpoint_url: str | None = None
    allow_emulated_bf16: bool = False
    max_requests_per_replica: int | None = None
    """Predict requests one replica holds at once (working or waiting for a batch); beyond it a JSON 503.
    Rendered as the model's ``max_ongoing_requests + max_queued_requests``; None: no limit of its own."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    """Seconds the whole request body may take to arrive (:mod:`eks_inference.serving.ingress_guard`)."""
    forward_timeout_s: float = DEFAULT_FORWARD_TIMEOUT_S
    """Seconds a forward may run before the health check fails (see :func:`forward_bound_s`)."""
    torch_compile: bool = False
    """CPU: serve ``torch.compile`` of the eager head instead of the TorchScript graph
    (:func:`eks_inference.runtime.backends.compile_cpu_backend`); rendered only when true."""
    auto_cast: str | None = None
    """Inferentia: neuronx-cc ``--auto-cast`` of the artifact; None: it follows the dtype. Rendered only when set."""
    weights_poll_s: tuple[float, float] = (2.0, 30.0)
    """First and largest interval between looks for unpublished weights. Not rendered (the default suits a
    fleet); a test or an operator may add ``weights_poll_s: [first, largest]`` to the args."""

    @property
    def backend(self) -> str:
        return self.processor.backend


@dataclass(frozen=True, kw_only=True)
class UserConfig:
    """Knobs applied in ``reconfigure`` without restarting the replica."""

    max_batch_size: int
    batch_wait_timeout_s: float
    max_seq_length: int
    num_threads: int
    dtype: DType


def _enum(where: str, cls: Any, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not allowed; use one of "
                          f"{', '.join(str(e.value) for e in cls)}") from None


def _pos_int(where: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: {value!r} is not a positive integer; give a whole number >= 1")
    return value


def parse_app_args(args: Mapping[str, Any]) -> AppArgs:
    """Validate the application ``args`` a replica receives (the inverse of the renderer)."""
    if not isinstance(args, Mapping):
        raise ConfigError(f"application args: {args!r} is not a mapping; render it with render_serve_config")
    required = ("model", "task", "processor", "model_uri", "batch_buckets", "max_inputs")
    missing = [k for k in required if k not in args]
    if missing:
        raise ConfigError(f"application args: {missing} missing; render the config with render_serve_config")
    buckets = args["batch_buckets"]
    if (not isinstance(buckets, list | tuple) or not buckets
            or any(not isinstance(b, int) or b < 1 for b in buckets) or list(buckets) != sorted(set(buckets))):
        raise ConfigError(f"application args batch_buckets: {buckets!r} is not a strictly increasing list of "
                          "positive sizes; list sizes like [1, 2, 4, 8, 16, 32]")
    return AppArgs(
        model=str(args["model"]),
        revision=str(args.get("revision", "v1")),
        task=_enum("application args task", Task, args["task"]),
        processor=_enum("application args processor", Processor, args["processor"]),
        model_uri=str(args["model_uri"]),
        artifact_uri=args.get("artifact_uri") or None,
        compile_on_miss=_flag("application args compile_on_miss", args.get("compile_on_miss", True)),
        compile_hint=str(args["compile_hint"]) if args.get("compile_hint") else None,
        weights_sha256=_digest("application args weights_sha256", args.get("weights_sha256")),
        cache_dir=str(args.get("cache_dir") or DEFAULT_CACHE_DIR),
        batch_buckets=tuple(buckets),
        max_inputs=_pos_int("application args max_inputs", args["max_inputs"]),
        max_body_bytes=_pos_int("application args max_body_bytes",
                                args.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        max_input_chars=_pos_int("application args max_input_chars",
                                 args.get("max_input_chars", DEFAULT_MAX_INPUT_CHARS)),
        s3_endpoint_url=args.get("s3_endpoint_url") or None,
        allow_emulated_bf16=bool(args.get("allow_emulated_bf16", False)),
        max_requests_per_replica=(None if args.get("max_requests_per_replica") is None else _pos_int(
            "application args max_requests_per_replica", args["max_requests_per_replica"])),
        weights_poll_s=_poll_interval(args.get("weights_poll_s", (2.0, 30.0))),
        torch_compile=_flag("application args torch_compile", args.get("torch_compile", False)),
        auto_cast=(None if args.get("auto_cast") is None
                   else _enum("application args auto_cast", AutoCast, args["auto_cast"]).value),
        body_timeout_s=_timeout("application args body_timeout_s", args.get("body_timeout_s", DEFAULT_BODY_TIMEOUT_S),
                                DEFAULT_BODY_TIMEOUT_S),
        forward_timeout_s=_timeout("application args forward_timeout_s",
                                   args.get("forward_timeout_s", DEFAULT_FORWARD_TIMEOUT_S), DEFAULT_FORWARD_TIMEOUT_S),
    )


def _flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {value!r} is not true or false; render the config with render_serve_config")
    return value


def _digest(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ConfigError(f"{where}: {value!r} is not a sha256 digest; give the 64 hex digits `eks-inference "
                          "publish` printed, or leave it out")
    return value


def _poll_interval(value: Any) -> tuple[float, float]:
    ok = (isinstance(value, list | tuple) and len(value) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
          and 0 < value[0] <= value[1] <= 300)
    if not ok:
        raise ConfigError(f"application args weights_poll_s: {value!r} is not [first, largest] seconds with "
                          "0 < first <= largest <= 300; use e.g. [2, 30]")
    return float(value[0]), float(value[1])


def forward_bound_s(forward_timeout_s: float, expected_s: float) -> float:
    """How long a forward expected to take ``expected_s`` (0: not measured yet) may run before it counts as stuck."""
    return max(forward_timeout_s, FORWARD_BOUND_FACTOR * expected_s)


def _timeout(where: str, value: Any, example: float) -> float:
    """A bound in seconds: positive and no longer than the request timeout, past which no one waits for it."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= REQUEST_TIMEOUT_S:
        raise ConfigError(f"{where}: {value!r} is outside (0, {REQUEST_TIMEOUT_S}] seconds (the request timeout); "
                          f"use e.g. {example:g}")
    return float(value)


def parse_user_config(data: Mapping[str, Any], *, batch_buckets: tuple[int, ...]) -> UserConfig:
    """Validate a ``user_config``; ``max_batch_size`` must fit the largest compiled batch bucket."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"user_config: {data!r} is not a mapping; give an object with {USER_CONFIG_KEYS}")
    unknown = sorted(set(data) - set(USER_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"user_config: {unknown} are not known keys; use {', '.join(USER_CONFIG_KEYS)}")
    missing = [k for k in USER_CONFIG_KEYS if k not in data]
    if missing:
        raise ConfigError(f"user_config: {missing} missing; render the config with render_serve_config")
    mbs = _pos_int("user_config max_batch_size", data["max_batch_size"])
    if mbs > batch_buckets[-1]:
        raise ConfigError(f"user_config max_batch_size: {mbs} exceeds the largest batch bucket "
                          f"{batch_buckets[-1]}; lower it or add a bucket (batch_buckets)")
    wait = data["batch_wait_timeout_s"]
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 1:
        raise ConfigError(f"user_config batch_wait_timeout_s: {wait!r} is outside [0, 1] s; use e.g. 0.005")
    seq = _pos_int("user_config max_seq_length", data["max_seq_length"])
    if seq > 512:
        raise ConfigError(f"user_config max_seq_length: {seq} exceeds BERT-family position limits; use <= 512")
    return UserConfig(
        max_batch_size=mbs,
        batch_wait_timeout_s=float(wait),
        max_seq_length=seq,
        num_threads=_pos_int("user_config num_threads", data["num_threads"]),
        dtype=_enum("user_config dtype", DType, data["dtype"]),
    )
