"""The GCS token sync (eks_inference/serving/gcs_token.py) against a Kubernetes API over HTTPS on 127.0.0.1 and
Secrets Manager in the session's moto server.

The API server here implements the calls the sync makes as kube-apiserver answers them: a bearer token or 401; the
chart's own Role (k8s/gcs_token_chart.py) decides every call or 403 (RBAC matches ``resourceNames`` against the name
in the URL, kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go, ``RuleAllows``); 404 for a missing object; 409
``AlreadyExists`` for a create of an existing name and 409 ``Conflict`` for an update with a stale
``resourceVersion`` (kubernetes staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go, ``Create`` and
``Update``; secrets do not allow create-on-update, so an update of a missing Secret is a 404).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import cdk8s
import pytest

from eks_inference.k8s.gcs_token_chart import GcsTokenChart, GcsTokenSync
from eks_inference.k8s.ray_service import GCS_STORE_SECRET, GCS_STORE_SECRET_KEY
from eks_inference.k8s.serving_chart import NAMESPACE
from eks_inference.serving import gcs_token
from eks_inference.serving.gcs_token import KubeApi, SyncError, put_secret
from tests.ray_gcs import make_certificates, tool_missing

pytestmark = pytest.mark.integration

BEARER = "sa-token-of-gcs-token-sync"
TOKEN = "Redis0auth0token0never0printed0AbCdEf0123456789"
REGION = "us-west-2"


def _role_rules() -> list[dict[str, Any]]:
    chart = GcsTokenChart(cdk8s.App(), "t", api_server_cidrs=["10.0.0.0/16"], sync=GcsTokenSync(
        secret_arn="arn:aws:secretsmanager:us-west-2:111122223333:secret:x", image="img", region=REGION))
    (role,) = [m for m in chart.to_json() if m["kind"] == "Role"]
    return list(role["rules"])


class FakeApiServer(ThreadingHTTPServer):
    def __init__(self, rules: list[dict[str, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rules = rules
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.calls: list[tuple[str, str, int]] = []
        self.race_before_put = 0
        """Updates by someone else just before each of the next N PUTs (their resourceVersion goes stale)."""
        self.lock = threading.Lock()

    def allows(self, verb: str, name: str) -> bool:
        return any(verb in r["verbs"] and "secrets" in r["resources"]
                   and (not r.get("resourceNames") or name in r["resourceNames"]) for r in self.rules)

    def bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj


class _Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self.server.calls.append((self.command, self.path, code))

    def _status(self, code: int, reason: str, message: str) -> None:
        self._answer(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
                            "message": message, "code": code})

    def _route(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {BEARER}":
            return self._status(401, "Unauthorized", "Unauthorized")
        parts = self.path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) not in (5, 6) or parts[4] != "secrets":
            return self._status(404, "NotFound", "the server could not find the requested resource")
        ns, name = parts[3], parts[5] if len(parts) == 6 else ""
        verb = {("GET", True): "get", ("PUT", True): "update", ("POST", False): "create"}.get(
            (self.command, bool(name)))
        if verb is None:
            return self._status(405, "MethodNotAllowed", f"{self.command} {self.path}")
        if not self.server.allows(verb, name):
            return self._status(403, "Forbidden", f'secrets "{name}" is forbidden: cannot {verb}')
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        s = self.server
        with s.lock:
            if verb == "get":
                if (ns, name) not in s.secrets:
                    return self._status(404, "NotFound", f'secrets "{name}" not found')
                return self._answer(200, s.secrets[(ns, name)])
            if verb == "create":
                key = (ns, body["metadata"]["name"])
                if key in s.secrets:
                    return self._status(409, "AlreadyExists", f'secrets "{key[1]}" already exists')
                s.secrets[key] = s.bump(body)
                return self._answer(201, s.secrets[key])
            if (ns, name) not in s.secrets:
                return self._status(404, "NotFound", f'secrets "{name}" not found')
            current = s.secrets[(ns, name)]
            if s.race_before_put:
                s.race_before_put -= 1
                s.bump(current)
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "the object has been modified; please apply your changes to "
                                                     "the latest version and try again")
            s.secrets[(ns, name)] = s.bump(body)
            return self._answer(200, s.secrets[(ns, name)])

    do_GET = do_POST = do_PUT = _route


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[FakeApiServer, KubeApi]]:
    if (why := tool_missing()) and "openssl" in why:
        pytest.skip(why)
    ca, cert, key = make_certificates(tmp_path)
    server = FakeApiServer(_role_rules())
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, KubeApi(server=f"https://127.0.0.1:{server.server_address[1]}", token=BEARER, ca_file=str(ca))
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secret_arn(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A Secrets Manager secret with :data:`TOKEN` in the session's moto server; boto3 in the sync finds it by the
    standard endpoint variable."""
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
                 "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_s3_endpoint,
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    sm = boto3.client("secretsmanager")
    name = f"gcs-token-{threading.get_ident()}-{id(monkeypatch)}"
    return str(sm.create_secret(Name=name, SecretString=TOKEN)["ARN"])


