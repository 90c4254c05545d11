#!/usr/bin/env python3
"""Pin the model images' base images by content: resolve each tag to its digest through the registry's own API.

Where the bases are named:

- every ``FROM`` of ``model_images/*/Dockerfile`` (``name:tag@sha256:<digest>``), and the default of an
  ``ARG <NAME>_BASE=`` that a ``FROM`` reads (the Inferentia2 image's ``NEURON_BASE``);
- ``images.neuron_base`` of each environment in ``cdk.json``: what ``cdk deploy`` passes as ``NEURON_BASE``, and what
  synth requires where an environment sets ``require_pinned_images`` (the default).

Commands (Python's standard library only, so it runs anywhere with network, before Docker is involved)::

    python scripts/pin_base_images.py resolve REF...       # print REF@sha256:<digest> for each tag
    python scripts/pin_base_images.py pin [--env NAME]...   # write every missing digest (and --refresh: re-resolve)
    python scripts/pin_base_images.py check                 # every written digest exists in its repository

``pin`` writes the digest after each tag that has none in the Dockerfiles, and sets ``images.neuron_base`` to the
Neuron base's tag and digest in the named environments (default: all), removing a ``require_pinned_images: false``
there, since nothing is left unpinned. ``check`` exits 1 when a digest is not found in its repository (a mistyped or
invented digest fails here, not at the first ``docker build``), and lists bases named by tag alone.

The protocol (OCI distribution specification, "Pulling manifests"; Docker's token authentication, which
public.ecr.aws and Docker Hub both use): ``HEAD /v2/<name>/manifests/<tag>`` with an ``Accept`` header listing the
OCI image index, Docker manifest list, OCI manifest and Docker manifest v2 types, so that a multi-platform image
answers with the digest of its index, the one ``docker pull`` resolves the tag to on every platform. A ``401`` names
the token service in ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; an anonymous ``GET`` there returns
``{"token": ...}`` (or ``access_token``), sent again as ``Authorization: Bearer``. The digest is the
``Docker-Content-Digest`` header; where a registry leaves it out, the manifest is fetched and hashed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS_KEY = "eks-inference:environments"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TIMEOUT_S = 30
DOCKER_HUB = "registry-1.docker.io"
_FROM_RE = re.compile(r"^(?P<head>\s*FROM\s+(?:--\S+\s+)*)(?P<ref>\S+)(?P<tail>.*)$", re.IGNORECASE)
_ARG_BASE_RE = re.compile(r"^(?P<head>\s*ARG\s+(?P<name>[A-Z0-9_]+_BASE)=)(?P<ref>\S+)(?P<tail>\s*)$")
_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


class PinError(Exception):
    """A reference, a registry answer or a file that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Reference:
    """An image reference split as Docker splits it: ``python:3.12`` is ``docker.io/library/python:3.12``."""

    text: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, _, digest = text.partition("@")
        if digest and not DIGEST_RE.match(digest):
            raise PinError(f"{text}: {digest!r} is not a sha256 digest (sha256:<64 hex>)")
        slash, colon = name.rfind("/"), name.rfind(":")
        tag = name[colon + 1:] if colon > slash else None
        if tag is not None:
            name = name[:colon]
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = "docker.io", name if rest else f"library/{name}"
        if not repository or not re.match(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                                          r"[a-z0-9]+)*)*$", repository):
            raise PinError(f"{text}: {repository!r} is not a repository name")
        if tag is None and not digest:
            raise PinError(f"{text}: names neither a tag nor a digest; write name:tag")
        return cls(text, registry, repository, tag, digest or None)

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    def with_digest(self, digest: str) -> str:
        return f"{self.text.partition('@')[0]}@{digest}"


