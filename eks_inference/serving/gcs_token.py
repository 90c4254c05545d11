"""Copy the GCS store's auth token from Secrets Manager into the Kubernetes Secret the Ray heads read.

KubeRay hands the token to each head through ``gcsFaultToleranceOptions.redisPassword`` (a ``secretKeyRef``); the
token itself lives in Secrets Manager and must never be in a CloudFormation template. This module runs in a Job of
the serving image (``python -m eks_inference.serving.gcs_token``, rendered by
:mod:`eks_inference.k8s.gcs_token_chart`) on every deploy that changes it, under a Pod Identity role that may read
that one secret, and a Kubernetes Role that may touch that one Secret.

It talks to the API server with the pod's service-account token over HTTPS, with the standard library only, and is
idempotent: create when missing, replace when different, leave alone when equal. It never prints the token.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ATTEMPTS = 5
"""Writes that lose a race (409 from a concurrent create or a stale ``resourceVersion``) are retried this often."""


class SyncError(RuntimeError):
    """The Secret could not be written; the message says what the API server answered (never the token)."""


@dataclass(frozen=True)
class KubeApi:
    """The few calls of the Kubernetes core API this needs, as the pod's service account.

    :param server: ``https://host:port``.
    :param token: the bearer token.
    :param ca_file: the CA bundle that signed the API server's certificate.
    """

    server: str
    token: str
    ca_file: str

    @classmethod
    def in_cluster(cls, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeApi:
        """Where every pod finds the API server: ``KUBERNETES_SERVICE_HOST``/``_PORT`` and the mounted token and CA
        (kubernetes client-go rest/config.go, ``InClusterConfig``)."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise SyncError("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
        host = f"[{host}]" if ":" in host else host
        return cls(server=f"https://{host}:{port}", token=(sa_dir / "token").read_text().strip(),
                   ca_file=str(sa_dir / "ca.crt"))

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {})})
        ctx = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"message": raw.decode(errors="replace")[:200]}
            return e.code, status


def _secret(namespace: str, name: str, data: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _refused(what: str, status: int, answer: Mapping[str, Any]) -> SyncError:
    return SyncError(f"{what}: HTTP {status} {answer.get('reason', '')}: {answer.get('message', '')}".rstrip(": "))


def put_secret(api: KubeApi, namespace: str, name: str, data: Mapping[str, str],
               labels: Mapping[str, str] | None = None) -> str:
    """Make the Secret ``namespace/name`` hold exactly ``data`` (string values); ``created``, ``updated`` or
    ``unchanged``.

    The API server answers a create of an existing name with 409 ``AlreadyExists`` and an update whose
    ``resourceVersion`` is no longer current with 409 ``Conflict`` (kubernetes staging/src/k8s.io/apiserver
    pkg/registry/generic/registry/store.go, ``Create`` and ``Update``); either means someone wrote in between, so
    this reads again and retries. An update keeps the object's other metadata (labels, annotations) as it found it.
    """
    path = f"/api/v1/namespaces/{namespace}/secrets"
    wanted = _secret(namespace, name, data, labels or {})
    for _ in range(ATTEMPTS):
        status, current = api.call("GET", f"{path}/{name}")
        if status == 404:
            status, answer = api.call("POST", path, wanted)
            if status == 409:
                continue
            if status != 201:
                raise _refused(f"create Secret {namespace}/{name}", status, answer)
            return "created"
        if status != 200:
            raise _refused(f"read Secret {namespace}/{name}", status, current)
        if current.get("data") == wanted["data"] and current.get("type", "Opaque") == "Opaque":
            return "unchanged"
        meta = current["metadata"]
        replacement = {**wanted, "metadata": {**meta, "labels": {**meta.get("labels", {}), **(labels or {})}}}
        status, answer = api.call("PUT", f"{path}/{name}", replacement)
        if status == 409:
            continue
        if status != 200:
            raise _refused(f"update Secret {namespace}/{name}", status, answer)
        return "updated"
    raise SyncError(f"Secret {namespace}/{name}: still conflicting after {ATTEMPTS} attempts; another writer keeps "
                    "changing it")


def read_token(secret_id: str) -> str:
    """The secret's current string value (``AWSCURRENT``), with boto3's own region and endpoint settings."""
    import boto3  # the serving images carry it; the chart imports this module's names without calling AWS

    client = boto3.client("secretsmanager")
    value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    if not value:
        raise SyncError(f"secret {secret_id}: no SecretString (a binary secret cannot be a Redis auth token)")
    return str(value)


def main(argv: Sequence[str] | None = None, *, api: KubeApi | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eks_inference.serving.gcs_token", description=__doc__)
    parser.add_argument("--secret-id", required=True, help="Secrets Manager secret (ARN) holding the auth token")
    parser.add_argument("--namespace", required=True, help="namespace of the Kubernetes Secret")
    parser.add_argument("--name", required=True, help="name of the Kubernetes Secret")
    parser.add_argument("--key", required=True, help="key of the token in the Kubernetes Secret")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label for the Secret")
    args = parser.parse_args(argv)
    labels = dict(label.split("=", 1) for label in args.label)
    try:
        token = read_token(args.secret_id)
        outcome = put_secret(api or KubeApi.in_cluster(), args.namespace, args.name, {args.key: token}, labels)
    except SyncError as e:
        print(f"gcs-token-sync: {e}", file=sys.stderr)
        return 1
    print(f"gcs-token-sync: Secret {args.namespace}/{args.name} ({args.key}) {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
