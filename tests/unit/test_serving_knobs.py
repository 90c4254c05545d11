"""The processors' own knobs as serving config: Graviton's PyTorch settings (``serving.cpu_tuning``: oneDNN's bf16
fpmath, transparent huge pages, ``torch.compile``) and Inferentia's compiler auto-cast, NeuronCores per replica and
compiled buckets. Validated one line per mistake, rendered into the RayService (checked against KubeRay v1.7.0's CRD),
carried to the compile step's artifact request, and applied in the replica (torch.compile through the backend)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from eks_inference.artifacts.resolve import ArtifactRequest, resolve_model, sdk_versions
from eks_inference.config import AutoCast, ConfigError, CpuTuning, DType, Processor, Task, parse_model
from eks_inference.serving.serve_config import parse_app_args, render_serve_config
from tests.unit.k8s_support import config, crd_errors, crd_validator, render

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog"]


def model(**serving: Any) -> Any:
    return parse_model({"name": "m", "task": "embedding", "processors": ["graviton", "inferentia"],
                        "serving": serving})


def dev_with(**serving: Any) -> Any:
    from eks_inference.config import ENVIRONMENTS_KEY
    from tests.conftest import cdk_context

    models = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY]["dev"]["models"])
    models[0]["serving"].update(serving)
    return config("dev", models=models)


def test_the_knobs_parse_with_their_defaults() -> None:
    # GIVEN a model without knobs and one with all of them
    plain = model()
    tuned = model(cpu_tuning={"fpmath": "bf16", "thp": True, "torch_compile": True}, auto_cast="matmult",
                  neuron_cores_per_replica=2, batch_buckets=[1, 8, 32])
    # THEN the defaults change nothing, and the set ones are typed
    assert plain.serving.cpu_tuning == CpuTuning() and plain.serving.cpu_tuning.env() == {}
    assert plain.serving.auto_cast is None
    assert tuned.serving.cpu_tuning.env() == {"DNNL_DEFAULT_FPMATH_MODE": "BF16", "THP_MEM_ALLOC_ENABLE": "1"}
    assert tuned.serving.auto_cast is AutoCast.MATMULT


def test_each_mistake_in_the_knobs_is_one_line() -> None:
    with pytest.raises(ConfigError) as e:
        model(cpu_tuning={"fpmath": "fp16", "thp": "yes", "torch_compile": 1, "lru": 9}, auto_cast="half")
    lines = e.value.errors
    assert len(lines) == 5, lines
    assert "model 'm' serving.auto_cast: 'half' is not allowed; use one of none, matmult, all" in lines
    assert "model 'm' serving.cpu_tuning: 'lru' is not a known field; use one of fpmath, thp, torch_compile" in lines
    assert "model 'm' serving.cpu_tuning.fpmath: 'fp16' is not allowed; use one of default, bf16" in lines
    assert any(x.startswith("model 'm' serving.cpu_tuning.thp: 'yes' is not true or false") for x in lines)
    assert any(x.startswith("model 'm' serving.cpu_tuning.torch_compile: 1 is not true or false") for x in lines)
    with pytest.raises(ConfigError, match=r"serving.cpu_tuning: 'bf16' is not a mapping; write it as a JSON object"):
        model(cpu_tuning="bf16")
    with pytest.raises(ConfigError, match=r"neuron_cores_per_replica: 0 is not a positive integer"):
        model(neuron_cores_per_replica=0)


def test_graviton_replicas_get_the_env_and_compile_flag_inferentia_the_auto_cast() -> None:
    m = model(cpu_tuning={"fpmath": "bf16", "thp": True, "torch_compile": True}, auto_cast="all",
              neuron_cores_per_replica=2)
    grav = render_serve_config(m, Processor.GRAVITON, model_uri="bundled:x")["applications"][0]
    inf = render_serve_config(m, Processor.INFERENTIA, model_uri="bundled:x")["applications"][0]
    # the env reaches the replica's process (read as oneDNN and PyTorch load), the flag its args
    assert grav["deployments"][0]["ray_actor_options"]["runtime_env"] == {
        "env_vars": {"DNNL_DEFAULT_FPMATH_MODE": "BF16", "THP_MEM_ALLOC_ENABLE": "1"}}
    assert parse_app_args(grav["args"]).torch_compile is True and "auto_cast" not in grav["args"]
    # Inferentia replicas run the model on NeuronCores: no CPU settings, the compiler's auto-cast instead
    assert "runtime_env" not in inf["deployments"][0]["ray_actor_options"]
    assert inf["deployments"][0]["ray_actor_options"]["resources"] == {"neuron_cores": 2}
    assert parse_app_args(inf["args"]).auto_cast == "all" and "torch_compile" not in inf["args"]
    # without knobs the rendered document is what it always was
    plain = render_serve_config(model(), Processor.GRAVITON, model_uri="bundled:x")["applications"][0]
    assert "runtime_env" not in plain["deployments"][0]["ray_actor_options"]
    assert not {"torch_compile", "auto_cast"} & set(plain["args"])


def test_the_ray_service_renders_the_knobs_within_kuberays_schema() -> None:
    # GIVEN dev with every knob set
    cfg = dev_with(cpu_tuning={"fpmath": "bf16", "thp": True, "torch_compile": True}, auto_cast="matmult")
    targets, manifests, _ = render(cfg)
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "RayService"}
    validator = crd_validator("ray.io_rayservices.yaml")
    if validator is None:
        pytest.skip("KubeRay CRDs absent")
    grav, inf = services["minilm-graviton"], services["minilm-inferentia"]
    assert crd_errors(validator, grav) == [] and crd_errors(validator, inf) == []
    g = yaml.safe_load(grav["spec"]["serveConfigV2"])["applications"][0]
    i = yaml.safe_load(inf["spec"]["serveConfigV2"])["applications"][0]
    assert g["deployments"][0]["ray_actor_options"]["runtime_env"]["env_vars"]["DNNL_DEFAULT_FPMATH_MODE"] == "BF16"
    assert g["args"]["torch_compile"] is True
    assert i["args"]["auto_cast"] == "matmult"
    # the compile Job of the inferentia target carries the same args, so it writes the artifact replicas ask for
    import cdk8s

    from eks_inference.k8s.compile_chart import CompileChart

    chart = CompileChart(cdk8s.App(), "compile", targets=targets, region="us-west-2")
    job = next(j for j in chart.jobs if "inferentia" in j["metadata"]["labels"].get("eks-inference/compile-target",
                                                                                      ""))
    container = job["spec"]["template"]["spec"]["containers"][0]
    app = json.loads(container["args"][container["args"].index("--serve-app") + 1])
    assert app["args"]["auto_cast"] == "matmult"


def test_auto_cast_is_part_of_the_artifacts_identity_and_the_compiler_flags() -> None:
    from eks_inference.compile.trace import neuron_cast_args

    base = ArtifactRequest(model="m", revision="v1", task="embedding", processor="inferentia", backend="neuron",
                           dtype="bf16", batch_buckets=(1, 8), seq_buckets=(128,), versions={"neuronx-cc": "2"})
    cast = ArtifactRequest(**{**base.__dict__, "auto_cast": "matmult"})
    # a new auto-cast is another artifact (a recompile), and no auto-cast keeps the keys published before
    assert base.key("d" * 64) != cast.key("d" * 64)
    assert base.key("d" * 64) == ArtifactRequest(**{**base.__dict__, "auto_cast": None}).key("d" * 64)
    assert neuron_cast_args(DType.FP32, None) == ["--auto-cast", "none"]
    assert neuron_cast_args(DType.BF16, None) == ["--auto-cast", "all", "--auto-cast-type", "bf16"]
    assert neuron_cast_args(DType.FP32, "matmult") == ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
    assert neuron_cast_args(DType.FP16, "matmult") == ["--auto-cast", "matmult", "--auto-cast-type", "fp16"]


def test_what_each_knob_does_to_a_running_ray_service() -> None:
    from eks_inference.ops.tune import cluster_effect

    m = dev_with().models[0]
    effect, why = cluster_effect(m, Processor.GRAVITON, {"cpu_tuning": {"fpmath": "bf16", "thp": True,
                                                                        "torch_compile": False}})
    assert effect == "serve restart" and "ray_actor_options" in why
    effect, why = cluster_effect(m, Processor.GRAVITON, {"cpu_tuning": {"fpmath": "default", "thp": False,
                                                                        "torch_compile": True}})
    assert effect == "serve restart" and "args" in why
    assert cluster_effect(m, Processor.INFERENTIA, {"auto_cast": "matmult"})[0] == "serve restart"
    assert cluster_effect(m, Processor.INFERENTIA, {"neuron_cores_per_replica": 2})[0] == "needs a deploy"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from eks_inference.compile.synthetic import write_synthetic_model

    return write_synthetic_model(tmp_path_factory.mktemp("m"), task=Task.EMBEDDING, words=WORDS)


def test_torch_compile_serves_what_the_artifact_serves(tiny: Path, tmp_path: Path) -> None:
    """Unit level, through the backend the replica builds: inductor's compile of MiniLM takes minutes on 2 cores,
    a synthetic BERT seconds."""
    from eks_inference.compile.trace import compile_artifact
    from eks_inference.runtime.backends import compile_cpu_backend, load_backend
    from eks_inference.runtime.engine import Engine

    req = ArtifactRequest(model="tiny", revision="r1", task="embedding", processor="graviton", backend="cpu",
                          dtype="fp32", batch_buckets=(1, 2, 4), seq_buckets=(16, 32), versions=sdk_versions("cpu"))
    weights = resolve_model(str(tiny), cache_dir=tmp_path)
    out = tmp_path / "art"
    manifest = compile_artifact(model_dir=tiny, out_dir=out, writer="w", request=req, weights_digest=weights.digest,
                                cache_key=req.key(weights.digest))
    texts = ["the quick brown fox", "over the lazy dog jumps", "fox"]

    def embed(backend: Any) -> np.ndarray:
        engine = Engine(model_dir=tiny, task=Task.EMBEDDING, backend=backend, batch_buckets=(1, 2, 4),
                        seq_buckets=(16, 32), max_seq_length=32, max_batch_size=4)
        engine.warmup()
        outputs, _ = engine.run(texts)
        return np.array([np.asarray(o, dtype=np.float64).ravel() for o in outputs])

    scripted = load_backend(out, manifest)
    compiled = compile_cpu_backend(load_backend(out, manifest), tiny, Task.EMBEDDING)
    assert compiled.compiled and not scripted.compiled
    a, b = embed(scripted), embed(compiled)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.9999, cos
    with pytest.raises(ValueError, match="cpu backends only"):
        compile_cpu_backend(type("B", (), {"name": "neuron"})(), tiny, Task.EMBEDDING)  # type: ignore[arg-type]
