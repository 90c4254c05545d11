"""`/{model}/docs` works offline: the page and every asset it loads come from the replica (the pinned
swagger-ui-bundle-v2 package), nothing from a CDN; a headless Chromium, where installed, renders the operations."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import pytest

from .conftest import get

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("content-type", ""), r.read()


def test_docs_page_references_only_assets_the_replica_serves(minilm: str) -> None:
    status, ctype, raw = fetch(f"{minilm}/docs")
    assert status == 200 and ctype.startswith("text/html")
    html = raw.decode()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html) + re.findall(r"""url:\s*["']([^"']+)""", html)
    assert not re.search(r"(?:https?:)?//", html), html  # no CDN, no absolute URL of any host
    assert {"docs-assets/swagger-ui-bundle.js", "docs-assets/swagger-ui.css", "openapi.json"} <= set(refs)
    for ref in refs:
        status, ctype, body = fetch(urljoin(f"{minilm}/docs", ref))
        assert status == 200 and body, ref
        kind = {"js": "javascript", "css": "text/css", "png": "image/png", "json": "application/json"}
        assert kind[ref.rsplit(".", 1)[1]] in ctype, (ref, ctype)
    assert get(f"{minilm}/docs-assets/../app.py")[0] == 404
    assert get(f"{minilm}/docs-assets/index.html")[0] == 404  # only the files the page needs


def test_docs_page_renders_the_operations_in_a_headless_browser(minilm: str, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("no Chromium at /usr/bin/chromium: `apt-get install chromium` (scripts/install-test-tools.sh) "
                    "to render the docs page headless")
    profile = tmp_path / "profile"
    profile.mkdir()
    r = subprocess.run(
        [CHROMIUM if Path(CHROMIUM).exists() else "chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
         f"{minilm}/docs"],
        capture_output=True, text=True, timeout=120)
    dom = r.stdout
    assert r.returncode == 0, r.stderr[-2000:]
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/predict", "/healthz", "/info"} <= paths, (paths, dom[:2000])
    assert "minilm: embedding on cpu" in dom  # the title from the model's own OpenAPI document
