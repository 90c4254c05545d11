"""report.html in a real headless Chromium: it renders, fetches nothing, and fits a 1280 px wide window.

The page is loaded from a copy with a small measuring script added at the end (the report itself carries
no script); ``--dump-dom`` returns the DOM after the load event, with the measurements written into it.
Chromium comes from scripts/install-test-tools.sh (run by ``make setup-test``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from eks_inference.analysis.aggregate import build_targets
from eks_inference.analysis.report import build_document, write_report
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.stats import StepRecorder
from eks_inference.measure.steps import ClientStep
from eks_inference.tables.prices import DEFAULT_PRICES

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH = 1280
T0 = 1_800_000_000.0

MEASURE = """<script>
window.addEventListener('load', function () {
  function measure() {
    var img = document.getElementById('plot');
    var r = img ? img.getBoundingClientRect() : null;
    return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
            tables: document.querySelectorAll('table').length,
            rows: document.querySelectorAll('#steps tr').length,
            img: img ? {complete: img.complete, naturalWidth: img.naturalWidth, width: r.width} : null};
  }
  var closed = measure();
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
  var opened = measure();
  var m = {closed: closed, opened: opened, details: document.querySelectorAll('details').length,
           resources: performance.getEntriesByType('resource').map(function (e) { return e.name; })};
  var pre = document.createElement('pre');
  pre.id = 'measurements';
  pre.textContent = JSON.stringify(m);
  document.body.appendChild(pre);
});
</script>
"""


def _step(name: str, run_id: str, index: int, rate: float, p99_s: float, target: TargetInfo) -> ClientStep:
    rec = StepRecorder(window_start=T0)
    for k in range(int(rate * 10)):
        rec.record_ok(p99_s if k % 50 == 0 else p99_s / 10, T0 + k / rate, 2)
    spec = StepSpec(index=index, mode=Mode.OPEN, arrival=Arrival.CONSTANT, rate=rate, concurrency=None,
                    client_rate=rate, client_concurrency=None, duration_s=10.0, requests=None, warmup_s=0)
    return ClientStep(source=f"results/{run_id}_{name}_client0.json", run_id=run_id, client_index=0, clients=1,
                      target=target, spec=spec, stats=rec.finish(window_s=10.0))


def _report(tmp_path: Path) -> Path:
    """A report that stresses the layout: long names and run ids, two runs of one target, a priced-as local
    target, an unranked one, one that failed verification with a long worst input, and a large server /info
    document."""
    graviton = TargetInfo(name="minilm-graviton-c7g-2xlarge-batch32", url="http://minilm-graviton.eks-inference"
                          ".svc.cluster.local:8000/minilm", processor="graviton", instance_type="c7g.2xlarge",
                          nodes=3, region="eu-west-1")
    local = TargetInfo(name="local-minilm-cpu", url="http://127.0.0.1:8000/minilm", processor="cpu",
                       price_as="c7i.large")
    gpu = TargetInfo(name="minilm-gpu", url="http://minilm-gpu:8000/minilm", processor="gpu",
                     instance_type="g5.xlarge")
    steps = [
        *(_step(graviton.name, "20261129T101500Z-3f2a1c", i, r, p, graviton)
          for i, (r, p) in enumerate([(100, 0.02), (200, 0.04), (400, 0.09), (800, 0.7)])),
        *(_step(graviton.name, "20261130T091500Z-77aa01", i, r, p, graviton)
          for i, (r, p) in enumerate([(150, 0.03), (300, 0.05), (600, 0.3)])),
        *(_step(local.name, "demo", i, r, p, local) for i, (r, p) in enumerate([(5, 0.1), (10, 0.15), (20, 2.5)])),
        _step(gpu.name, "g1", 0, 100, 0.4, gpu),
    ]
    passed = {"status": "passed", "summary": "PASSED: 31 of 31 probes agree"}
    failed = {"status": "failed", "worst": {"probe": "ladder-540", "text": "ladder-540 ('Ray Serve batches requests so "
                                            "that the…'): cosine 0.6902 < 0.99; the reference truncates this input "
                                            "at max_seq_length, the server says it did not"}}
    verifications = {(st.target.name, st.run_id): passed for st in steps} | {(gpu.name, "g1"): failed}
    targets, warnings = build_targets(steps, slo_p99_ms=250, max_error_rate=0.01, prices=DEFAULT_PRICES,
                                      verifications=verifications)
    info = {"model": "minilm", "processor": "graviton", "dtype": "bf16", "max_batch_size": 32,
            "versions": {"ray": "2.60.0", "torch": "2.13.0", "transformers": "5.0.0"},
            "artifact": {"key": "artifacts/minilm/" + "0123456789abcdef" * 16, "checks": list(range(80))}}
    inputs = [{"source": st.source + "/" + "x" * 150, "run_id": st.run_id, "target": st.target.name,
               "client": {"index": 0, "count": 1}, "status": "complete",
               "started_at": "2026-11-29T10:15:00.000+00:00", "ended_at": "2026-11-29T10:16:00.000+00:00",
               "provenance": {"tool_version": "0.1.0", "git_sha": "f" * 40 + "-dirty",
                              "host": "loadtest-pod-" + "a" * 60,
                              "argv": ["eks-inference", "loadtest", "run", "--url", st.target.url, "--rates",
                                       ",".join(str(x) for x in range(10, 400, 10))]},
               "server_info": info, "server_info_error": None} for st in steps[::3]]
    doc = build_document(targets, warnings=[*warnings, "w" * 300], slo_p99_ms=250, max_error_rate=0.01,
                         prices=DEFAULT_PRICES, inputs=inputs, generated_at=T0)
    return write_report(tmp_path / "report", doc, targets, slo_p99_ms=250, title="browser check")["html"]


class _Attrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for _, value in attrs:
            if value and re.match(r"\s*(https?:)?//", value):
                self.urls.append(value)


def test_report_source_references_nothing_outside(tmp_path: Path) -> None:
    source = _report(tmp_path).read_text(encoding="utf-8")
    parser = _Attrs()
    parser.feed(source)
    assert parser.urls == []  # target URLs appear as text only, never as something to load
    assert not {"script", "link", "iframe", "object", "embed"} & parser.tags
    assert not re.search(r"url\(|@import", source)
    assert source.count('src="data:image/png;base64,') == 1


@pytest.mark.skipif(CHROMIUM is None, reason="install chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium_within_1280_px(tmp_path: Path) -> None:
    html_path = _report(tmp_path)
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    profile = tmp_path / "profile"
    profile.mkdir()
    assert CHROMIUM is not None
    r = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},900", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=60)
    m = re.search(r'<pre id="measurements">(.*?)</pre>', r.stdout, re.S)
    assert m, f"no measurements in the dumped DOM (rc {r.returncode}): {r.stderr[-2000:]}"
    got: dict[str, Any] = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert got["resources"] == []  # nothing fetched: no http(s), no file besides the page
    for state in ("closed", "opened"):
        view = got[state]
        assert view["innerWidth"] == WIDTH
        assert view["scrollWidth"] <= WIDTH, (state, view)
        assert view["tables"] >= 2 and view["rows"] == 1 + 11
        assert view["img"]["complete"] and view["img"]["naturalWidth"] > 1000
        assert 0 < view["img"]["width"] <= WIDTH
    assert got["details"] >= 2
