"""scripts/pin_base_images.py against a real HTTP registry on 127.0.0.1 that speaks the part of the OCI distribution
protocol the script uses: a manifest by tag or digest (HEAD and GET, content negotiated by ``Accept``), behind
Docker's token authentication (a ``401`` whose ``WWW-Authenticate`` names the token service, an anonymous token,
``Authorization: Bearer``). public.ecr.aws and Docker Hub answer this way (OCI distribution spec, "Pulling
manifests"; Docker's "Token Authentication Specification"); nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import pytest

from eks_inference.config import NEURON_BASE_TAG, PINNED_IMAGE_RE, load_environment
from tests.conftest import ROOT

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pin_base_images", ROOT / "scripts" / "pin_base_images.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


pin = _load_script()


@dataclass
class Registry:
    """What the loopback registry holds and what it was asked."""

    url: str = ""
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    send_digest_header: bool = True

    def add(self, repository: str, tag: str, media_type: str, body: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repository, tag)] = self.manifests[(repository, digest)] = (media_type, body)
        return digest

    def token(self, repository: str) -> str:
        return f"anonymous-pull-{repository}"


def _handler(registry: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve(body=True)

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def _answer(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _serve(self, body: bool) -> None:
            url = urlsplit(self.path)
            registry.calls.append((self.command, url.path + (f"?{url.query}" if url.query else ""),
                                   dict(self.headers.items())))
            if url.path == "/token":
                scope = parse_qs(url.query).get("scope", [""])[0]
                ok = parse_qs(url.query).get("service") == ["loopback-registry"] and scope.endswith(":pull")
                repository = scope.removeprefix("repository:").removesuffix(":pull")
                answer = json.dumps({"token": registry.token(repository)} if ok else {}).encode()
                self._answer(200 if ok else 400, {"Content-Type": "application/json"}, answer, body)
                return
            if not url.path.startswith("/v2/") or "/manifests/" not in url.path:
                self._answer(404, {}, b"", body)
                return
            repository, _, reference = url.path.removeprefix("/v2/").partition("/manifests/")
            if self.headers.get("Authorization") != f"Bearer {registry.token(repository)}":
                challenge = (f'Bearer realm="{registry.url}/token",service="loopback-registry",'
                             f'scope="repository:{repository}:pull"')
                self._answer(401, {"WWW-Authenticate": challenge}, b'{"errors":[{"code":"UNAUTHORIZED"}]}', body)
                return
            found = registry.manifests.get((repository, reference))
            accepted = [t.strip() for t in self.headers.get("Accept", "").split(",")]
            if found is None or found[0] not in accepted:  # a registry serves only a type the client accepts
                self._answer(404, {}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', body)
                return
            media_type, manifest = found
            headers = {"Content-Type": media_type}
            if registry.send_digest_header:
                headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(manifest).hexdigest()
            self._answer(200, headers, manifest, body)

    return Handler


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    reg.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield reg
    server.shutdown()
    server.server_close()
    thread.join(10)


def _index(*platforms: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": MANIFEST, "digest": "sha256:" + hashlib.sha256(p.encode()).hexdigest(), "size": 1,
         "platform": {"os": "linux", "architecture": p}} for p in platforms]}).encode()


def _run(registry: Registry, capsys: pytest.CaptureFixture[str], *argv: str, hosts: tuple[str, ...] = (
        "public.ecr.aws", "docker.io", "example.test")) -> tuple[int, str, str]:
    code = pin.main([*(a for h in hosts for a in ("--registry", f"{h}={registry.url}")), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


NEURON_REPOSITORY, NEURON_TAG = NEURON_BASE_TAG.removeprefix("public.ecr.aws/").split(":")


def test_resolve_follows_the_token_challenge_to_the_digest_of_the_index(
        registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN a multi-platform Neuron DLC behind an anonymous token WHEN its tag is resolved THEN the script asks
    without a token, fetches one for exactly that repository's pull scope, asks again with it, accepts the index
    types, and prints the tag with the index's digest (the one ``docker pull`` resolves on every platform)."""
    digest = registry.add(NEURON_REPOSITORY, NEURON_TAG, INDEX, _index("amd64"))
    code, out, err = _run(registry, capsys, "resolve", NEURON_BASE_TAG)
    assert (code, err) == (0, "")
    assert out.strip() == f"{NEURON_BASE_TAG}@{digest}"
    assert PINNED_IMAGE_RE.match(out.strip())
    path = f"/v2/{NEURON_REPOSITORY}/manifests/{NEURON_TAG}"
    (m1, p1, h1), (m2, p2, _), (m3, p3, h3) = registry.calls
    assert (m1, p1) == ("HEAD", path) and "Authorization" not in h1
    assert m2 == "GET" and p2.startswith("/token?") and f"repository%3A{NEURON_REPOSITORY.replace('/', '%2F')}" in p2
    assert (m3, p3, h3["Authorization"]) == ("HEAD", path, f"Bearer {registry.token(NEURON_REPOSITORY)}")
    assert {INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"} <= set(h3["Accept"].split(", "))


def test_a_docker_hub_short_name_is_the_library_repository(registry: Registry,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    digest = registry.add("library/python", "3.12.13-slim-bookworm", INDEX, _index("amd64", "arm64"))
    code, out, _ = _run(registry, capsys, "resolve", "python:3.12.13-slim-bookworm")
    assert code == 0 and out.strip() == f"python:3.12.13-slim-bookworm@{digest}"


def test_without_a_digest_header_the_manifest_itself_is_hashed(registry: Registry,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    registry.send_digest_header = False
    digest = registry.add("pytorch/pytorch", "2.13.0-cuda12.6-cudnn9-runtime", INDEX, _index("amd64"))
    code, out, _ = _run(registry, capsys, "resolve", "pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime")
    assert code == 0 and out.strip().endswith(f"@{digest}")
    assert [m for m, p, _ in registry.calls if "/manifests/" in p][-1] == "GET"


def test_an_unknown_tag_or_an_unreachable_registry_is_one_clear_line(registry: Registry,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(registry, capsys, "resolve", "example.test/team/base:9.9")
    assert (code, out) == (2, "")
    assert err.strip() == ("pin_base_images.py: example.test/team/base:9.9: the registry has no manifest for tag "
                           "'9.9' in team/base")
    code = pin.main(["--registry", "example.test=http://127.0.0.1:9", "resolve", "example.test/team/base:9.9"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot reach http://127.0.0.1:9/v2/" in err
    assert pin.main(["--registry", "example.test", "resolve", "x:1"]) == 2
    assert "is not HOST=URL" in capsys.readouterr().err


def _copy_repo(tmp_path: Path) -> Path:
    for path in [ROOT / "cdk.json", *(ROOT / "model_images").glob("*/Dockerfile")]:
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return tmp_path


def test_pin_writes_the_neuron_digest_where_synth_reads_it_and_config_then_requires_it(
        registry: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """GIVEN a copy of the project's Dockerfiles and cdk.json WHEN ``pin`` runs THEN the Neuron DLC's tag gets its
    digest in the Dockerfile's ARG default and in every environment's images.neuron_base, the environments' opt-out
    goes, every other line is untouched, and the project's own config loader accepts the result with
    require_pinned_images on."""
    root = _copy_repo(tmp_path)
    before = {p: p.read_text() for p in root.rglob("Dockerfile")}
    digest = registry.add(NEURON_REPOSITORY, NEURON_TAG, INDEX, _index("amd64"))
    code, out, err = _run(registry, capsys, "--root", str(root), "pin")
    assert (code, err) == (0, "")
    pinned = f"{NEURON_BASE_TAG}@{digest}"
    neuron = root / "model_images" / "inferentia2" / "Dockerfile"
    assert neuron.read_text() == before[neuron].replace(f"ARG NEURON_BASE={NEURON_BASE_TAG}\n",
                                                        f"ARG NEURON_BASE={pinned}\n", 1)
    assert all(p.read_text() == text for p, text in before.items() if p != neuron)
    assert "model_images/inferentia2/Dockerfile:13: " in out and f"cdk.json prod images.neuron_base: {pinned}" in out
    for env in ("dev", "prod"):
        config = load_environment(env, cdk_json=root / "cdk.json")
        assert config.images.neuron_base == pinned and config.require_pinned_images is True
    original = json.loads((ROOT / "cdk.json").read_text())
    written = json.loads((root / "cdk.json").read_text())
    for env in ("dev", "prod"):
        block = written["context"]["eks-inference:environments"][env]
        assert block.pop("images") == {"neuron_base": pinned}
        original["context"]["eks-inference:environments"][env].pop("require_pinned_images", None)
    assert written == original
    # A second run has nothing left to resolve or write.
    calls = len(registry.calls)
    assert _run(registry, capsys, "--root", str(root), "pin")[:2] == (0, "\n")
    assert [p for _, p, _ in registry.calls[calls:] if "/manifests/" in p] == []


def test_check_fails_on_a_digest_its_repository_does_not_hold(registry: Registry,
                                                               capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    """GIVEN Dockerfiles pinned to a digest the registry holds and to one it does not, and a base named by tag alone
    WHEN ``check`` runs THEN it exits 1 naming the file and line of the missing digest, and prints the digest the
    unpinned tag has now."""
    digest = registry.add("team/base", "1.0", INDEX, _index("amd64"))
    newer = registry.add("team/base", "2.0", INDEX, _index("amd64", "arm64"))
    invented = "sha256:" + "ab" * 32
    (tmp_path / "model_images" / "good").mkdir(parents=True)
    (tmp_path / "model_images" / "good" / "Dockerfile").write_text(
        f"FROM example.test/team/base:1.0@{digest} AS build\nFROM build\n")
    (tmp_path / "model_images" / "bad").mkdir()
    (tmp_path / "model_images" / "bad" / "Dockerfile").write_text(
        f"ARG X_BASE=example.test/team/base:2.0\nFROM example.test/team/base:1.0@{invented}\n")
    (tmp_path / "cdk.json").write_text(json.dumps({"context": {"eks-inference:environments": {"dev": {}}}}))
    code, out, _ = _run(registry, capsys, "--root", str(tmp_path), "check")
    assert code == 1
    assert out.splitlines() == [
        f"model_images/bad/Dockerfile:1: example.test/team/base:2.0 is named by tag alone; its digest now: "
        f"example.test/team/base:2.0@{newer}",
        f"model_images/bad/Dockerfile:2: example.test/team/base:1.0@{invented}: no such manifest in "
        "example.test/team/base; resolve the tag again (`python scripts/pin_base_images.py pin --refresh`)",
        f"model_images/good/Dockerfile:1: example.test/team/base:1.0@{digest} exists",
    ]
    (tmp_path / "model_images" / "bad" / "Dockerfile").unlink()
    assert _run(registry, capsys, "--root", str(tmp_path), "check")[0] == 0


def test_a_new_neuron_tag_replaces_the_pinned_one_of_the_old_tag(registry: Registry,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    """GIVEN environments pinned to the old DLC and a Dockerfile whose ARG now names a new SDK's tag WHEN ``pin`` runs
    THEN every environment gets the new tag with its digest, and the ARG its digest (an upgrade needs no --refresh)."""
    root = _copy_repo(tmp_path)
    new_tag = NEURON_TAG.replace("sdk2.30.0", "sdk2.31.0")
    neuron = root / "model_images" / "inferentia2" / "Dockerfile"
    neuron.write_text(neuron.read_text().replace(f"ARG NEURON_BASE={NEURON_BASE_TAG}\n",
                                                 f"ARG NEURON_BASE=public.ecr.aws/{NEURON_REPOSITORY}:{new_tag}\n"))
    data = json.loads((root / "cdk.json").read_text())
    for block in data["context"]["eks-inference:environments"].values():
        block["images"] = {"neuron_base": f"{NEURON_BASE_TAG}@sha256:{'1' * 64}"}
    (root / "cdk.json").write_text(json.dumps(data, indent=2) + "\n")
    digest = registry.add(NEURON_REPOSITORY, new_tag, INDEX, _index("amd64"))
    assert _run(registry, capsys, "--root", str(root), "pin")[0] == 0
    pinned = f"public.ecr.aws/{NEURON_REPOSITORY}:{new_tag}@{digest}"
    assert f"ARG NEURON_BASE={pinned}\n" in neuron.read_text()
    written = json.loads((root / "cdk.json").read_text())["context"]["eks-inference:environments"]
    assert {env: block["images"]["neuron_base"] for env, block in written.items()} == {"dev": pinned, "prod": pinned}
