"""Run inside a process whose environment is a Ray container's: what Ray 2.60 itself makes of its auth settings.

``python -m tests.system.ray_auth_probe`` prints one JSON document. Ray reads ``RAY_AUTH_MODE`` and the token into
process-wide C++ state once, so each environment needs a process of its own.

- ``start``: ``ok``, or the error ``ray start`` would stop with (its token check, ray/scripts/scripts.py).
- ``mode``, ``has_token``, ``accepts``: Ray's own configuration (``ray._raylet``: the authentication mode, the token
  loader, and the check every gRPC server and HTTP middleware applies to a ``Bearer`` value).
- ``head`` / ``agent``: status codes from Ray's own HTTP middleware (``get_token_auth_middleware``) with the public
  paths Ray gives it: the dashboard head's set read from ray/dashboard/http_server_head.py (a local variable there),
  the agent's ``PUBLIC_EXACT_PATHS`` (ray/dashboard/http_server_agent.py).
- ``metrics``: the status of an unauthenticated scrape of Ray's Prometheus exporter
  (ray/_private/prometheus_exporter.py, what the dashboard agent serves on ``--metrics-export-port``).
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TOKEN_HEADER = "x-ray-authorization"
"""The header KubeRay's dashboard client sends (ray-operator/controllers/ray/utils/dashboardclient)."""
PROBES = {
    "head": [("PUT", "/api/serve/applications/"), ("POST", "/api/jobs/"), ("GET", "/api/gcs_healthz")],
    "agent": [("GET", "/api/healthz"), ("GET", "/api/local_raylet_healthz"), ("POST", "/api/job_agent/jobs/")],
}


def head_public_paths() -> tuple[set[str], tuple[str, ...]]:
    """The exact paths and prefixes the dashboard head leaves open, as its source assigns them."""
    import ray.dashboard.http_server_head as head

    tree = ast.parse(Path(head.__file__).read_text())
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id in ("public_exact_paths", "public_path_prefixes")):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return set(found["public_exact_paths"]), tuple(found["public_path_prefixes"])


async def statuses(exact: set[str], prefixes: tuple[str, ...], token: str) -> dict[str, dict[str, int]]:
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from ray._private.authentication.http_token_authentication import get_token_auth_middleware
    from ray.dashboard.http_server_agent import PUBLIC_EXACT_PATHS

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    middlewares = {"head": get_token_auth_middleware(aiohttp, list(exact), list(prefixes)),
                   "agent": get_token_auth_middleware(aiohttp, list(PUBLIC_EXACT_PATHS))}
    out: dict[str, dict[str, int]] = {}
    for server, probes in PROBES.items():
        app = web.Application(middlewares=[middlewares[server]])
        for method, path in probes:
            app.router.add_route(method, path, ok)
        async with TestClient(TestServer(app)) as client:
            for method, path in probes:
                for who, headers in (("none", {}), ("kuberay", {TOKEN_HEADER: f"Bearer {token}"}),
                                     ("wrong", {TOKEN_HEADER: "Bearer not-the-token"})):
                    resp = await client.request(method, path, headers=headers)
                    out.setdefault(server, {})[f"{method} {path} {who}"] = resp.status
    return out


def metrics_status() -> int:
    from ray._private.prometheus_exporter import Options, new_stats_exporter

    exporter = new_stats_exporter(Options(namespace="ray", port=0, address="127.0.0.1"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def main() -> None:
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._raylet import (
        AuthenticationMode,
        AuthenticationTokenLoader,
        Config,
        get_authentication_mode,
        validate_authentication_token,
    )

    Config.initialize("")
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    exact, prefixes = head_public_paths()
    try:  # what `ray start` checks before it starts a node (ray/scripts/scripts.py)
        ensure_token_if_auth_enabled(None, create_token_if_missing=False)
        start = "ok"
    except Exception as e:
        start = f"{type(e).__name__}: {e}"
    print(json.dumps({
        "start": start,
        "mode": "token" if get_authentication_mode() == AuthenticationMode.TOKEN else "disabled",
        "has_token": bool(AuthenticationTokenLoader.instance().has_token()),
        "accepts": {"kuberay": validate_authentication_token(f"Bearer {token}"),
                    "wrong": validate_authentication_token("Bearer not-the-token")},
        **asyncio.run(statuses(exact, prefixes, token)),
        "metrics": metrics_status(),
    }))


if __name__ == "__main__":
    main()
