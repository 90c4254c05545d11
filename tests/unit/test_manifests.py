"""The manifest primitives the load-test image uses are the serving side's own.

``eks_inference.artifacts.manifests`` exists so that verification reads model and reference manifests without the
serving stack; a digest that drifted from ``eks_inference.artifacts.resolve`` would make every stored
reference unfindable (they are keyed by the weights digest a replica reports), so serving builds on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eks_inference.artifacts import manifests
from eks_inference.artifacts import resolve as artifacts


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    (root / ".references").mkdir()
    (root / ".references" / "x.json").write_text("not part of the model")
    (root / "manifest.json").write_text("{}")
    return root


def test_the_same_constants_tables_and_digests_as_serving(tmp_path: Path) -> None:
    assert (manifests.MANIFEST, manifests.MANIFEST_FORMAT) == (artifacts.MANIFEST, artifacts.MANIFEST_FORMAT)
    for name in ("canonical_json", "sha256_bytes", "sha256_file", "files_digest", "hash_tree"):
        assert getattr(artifacts, name) is getattr(manifests, name), f"serving must use manifests.{name}"
    root = _tree(tmp_path / "m")
    table = manifests.hash_tree(root)
    assert table == artifacts.hash_tree(root) and set(table) == {"config.json", "sub/weights.bin"}
    assert manifests.files_digest(table) == artifacts.files_digest(table)
    bundled = artifacts.bundled_model_path("all-minilm-l6-v2")
    assert manifests.files_digest(manifests.hash_tree(bundled)) == artifacts.resolve_model(
        "bundled:all-minilm-l6-v2", cache_dir=tmp_path).digest


def test_a_published_manifest_parses_the_same(tmp_path: Path) -> None:
    root = _tree(tmp_path / "m")
    m = artifacts.model_manifest(root, name="m", revision="v1")
    raw = json.dumps(m).encode()
    assert manifests.parse(raw, "x", kind="model") == artifacts.parse_manifest(raw, "x", kind="model")
    for bad, why in ((None, "no manifest.json at x"), (b"{", "not valid JSON"),
                     (json.dumps({**m, "kind": "artifact"}).encode(), "not a format-1 model manifest"),
                     (json.dumps({**m, "files": {}}).encode(), "lists no files"),
                     (json.dumps({**m, "files": {"../x": {"sha256": "a" * 64, "size": 1}}}).encode(), "unsafe"),
                     (json.dumps({**m, "files": {"a": {"sha256": "short", "size": 1}}}).encode(), "no sha256/size")):
        with pytest.raises(manifests.ManifestError, match=why):
            manifests.parse(bad, "x", kind="model")
