"""render_serve_config: the serveConfigV2 contract shared by the charts and `eks-inference local`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eks_inference.config import ConfigError, DType, ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.serve_config import (
    ADMISSION_SPARE,
    APP_IMPORT_PATH,
    BURST_QUEUE_FACTOR,
    DEPLOYMENT_NAME,
    INDEX_APP_NAME,
    INDEX_IMPORT_PATH,
    INGRESS_GUARD_IMPORT_PATH,
    RAY_CLUSTER_ENV,
    REQUEST_TIMEOUT_S,
    USER_CONFIG_KEYS,
    forward_bound_s,
    model_repository_uris,
    parse_app_args,
    parse_user_config,
    render_serve_config,
)

ALL = (Processor.GRAVITON, Processor.INFERENTIA, Processor.GPU, Processor.CPU)


def spec(**serving: object) -> ModelSpec:
    return ModelSpec(name="minilm", task=Task.EMBEDDING, processors=ALL, serving=ServingSpec(**serving))  # type: ignore[arg-type]


def render(processor: Processor = Processor.CPU, **kw: object) -> dict:
    return render_serve_config(spec(), processor, model_uri="s3://b/p/models/minilm/v1",
                               artifact_uri="s3://b/p/artifacts", **kw)  # type: ignore[arg-type]


def deployment(cfg: dict) -> dict:
    return cfg["applications"][0]["deployments"][0]


def test_application_mounts_the_model_at_its_name_and_imports_the_builder() -> None:
    cfg = render(http_port=8123, http_host="127.0.0.1")
    app = cfg["applications"][0]
    assert app["name"] == "minilm"
    assert app["route_prefix"] == "/minilm"
    assert app["import_path"] == APP_IMPORT_PATH
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8123, "request_timeout_s": REQUEST_TIMEOUT_S}
    assert deployment(cfg)["name"] == DEPLOYMENT_NAME


def test_user_config_carries_exactly_the_runtime_knobs_from_the_serving_spec() -> None:
    m = ModelSpec(name="m", processors=(Processor.CPU,), serving=ServingSpec(
        max_batch_size=16, batch_wait_timeout_s=0.004, max_seq_length=64, num_threads=3, dtype=DType.BF16))
    uc = deployment(render_serve_config(m, Processor.CPU, model_uri="bundled:all-minilm-l6-v2"))["user_config"]
    assert set(uc) == set(USER_CONFIG_KEYS)
    assert uc == {"max_batch_size": 16, "batch_wait_timeout_s": 0.004, "max_seq_length": 64, "num_threads": 3,
                  "dtype": "bf16"}


@pytest.mark.parametrize(("processor", "expected"), [
    (Processor.CPU, {"num_cpus": 2.0}),
    (Processor.GRAVITON, {"num_cpus": 2.0}),
    (Processor.INFERENTIA, {"num_cpus": 2.0, "resources": {"neuron_cores": 2}}),
    (Processor.GPU, {"num_cpus": 2.0, "num_gpus": 0.5}),
])
def test_ray_actor_options_request_the_processor_resources(processor: Processor, expected: dict) -> None:
    m = ModelSpec(name="m", processors=ALL, serving=ServingSpec(cpus_per_replica=2.0, neuron_cores_per_replica=2,
                                                                gpus_per_replica=0.5))
    d = deployment(render_serve_config(m, processor, model_uri="bundled:all-minilm-l6-v2"))
    assert d["ray_actor_options"] == expected


def test_limits_come_from_the_spec_so_overload_is_shed_not_queued_forever() -> None:
    m = ModelSpec(name="m", processors=(Processor.CPU,),
                  serving=ServingSpec(num_replicas=3, max_ongoing_requests=48, max_queued_requests=7))
    d = deployment(render_serve_config(m, Processor.CPU, model_uri="bundled:all-minilm-l6-v2"))
    # the replica sheds above 48 + 7 with a JSON 503; Serve's own (plain-text) limits sit above as a backstop
    args = parse_app_args(render_serve_config(m, Processor.CPU, model_uri="bundled:all-minilm-l6-v2")
                          ["applications"][0]["args"])
    assert args.max_requests_per_replica == 48 + 7
    assert "num_replicas" not in d  # Serve refuses a number next to an autoscaling_config
    scaling = d["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], d["max_ongoing_requests"], d["max_queued_requests"]) == (
        3, 3, 55 + ADMISSION_SPARE, BURST_QUEUE_FACTOR * 55)
    assert d["logging_config"] == {"enable_access_log": False}


def test_a_route_index_answers_every_path_outside_the_model_in_json() -> None:
    cfg = render()
    assert [a["name"] for a in cfg["applications"]] == ["minilm", INDEX_APP_NAME]
    index = cfg["applications"][1]
    assert (index["route_prefix"], index["import_path"], index["args"]) == ("/", INDEX_IMPORT_PATH,
                                                                             {"models": ["minilm"]})
    (dep,) = index["deployments"]
    assert dep["ray_actor_options"] == {"num_cpus": 0} and dep["num_replicas"] == 1
    from eks_inference.serving.index import index_answer

    assert index_answer("GET", "/", ["minilm"])[1]["models"][0]["predict"] == "/minilm/predict"
    status, body = index_answer("POST", "/bert/predict", ["minilm"])
    assert status == 404 and body["error"]["code"] == "not_found"
    assert body["error"]["message"].startswith("no model is served at /bert/predict; models here: /minilm")
    assert index_answer("DELETE", "/", ["minilm"])[0] == 405


def test_replica_args_accept_a_weights_poll_interval_and_refuse_nonsense() -> None:
    args = render()["applications"][0]["args"]
    assert parse_app_args(args).weights_poll_s == (2.0, 30.0)
    assert parse_app_args({**args, "weights_poll_s": [0.5, 2]}).weights_poll_s == (0.5, 2.0)
    for bad in ([0, 1], [5, 2], [1, 1000], "fast", [1]):
        with pytest.raises(ConfigError, match="weights_poll_s"):
            parse_app_args({**args, "weights_poll_s": bad})


def test_args_round_trip_through_the_replica_parser() -> None:
    cfg = render(Processor.INFERENTIA, s3_endpoint_url="http://127.0.0.1:5000", cache_dir="/cache")
    args = parse_app_args(cfg["applications"][0]["args"])
    assert args.processor is Processor.INFERENTIA and args.backend == "neuron"
    assert args.task is Task.EMBEDDING
    assert args.model_uri == "s3://b/p/models/minilm/v1"
    assert args.artifact_uri == "s3://b/p/artifacts"
    assert args.cache_dir == "/cache"
    assert args.batch_buckets == (1, 2, 4, 8, 16, 32)
    assert args.s3_endpoint_url == "http://127.0.0.1:5000"
    uc = parse_user_config(deployment(cfg)["user_config"], batch_buckets=args.batch_buckets)
    assert (uc.max_batch_size, uc.dtype) == (32, DType.FP32)


def test_rendered_document_is_valid_for_ray_serve_and_json() -> None:
    from eks_inference.serving.local import ray_environment

    ray_environment()
    from ray.serve.schema import ServeDeploySchema

    for p in ALL:
        cfg = render(p)
        json.dumps(cfg)
        parsed = ServeDeploySchema.model_validate(cfg)
        assert (parsed.applications[0].deployments[0].user_config or {})["max_batch_size"] == 32


def test_rendering_is_pure_and_deterministic() -> None:
    assert render() == render()
    code = ("import sys; from eks_inference.serving import serve_config; "
            "bad = [m for m in ('torch', 'ray', 'boto3', 'transformers', 'fastapi') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_repository_layout() -> None:
    m = ModelSpec(name="minilm", revision="v7")
    assert model_repository_uris("s3://bucket/pre/", m) == ("s3://bucket/pre/models/minilm/v7",
                                                            "s3://bucket/pre/artifacts")


def test_cluster_env_turns_on_the_measured_ray_settings() -> None:
    assert RAY_CLUSTER_ENV == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
                               "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "2",
                               "RAY_metrics_report_interval_ms": "5000",
                               "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": "30", "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": "75",
                               "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": INGRESS_GUARD_IMPORT_PATH}


def test_every_timeout_ray_exposes_is_set_where_ray_reads_it() -> None:
    """GIVEN the rendered config and the cluster env WHEN Ray 2.60 reads them as it does on a fresh cluster (the
    dashboard's ``serve_start`` takes ``http_options`` whole, ``ray/dashboard/modules/serve/serve_head.py``; HAProxy
    and the middleware callback come from the env, ``ray/serve/_private/constants.py``) THEN a request is bounded end
    to end, HAProxy no longer waits an hour on a silent client nor for ever on a silent replica, and every HTTP server
    Serve starts reads the body under a deadline first."""
    code = r"""
