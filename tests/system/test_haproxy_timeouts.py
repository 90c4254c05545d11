"""HAProxy's timeouts as Ray 2.60 writes them, from the environment the serving chart gives the Ray containers.

Ray Serve's HAProxy ingress writes ``haproxy.cfg`` from a Jinja template (``ray/serve/_private/haproxy_templates.py``,
``defaults`` section) filled from an ``HAProxyConfig`` whose defaults Ray reads from environment variables at import
(``ray/serve/_private/constants.py``). Here a fresh Python process gets exactly a rendered Ray container's plain
environment, builds the ``HAProxyConfig`` as ``HAProxyManager`` does (no timeout arguments,
``ray/serve/_private/haproxy.py``) and renders the file with Ray's own code. The client and server timeouts the chart
sets must be in it; ``timeout http-request`` cannot be, because Ray 2.60 has no variable for it: the field exists
(``HAProxyConfig.timeout_http_request_s``) but defaults to None and nothing assigns it. A Ray release that adds one
fails the last test, which says to set it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import RAY_VERSION
from eks_inference.serving.serve_config import HAPROXY_CLIENT_TIMEOUT_S, HAPROXY_SERVER_TIMEOUT_S, RAY_CLUSTER_ENV
from tests.conftest import ROOT
from tests.unit.k8s_support import config, render

RENDER = """
import json, sys, tempfile
from ray.serve._private.haproxy import HAProxyApi, HAProxyConfig
d = tempfile.mkdtemp()
cfg = HAProxyConfig(socket_path=f"{d}/admin.sock", server_state_base=d, server_state_file=f"{d}/state",
                    metrics_socket_path=f"{d}/metrics.sock")
api = HAProxyApi(cfg=cfg, config_file_path=f"{d}/haproxy.cfg")
api._generate_config_file_internal()
print(json.dumps({"cfg": open(f"{d}/haproxy.cfg").read(), "http_request": cfg.timeout_http_request_s}))
"""


def ray_container_envs() -> dict[str, dict[str, str]]:
    """Each RayService's head and worker Ray container, by name: its plain (non-secret) environment."""
    _, serving, _ = render(config("prod"))
    envs = {}
    for rs in (d for d in serving if d["kind"] == "RayService"):
        cluster = rs["spec"]["rayClusterConfig"]
        pods = {"head": cluster["headGroupSpec"]["template"],
                **{g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}}
        for group, template in pods.items():
            (ray,) = [c for c in template["spec"]["containers"] if c["name"] == "ray"]
            envs[f"{rs['metadata']['name']}/{group}"] = {e["name"]: e["value"] for e in ray.get("env", [])
                                                          if "value" in e}
    assert envs
    return envs


def haproxy_as_ray_writes_it(env: dict[str, str], home: Path) -> dict[str, Any]:
    home.mkdir(parents=True, exist_ok=True)
    ray_env = {k: v for k, v in env.items() if k.startswith("RAY_")}
    proc = subprocess.run([sys.executable, "-c", RENDER], cwd=home, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(home), **ray_env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def defaults_section(cfg: str) -> list[str]:
    section = cfg.split("\ndefaults\n", 1)[1]
    return [ln.strip() for ln in re.split(r"\n(?=\S)", section, maxsplit=1)[0].splitlines() if ln.strip()]


def test_every_ray_container_carries_the_haproxy_timeouts() -> None:
    for name, env in ray_container_envs().items():
        assert {k: env.get(k) for k in RAY_CLUSTER_ENV} == RAY_CLUSTER_ENV, name


def test_ray_writes_the_client_and_server_timeouts_and_no_http_request_timeout(tmp_path: Path) -> None:
    """GIVEN a rendered worker container's environment WHEN Ray 2.60's own code writes haproxy.cfg THEN its
    defaults say ``timeout client 30s`` and ``timeout server 75s``, and no ``timeout http-request`` appears anywhere:
    HAProxy then applies the client timeout between the chunks of a request, so a client must send every 30 s."""
    import ray

    assert ray.__version__ == RAY_VERSION
    (name, env), *_ = ((n, e) for n, e in ray_container_envs().items() if not n.endswith("/head"))
    written = haproxy_as_ray_writes_it(env, tmp_path / "home")
    defaults = defaults_section(written["cfg"])
    assert f"timeout client {HAPROXY_CLIENT_TIMEOUT_S}s" in defaults, (name, defaults)
    assert f"timeout server {HAPROXY_SERVER_TIMEOUT_S}s" in defaults, (name, defaults)
    assert "timeout http-request" not in written["cfg"] and written["http_request"] is None


def test_ray_offers_no_setting_for_the_http_request_timeout() -> None:
    """Ray 2.60: no environment variable of Serve's constants concerns HAProxy's request timeout, and nothing in
    haproxy.py assigns ``timeout_http_request_s`` (the dataclass fields default to None). When a Ray release adds
    one, set it in ``RAY_CLUSTER_ENV`` (eks_inference/serving/serve_config.py) to ``body_timeout_s`` and extend the
    test above; docs/security.md (Timeouts) says where this stands."""
    import ray.serve._private.constants as constants
    import ray.serve._private.haproxy as haproxy

    names = re.findall(r'"(RAY_SERVE_HAPROXY_[A-Z0-9_]+)"', Path(constants.__file__).read_text())
    assert names and not [n for n in names if "HTTP_REQUEST" in n or "REQUEST_TIMEOUT" in n], names
    source = Path(haproxy.__file__).read_text()
    assigned = re.findall(r"timeout_http_request_s\s*(?::[^=\n]*)?=\s*([^\n]+)", source)
    assert assigned == ["None", "None"], assigned  # BackendConfig's and HAProxyConfig's field defaults


@pytest.mark.parametrize("path", ["ray/serve/_private/haproxy.py", "ray/serve/_private/haproxy_templates.py"])
def test_the_cited_lines_are_the_ones_docs_quote(path: str) -> None:
    """docs/security.md cites Ray 2.60.0's lines by number; they must still say what the docs say they do."""
    import ray

    lines = (Path(ray.__file__).parent.parent / path).read_text().splitlines()
    cited = {"ray/serve/_private/haproxy.py": (652, "timeout_http_request_s: Optional[int] = None"),
             "ray/serve/_private/haproxy_templates.py": (102, "timeout http-request")}[path]
    assert cited[1] in lines[cited[0] - 1]
    assert f"`{path}` line {cited[0]}" in (ROOT / "docs" / "security.md").read_text()
