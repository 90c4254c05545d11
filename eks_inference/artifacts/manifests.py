"""The repository's manifest primitives — file tables of sha256 and size, one digest per table — in plain Python.

A floor below serving and verification: the load-test image (no torch, no serving stack) reads model and
reference manifests with these, and gets the same digests a replica reports in ``/info``.
``eks_inference.artifacts.resolve`` builds on these (its integrity errors wrap :class:`ManifestError`), so a
replica and a verifying client can never compute different digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ManifestError(ValueError):
    """A manifest is missing, unreadable or lists files without their hashes; the message names it."""


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One digest for a file table: changes when any file's content, name or size changes."""
    return sha256_bytes(canonical_json({k: {"sha256": v["sha256"], "size": v["size"]} for k, v in files.items()}))


def hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, size}}`` for every file under ``root`` except manifests and dot paths."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel == MANIFEST or any(part.startswith(".") for part in parts):
            continue
        out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def parse(data: bytes | None, where: str, *, kind: str) -> dict[str, Any]:
    """A format-1 manifest of ``kind`` whose every file has a sha256 and a size; ManifestError otherwise."""
    if data is None:
        raise ManifestError(f"no {MANIFEST} at {where}")
    try:
        m = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{where}/{MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT or m.get("kind") != kind:
        raise ManifestError(f"{where}/{MANIFEST} is not a format-{MANIFEST_FORMAT} {kind} manifest")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{where}/{MANIFEST} lists no files")
    for rel, meta in files.items():
        p = PurePosixPath(rel)
        if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
            raise ManifestError(f"{where}/{MANIFEST} lists an unsafe path {rel!r}")
        if (not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or len(meta["sha256"]) != 64
                or not isinstance(meta.get("size"), int)):
            raise ManifestError(f"{where}/{MANIFEST} entry {rel!r} has no sha256/size")
    return m