import json, os, sys
from eks_inference.serving.serve_config import RAY_CLUSTER_ENV
os.environ.update(RAY_CLUSTER_ENV)
from ray.serve.config import HTTPOptions
from ray.serve._private.haproxy import HAProxyConfig
from ray.serve._private.http_util import configure_http_middlewares
opts = configure_http_middlewares(HTTPOptions(**json.loads(sys.argv[1])))
hap = HAProxyConfig(http_options=opts)
print(json.dumps({"request_timeout_s": opts.request_timeout_s, "client": hap.timeout_client_s,
                  "server": hap.timeout_server_s, "middlewares": [m.cls.__name__ for m in opts.middlewares]}))
"""
    http = render()["http_options"]
    r = subprocess.run([sys.executable, "-c", code, json.dumps(http)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["request_timeout_s"] == REQUEST_TIMEOUT_S
    assert seen["client"] == 30 and seen["server"] > REQUEST_TIMEOUT_S
    assert seen["middlewares"] == ["BodyDeadline"]


def test_replica_args_carry_the_body_and_forward_bounds() -> None:
    args = parse_app_args(render(body_timeout_s=4, forward_timeout_s=12)["applications"][0]["args"])
    assert (args.body_timeout_s, args.forward_timeout_s) == (4.0, 12.0)
    default = parse_app_args(render()["applications"][0]["args"])
    assert (default.body_timeout_s, default.forward_timeout_s) == (10.0, 30.0)
    assert default.forward_timeout_s <= REQUEST_TIMEOUT_S


def test_a_forward_counts_as_stuck_past_its_timeout_or_ten_times_its_measured_time() -> None:
    assert forward_bound_s(30, 0.0) == 30  # not measured yet
    assert forward_bound_s(30, 0.2) == 30
    assert forward_bound_s(30, 5.0) == 50  # a slow model's big batch is not mistaken for a hang


def test_autoscaling_config_is_what_ray_accepts_and_sheds_only_beyond_the_target() -> None:
    """Ray 2.60's own AutoscalingConfig and deployment schema accept the rendered block; the replica's own limit
    (where it sheds with a JSON 503) lies above the target, and Serve's admission above that."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import ServeDeploySchema

    m = ModelSpec(name="m", processors=(Processor.CPU,),
                  serving=ServingSpec(min_replicas=2, max_replicas=5, max_batch_size=16, upscale_delay_s=5,
                                      downscale_delay_s=60, look_back_period_s=12))
    cfg = render_serve_config(m, Processor.CPU, model_uri="bundled:all-minilm-l6-v2")
    ServeDeploySchema.model_validate(cfg)
    d = deployment(cfg)
    scaling = AutoscalingConfig(**d["autoscaling_config"])
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (2, 2, 5)
    assert scaling.target_ongoing_requests == 1  # on CPUs a batch costs about as many single forwards
    assert (scaling.upscale_delay_s, scaling.downscale_delay_s, scaling.look_back_period_s) == (5, 60, 12)
    limit = parse_app_args(cfg["applications"][0]["args"]).max_requests_per_replica
    assert limit is not None
    assert scaling.target_ongoing_requests < limit < d["max_ongoing_requests"]