class Registry:
    """The registry API's read side: a manifest's digest by tag, and whether a digest exists."""

    def __init__(self, endpoints: Mapping[str, str] | None = None) -> None:
        self.endpoints = {"docker.io": f"https://{DOCKER_HUB}", **(endpoints or {})}
        self._tokens: dict[tuple[str, str], str] = {}

    def base_url(self, ref: Reference) -> str:
        return self.endpoints.get(ref.registry, f"https://{ref.registry}").rstrip("/")

    def digest(self, ref: Reference, reference: str | None = None) -> str | None:
        """The digest the registry holds for ``reference`` (default the tag), or None when it has no such
        manifest."""
        target = reference or ref.tag
        assert target, ref.text
        url = f"{self.base_url(ref)}/v2/{ref.repository}/manifests/{urllib.parse.quote(target, safe=':')}"
        status, headers, _ = self._call(ref, url, "HEAD")
        if status == 404:
            return None
        digest = headers.get("Docker-Content-Digest")
        if digest is None:  # allowed by the specification: hash the manifest itself
            status, headers, body = self._call(ref, url, "GET")
            if status == 404:
                return None
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if not DIGEST_RE.match(digest):
            raise PinError(f"{ref.text}: the registry answered the digest {digest!r}, not sha256:<64 hex>")
        if reference and reference.startswith("sha256:") and digest != reference:
            raise PinError(f"{ref.text}: asked for {reference}, the registry answered {digest}")
        return digest

    def _call(self, ref: Reference, url: str, method: str) -> tuple[int, Message, bytes]:
        key = (ref.registry, ref.repository)
        for attempt in (1, 2):
            headers = {"Accept": ", ".join(MANIFEST_TYPES), "User-Agent": "eks-inference-pin-base-images"}
            if key in self._tokens:
                headers["Authorization"] = f"Bearer {self._tokens[key]}"
            request = urllib.request.Request(url, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 1:
                    self._tokens[key] = self._token(ref, e.headers.get("WWW-Authenticate", ""))
                    continue
                if e.code == 404:
                    return 404, e.headers, b""
                raise PinError(f"{ref.text}: {method} {url} answered {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                raise PinError(f"{ref.text}: cannot reach {url} ({getattr(e, 'reason', e)}); this needs network "
                               "access to the registry") from None
        raise PinError(f"{ref.text}: {url} refused the token its own token service gave (401 twice)")

    def _token(self, ref: Reference, challenge: str) -> str:
        scheme, _, params_text = challenge.partition(" ")
        params = dict(_PARAM_RE.findall(params_text))
        if scheme.lower() != "bearer" or "realm" not in params:
            raise PinError(f"{ref.text}: the registry asks for {challenge or 'credentials'!r}, not an anonymous "
                           "bearer token; log in and use `crane digest` or `docker buildx imagetools inspect`")
        query = {"scope": params.get("scope") or f"repository:{ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url), timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise PinError(f"{ref.text}: the token service {params['realm']} answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise PinError(f"{ref.text}: no token from {params['realm']} ({getattr(e, 'reason', e)})") from None
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise PinError(f"{ref.text}: the token service {params['realm']} returned no token")
        return token


# --------------------------------------------------------------------------------------------------------------------
# Where the bases are written
# --------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    """One place a base is named: a Dockerfile line, or an environment's ``images.neuron_base``."""

    where: str
    ref: str


def dockerfiles(root: Path) -> list[Path]:
    return sorted((root / "model_images").glob("*/Dockerfile"))


def dockerfile_sites(path: Path) -> Iterator[tuple[int, re.Match[str]]]:
    """(line index, match) of every ``FROM`` that names an image and every ``ARG *_BASE=`` default."""
    stages: set[str] = set()
    continued = False
    for i, line in enumerate(path.read_text().splitlines()):
        inside, continued = continued, line.rstrip().endswith("\\") or (continued and line.lstrip().startswith("#"))
        if inside:  # a continuation line of the instruction above (a RUN's script may well say "from")
            continue
        m = _FROM_RE.match(line)
        if m:
            ref, tail = m["ref"], m["tail"].split()
            if len(tail) == 2 and tail[0].upper() == "AS":
                stages.add(tail[1].lower())
            if "$" not in ref and ref.lower() not in stages and ref != "scratch":
                yield i, m
            continue
        m = _ARG_BASE_RE.match(line)
        if m:
            yield i, m


def read_context(root: Path) -> dict:
    path = root / "cdk.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PinError(f"{path}: cannot be read as JSON ({e})") from None
    envs = data.get("context", {}).get(ENVIRONMENTS_KEY)
    if not isinstance(envs, dict):
        raise PinError(f"{path}: no context {ENVIRONMENTS_KEY!r}")
    return data


def sites(root: Path) -> list[Site]:
    out = []
    for path in dockerfiles(root):
        for i, m in dockerfile_sites(path):
            out.append(Site(f"{path.relative_to(root)}:{i + 1}", m["ref"]))
    for env, block in read_context(root)["context"][ENVIRONMENTS_KEY].items():
        base = (block.get("images") or {}).get("neuron_base")
        if isinstance(base, str):
            out.append(Site(f"cdk.json {env} images.neuron_base", base))
    return out


def neuron_base(root: Path) -> str:
    """The Neuron base as ``ARG NEURON_BASE=`` of the Inferentia2 Dockerfile names it (``name:tag[@digest]``)."""
    for line in (root / "model_images" / "inferentia2" / "Dockerfile").read_text().splitlines():
        m = _ARG_BASE_RE.match(line)
        if m and m["name"] == "NEURON_BASE":
            return m["ref"]
    raise PinError("model_images/inferentia2/Dockerfile: no `ARG NEURON_BASE=<image>` line")


# --------------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------------

def resolve(registry: Registry, text: str) -> str:
    ref = Reference.parse(text)
    if ref.tag is None:
        raise PinError(f"{text}: has no tag to resolve")
    digest = registry.digest(ref)
    if digest is None:
        raise PinError(f"{text}: the registry has no manifest for tag {ref.tag!r} in {ref.repository}")
    return ref.with_digest(digest)


def pin(registry: Registry, root: Path, envs: Sequence[str], refresh: bool, out: list[str]) -> None:
    """Write the digest of every base named by tag alone (every base, with ``refresh``); ``out`` gets one line per
    change."""
    cache: dict[str, str] = {}

    def pinned(text: str) -> str:
        ref = Reference.parse(text)
        if ref.pinned and not refresh:
            return text
        key = text.partition("@")[0]
        if key not in cache:
            cache[key] = resolve(registry, key)
        return cache[key]

    for path in dockerfiles(root):
        lines = path.read_text().splitlines(keepends=True)
        changed = False
        for i, m in dockerfile_sites(path):
            new = pinned(m["ref"])
            if new != m["ref"]:
                end = "\n" if lines[i].endswith("\n") else ""
                lines[i] = f"{m['head']}{new}{m['tail'].rstrip(chr(10))}{end}"
                out.append(f"{path.relative_to(root)}:{i + 1}: {new}")
                changed = True
        if changed:
            path.write_text("".join(lines))

    data = read_context(root)
    environments = data["context"][ENVIRONMENTS_KEY]
    unknown = [e for e in envs if e not in environments]
    if unknown:
        raise PinError(f"--env {', '.join(unknown)}: not an environment of cdk.json; use {', '.join(environments)}")
    base = pinned(neuron_base(root))  # the Dockerfile pass above pinned it already: the same digest
    for env in envs or list(environments):
        block = environments[env]
        images = block.setdefault("images", {})
        current = images.get("neuron_base") or ""
        # Set where missing, where it names another tag than the Dockerfile (a new SDK), and with --refresh.
        if current != base and (refresh or "@" not in current or current.partition("@")[0] != base.partition("@")[0]):
            images["neuron_base"] = base
            out.append(f"cdk.json {env} images.neuron_base: {base}")
        if block.get("require_pinned_images") is False:
            del block["require_pinned_images"]
            out.append(f"cdk.json {env} require_pinned_images: true (the default; every base is pinned now)")
    (root / "cdk.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def check(registry: Registry, root: Path, out: list[str]) -> int:
    """1 when a written digest is not in its repository; bases named by tag alone are listed, with their digest."""
    missing = 0
    for site in sites(root):
        ref = Reference.parse(site.ref)
        if not ref.pinned:
            out.append(f"{site.where}: {site.ref} is named by tag alone; its digest now: {resolve(registry, site.ref)}")
            continue
        assert ref.digest
        if registry.digest(ref, ref.digest) is None:
            out.append(f"{site.where}: {site.ref}: no such manifest in {ref.registry}/{ref.repository}; "
                       "resolve the tag again (`python scripts/pin_base_images.py pin --refresh`)")
            missing += 1
            continue
        now = registry.digest(ref) if ref.tag else None
        note = "" if now in (None, ref.digest) else f" (the tag now points to {now}; --refresh takes it after review)"
        out.append(f"{site.where}: {site.ref} exists{note}")
    return 1 if missing else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pin_base_images.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    p.add_argument("--registry", action="append", default=[], metavar="HOST=URL",
                   help="reach registry HOST at URL instead of https://HOST (a mirror); repeatable")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("resolve", help="print each tag's digest")
    r.add_argument("refs", nargs="+", metavar="REF")
    w = sub.add_parser("pin", help="write the digests into the Dockerfiles and cdk.json")
    w.add_argument("--env", action="append", default=[], help="environment whose images.neuron_base to set "
                   "(default: all); repeatable")
    w.add_argument("--refresh", action="store_true", help="re-resolve bases already pinned (take a new release of "
                   "the same tag; review the diff)")
    sub.add_parser("check", help="every written digest exists in its repository")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    endpoints = {}
    for item in args.registry:
        host, eq, url = item.partition("=")
        if not eq or not host or not url.startswith(("http://", "https://")):
            print(f"pin_base_images.py: --registry {item!r} is not HOST=URL (e.g. public.ecr.aws=https://mirror)",
                  file=sys.stderr)
            return 2
        endpoints[host] = url
    registry = Registry(endpoints)
    out: list[str] = []
    try:
        if args.command == "resolve":
            out = [resolve(registry, ref) for ref in args.refs]
            code = 0
        elif args.command == "pin":
            pin(registry, args.root, args.env, args.refresh, out)
            code = 0
        else:
            code = check(registry, args.root, out)
    except PinError as e:
        print("\n".join([*out, f"pin_base_images.py: {e}"]), file=sys.stderr)
        return 2
    print("\n".join(out))
    return code


if __name__ == "__main__":
    sys.exit(main())