def _run(api: KubeApi, secret_arn: str) -> int:
    return gcs_token.main(["--secret-id", secret_arn, "--namespace", NAMESPACE, "--name", GCS_STORE_SECRET,
                           "--key", GCS_STORE_SECRET_KEY, "--label", "eks-inference/role=gcs-token-sync"], api=api)


def _stored(server: FakeApiServer) -> dict[str, Any]:
    return server.secrets[(NAMESPACE, GCS_STORE_SECRET)]


def test_first_run_creates_the_secret_the_heads_read_then_leaves_it_alone(api_server, secret_arn, capsys) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    # GIVEN no Secret WHEN the sync runs THEN it creates it with the token under the key the RayServices reference
    assert _run(api, secret_arn) == 0
    secret = _stored(server)
    assert base64.b64decode(secret["data"][GCS_STORE_SECRET_KEY]).decode() == TOKEN
    assert secret["metadata"]["labels"]["eks-inference/role"] == "gcs-token-sync"
    version = secret["metadata"]["resourceVersion"]
    # WHEN it runs again (a re-run Job) THEN nothing is written
    assert _run(api, secret_arn) == 0
    assert _stored(server)["metadata"]["resourceVersion"] == version
    assert [c[0] for c in server.calls] == ["GET", "POST", "GET"]
    out = capsys.readouterr()
    assert "created" in out.out and "unchanged" in out.out
    assert TOKEN not in out.out + out.err


def test_a_rotated_token_replaces_the_old_one_keeping_the_objects_metadata(api_server, secret_arn, capsys) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    # GIVEN a Secret made by hand (old token, an annotation of its own) WHEN the sync runs THEN the token is replaced
    server.secrets[(NAMESPACE, GCS_STORE_SECRET)] = server.bump({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": GCS_STORE_SECRET, "namespace": NAMESPACE, "annotations": {"note": "by hand"}},
        "data": {GCS_STORE_SECRET_KEY: base64.b64encode(b"old-token").decode(), "extra": "eA=="}})
    assert _run(api, secret_arn) == 0
    secret = _stored(server)
    assert secret["data"] == {GCS_STORE_SECRET_KEY: base64.b64encode(TOKEN.encode()).decode()}
    assert secret["metadata"]["annotations"] == {"note": "by hand"}
    out = capsys.readouterr()
    assert "updated" in out.out and TOKEN not in out.out + out.err


def test_a_write_that_loses_a_race_is_read_again_and_retried(api_server) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    put_secret(api, NAMESPACE, GCS_STORE_SECRET, {GCS_STORE_SECRET_KEY: "first"})
    # GIVEN another writer updating the Secret just before our next two PUTs WHEN we write THEN 409s, then success
    server.race_before_put = 2
    assert put_secret(api, NAMESPACE, GCS_STORE_SECRET, {GCS_STORE_SECRET_KEY: "second"}) == "updated"
    assert [c[2] for c in server.calls if c[0] == "PUT"] == [409, 409, 200]
    assert base64.b64decode(_stored(server)["data"][GCS_STORE_SECRET_KEY]) == b"second"
    # GIVEN a writer that never stops THEN the sync gives up with a message, after a bounded number of attempts
    server.race_before_put = 100
    with pytest.raises(SyncError, match="still conflicting after 5 attempts"):
        put_secret(api, NAMESPACE, GCS_STORE_SECRET, {GCS_STORE_SECRET_KEY: "third"})


def test_the_role_allows_only_the_heads_secret(api_server) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    server.secrets[(NAMESPACE, "other")] = server.bump({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "other", "namespace": NAMESPACE}, "data": {"k": "dg=="}})
    # GIVEN the chart's Role WHEN the sync is pointed at another existing Secret THEN the API server refuses the read
    with pytest.raises(SyncError, match="read Secret eks-inference/other: HTTP 403 Forbidden"):
        put_secret(api, NAMESPACE, "other", {"k": "w"})
    assert server.secrets[(NAMESPACE, "other")]["data"] == {"k": "dg=="}


def test_a_wrong_bearer_token_is_refused_and_said_so(api_server, secret_arn, capsys) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    bad = KubeApi(server=api.server, token="not-ours", ca_file=api.ca_file)
    assert _run(bad, secret_arn) == 1
    err = capsys.readouterr().err
    assert "HTTP 401 Unauthorized" in err and TOKEN not in err
    assert not server.secrets


def test_in_cluster_config_reads_the_mounted_token_and_ca(api_server, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    server, api = api_server
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(BEARER + "\n")
    (sa / "ca.crt").write_text(Path(api.ca_file).read_text())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.server_address[1]))
    assert put_secret(KubeApi.in_cluster(sa), NAMESPACE, GCS_STORE_SECRET, {GCS_STORE_SECRET_KEY: "x"}) == "created"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(SyncError, match="not in a pod"):
        KubeApi.in_cluster(sa)