def test_a_fixed_count_renders_equal_bounds() -> None:
    m = ModelSpec(name="m", processors=(Processor.CPU,), serving=ServingSpec(num_replicas=2))
    scaling = deployment(render_serve_config(m, Processor.CPU, model_uri="bundled:x"))["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (2, 2)


def test_processor_must_be_one_of_the_models() -> None:
    m = ModelSpec(name="m", processors=(Processor.GRAVITON,))
    with pytest.raises(ConfigError, match=r"'gpu' is not one of \['graviton'\]"):
        render_serve_config(m, Processor.GPU, model_uri="bundled:all-minilm-l6-v2")


@pytest.mark.parametrize(("kw", "match"), [
    ({"http_port": 0}, "http_port: 0 is not a TCP port"),
    ({"model_uri": ""}, "model_uri: '' is empty"),
    ({"max_body_bytes": 10}, "max_body_bytes/max_input_chars"),
    ({"body_timeout_s": 0}, r"body_timeout_s: 0 is outside \(0, 60\] seconds"),
    ({"forward_timeout_s": 600}, r"forward_timeout_s: 600 is outside \(0, 60\] seconds \(the request timeout\); "
                                 "use e.g. 30"),
    ({"forward_timeout_s": True}, "forward_timeout_s: True is outside"),
])
def test_bad_render_arguments(kw: dict, match: str) -> None:
    base = {"model_uri": "bundled:all-minilm-l6-v2"} | kw
    with pytest.raises(ConfigError, match=match):
        render_serve_config(spec(), Processor.CPU, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("change", "match"), [
    ({"max_batch_size": 64}, "exceeds the largest batch bucket 32"),
    ({"dtype": "int8"}, "dtype: 'int8' is not allowed"),
    ({"batch_wait_timeout_s": 2}, "outside \\[0, 1\\]"),
    ({"max_seq_length": 1024}, "exceeds BERT-family position limits"),
    ({"num_threads": 0}, "num_threads: 0 is not a positive integer"),
    ({"surprise": 1}, "'surprise'\\] are not known keys"),
])
def test_bad_user_config_is_rejected_with_the_fix(change: dict, match: str) -> None:
    uc = deployment(render())["user_config"] | change
    with pytest.raises(ConfigError, match=match):
        parse_user_config(uc, batch_buckets=(1, 2, 4, 8, 16, 32))


def test_bad_app_args_are_rejected() -> None:
    args = render()["applications"][0]["args"]
    with pytest.raises(ConfigError, match="batch_buckets"):
        parse_app_args(args | {"batch_buckets": [4, 2]})
    with pytest.raises(ConfigError, match="processor: 'tpu' is not allowed"):
        parse_app_args(args | {"processor": "tpu"})
    with pytest.raises(ConfigError, match=r"\['model_uri'\] missing"):
        parse_app_args({k: v for k, v in args.items() if k != "model_uri"})
    with pytest.raises(ConfigError, match="application args body_timeout_s: 'soon' is outside"):
        parse_app_args(args | {"body_timeout_s": "soon"})


PINNED = "ab" * 32


def test_the_cluster_form_forbids_compiling_and_names_the_pinned_weights() -> None:
    """GIVEN a model with weights_sha256 and the cluster's rendering (compile_on_miss false, a compile hint)
    WHEN a replica parses its args
    THEN it may not compile, knows who writes its artifact and which weights digest alone it loads; the local
    rendering (the default) still compiles on a miss."""
    model = ModelSpec(name="minilm", processors=ALL, weights_sha256=PINNED)
    cfg = render_serve_config(model, Processor.CPU, model_uri="s3://b/p/models/minilm/v1",
                              artifact_uri="s3://b/p/artifacts", compile_on_miss=False,
                              compile_hint="the compile Job of minilm-cpu")
    args = parse_app_args(cfg["applications"][0]["args"])
    assert args.compile_on_miss is False and args.compile_hint == "the compile Job of minilm-cpu"
    assert args.weights_sha256 == PINNED
    local = parse_app_args(render()["applications"][0]["args"])
    assert local.compile_on_miss is True and local.weights_sha256 is None


@pytest.mark.parametrize(("change", "match"), [
    ({"compile_on_miss": "no"}, "compile_on_miss: 'no' is not true or false"),
    ({"weights_sha256": "abc"}, "weights_sha256: 'abc' is not a sha256 digest"),
    ({"weights_sha256": "AB" * 32}, "is not a sha256 digest"),
])
def test_bad_pinning_args_are_rejected_with_the_fix(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_app_args(render()["applications"][0]["args"] | change)


def test_a_replica_that_may_not_compile_needs_a_repository_to_load_from() -> None:
    with pytest.raises(ConfigError, match=r"artifact_uri: None while compile_on_miss is false.*compile step"):
        render_serve_config(spec(), Processor.CPU, model_uri="bundled:all-minilm-l6-v2", compile_on_miss=False)


def test_a_batching_change_on_cpu_is_user_config_only() -> None:
    """GIVEN the model at max_batch_size 32, wait 10 ms WHEN batching moves to 8 and 2 ms THEN on CPU the rendered
    document differs in ``user_config`` alone (Serve applies it through ``reconfigure``, replicas kept), while on
    Inferentia the compiled buckets follow the default rule and change the application's args (a restart)."""
    base, small = spec(), spec(max_batch_size=8, batch_wait_timeout_s=0.002)
    for proc, args_move in ((Processor.CPU, False), (Processor.GRAVITON, False), (Processor.INFERENTIA, True)):
        before = render_serve_config(base, proc, model_uri="s3://b/p/models/minilm/v1", artifact_uri="s3://b/p/a")
        after = render_serve_config(small, proc, model_uri="s3://b/p/models/minilm/v1", artifact_uri="s3://b/p/a")
        a0, a1 = before["applications"][0], after["applications"][0]
        assert (a0["args"] != a1["args"]) is args_move, proc
        d0, d1 = deployment(before), deployment(after)
        assert d1["user_config"]["max_batch_size"] == 8 and d1["user_config"]["batch_wait_timeout_s"] == 0.002
        if not args_move:
            assert {k: v for k, v in d0.items() if k != "user_config"} == \
                {k: v for k, v in d1.items() if k != "user_config"}, proc
        parse_user_config(d1["user_config"], batch_buckets=tuple(a1["args"]["batch_buckets"]))
