"""The route index: a tiny application at route prefix ``/`` that answers every path no model owns, in JSON.

Ray Serve routes a request to the application with the longest matching route prefix; a path outside every
prefix is answered by Serve's ingress itself (HAProxy's or the Python proxy's default backend) with a
plain-text 404, which clients that parse JSON errors choke on. With this application mounted at ``/``
(longest-prefix routing sends it only what no model matches) ``GET /`` lists the models and their
endpoints, and any other unknown path gets the API's JSON error. It needs no CPU reservation
(``num_cpus: 0``) and no model; :func:`~eks_inference.serving.serve_config.render_serve_config` renders it
next to the model application, so RayServices and ``eks-inference local`` both carry it. Ray's own
``/-/healthz`` and ``/-/routes`` are answered by the ingress before any application and are unaffected.

No ``from __future__ import annotations`` here: Serve re-wraps class routes, and FastAPI could then not
resolve string annotations such as ``Request`` in the wrapper's module.
"""

import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from eks_inference.serving.serve_config import INDEX_DEPLOYMENT_NAME

index_api = FastAPI(title="eks-inference route index", docs_url=None, redoc_url=None, openapi_url=None)


def _json(data: Any, status: int) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


def model_links(models: Sequence[str]) -> list[dict[str, str]]:
    return [{"name": m, "predict": f"/{m}/predict", "health": f"/{m}/healthz", "info": f"/{m}/info",
             "docs": f"/{m}/docs", "openapi": f"/{m}/openapi.json"} for m in models]


def index_answer(method: str, path: str, models: Sequence[str]) -> tuple[int, dict[str, Any]]:
    """(status, body) for a request that reached the index: the model list for ``GET /``, else a JSON error."""
    links = model_links(models)
    if path in ("", "/"):
        if method in ("GET", "HEAD"):
            return 200, {"service": "eks-inference", "models": links}
        return 405, {"error": {"code": "method_not_allowed",
                               "message": f"no route {method} /; GET / lists the models"}, "models": links}
    served = ", ".join(f"/{m}" for m in models) or "none yet"
    return 404, {"error": {"code": "not_found",
                           "message": f"no model is served at {path}; models here: {served} "
                                      "(POST /{model}/predict, docs at /{model}/docs)"},
                 "models": links}


@serve.deployment(name=INDEX_DEPLOYMENT_NAME)
@serve.ingress(index_api)
class RouteIndex:
    def __init__(self, models: Sequence[str] = ()) -> None:
        self.models = sorted(str(m) for m in models)

    @index_api.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def any_path(self, request: Request, path: str) -> Response:
        status, body = index_answer(request.method, "/" + path, self.models)
        return _json(body, status)


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path: eks_inference.serving.index:build_app``)."""
    models = (args.get("models") or []) if isinstance(args, dict) else []
    deployment: Any = RouteIndex
    return deployment.bind([str(m) for m in models])
