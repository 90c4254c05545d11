"""Run the probe set against a target over HTTP and judge its answers against the reference.

The target describes itself: ``GET {url}/info`` gives the task, the ``max_seq_length`` it truncates at
(the reference truncates at the same length), its limits (probes are sent in requests that fit them) and
the ``model_uri`` of its weights (the default source of the reference). Probes go out in requests that
mix short and long inputs, so a batching or padding fault shows as well as a numeric one.

Errors that mean "could not check" (no connection, no ``/info``, no reference to be had) raise
:class:`VerifyError`; a target that answers, but wrongly, gets a failing :class:`Verdict`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.artifacts.family_index import MODEL_ID_HEADER
from eks_inference.config import ConfigError, Task
from eks_inference.verify.compare import Comparison, Row, Tolerances, compare
from eks_inference.verify.probes import PROBE_SET_VERSION, Probe, probes_for
from eks_inference.verify.reference import load_reference_model, torch_available
from eks_inference.verify.stored import (
    Reference,
    ReferenceUnavailable,
    describe_source,
    read_reference,
    write_reference,
)

USER_AGENT = "eks-inference-verify"
MAX_INPUTS_PER_REQUEST = 8
RETRIES_ON_503 = 5
VERDICT_FORMAT = "eks-inference.verify.verdict"


class VerifyError(Exception):
    """Verification could not run (connection, usage, or no reference); the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The outcome of one verification, printable and storable in a result file."""

    url: str
    task: Task
    max_seq_length: int
    target_dtype: str | None
    source: str
    source_digest: str
    target_digest: str | None
    reference: str
    comparison: Comparison
    skipped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    checked_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def worst(self) -> Row | None:
        return self.comparison.worst

    def worst_text(self) -> str:
        """``ladder-190 ('Ray Serve batches…'): cosine 0.6200 < 0.99``."""
        w = self.worst
        if w is None:
            return "no probe was checked"
        return f"{w.probe.id} ({w.probe.short(40)!r}): {w.detail}"

    def summary(self) -> str:
        c = self.comparison
        failing = sum(not r.ok for r in c.rows)
        head = (f"{self.status.upper()}: {len(c.rows) - failing} of {len(c.rows)} probes agree with the "
                f"fp32 reference ({c.tolerances.criteria(self.task)})")
        return f"{head}; worst input: {self.worst_text()}"

    def to_dict(self) -> dict[str, Any]:
        w = self.worst
        return {
            "format": VERDICT_FORMAT,
            "status": self.status,
            "summary": self.summary(),
            "worst": None if w is None else {**w.to_dict(), "text": self.worst_text()},
            "criteria": self.comparison.tolerances.criteria(self.task),
            "label_agreement": self.comparison.label_agreement,
            "url": self.url, "task": self.task.value, "max_seq_length": self.max_seq_length,
            "target_dtype": self.target_dtype, "source": self.source, "source_digest": self.source_digest,
            "target_digest": self.target_digest, "reference": self.reference,
            "probe_set_version": PROBE_SET_VERSION, "probes": len(self.comparison.rows),
            "skipped": list(self.skipped), "notes": list(self.notes), "checked_at": self.checked_at,
            "rows": [r.to_dict() for r in self.comparison.rows],
        }


# ---------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------

def base_url(url: str) -> str:
    """``http://host:port/model`` without a trailing slash; refuses anything but http(s) URLs."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise VerifyError(f"--url: {url!r} is not an http(s) URL of a model endpoint, e.g. "
                          "http://127.0.0.1:8000/minilm")
    return url.strip().rstrip("/")


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, body: bytes | None, timeout_s: float,
             headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"User-Agent": USER_AGENT, **(headers or {}),
                                                          **({"Content-Type": "application/json"} if body else {})})
    try:
        with _OPENER.open(req, timeout=timeout_s) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read() if e.fp is not None else b""
    except (TimeoutError, urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VerifyError(f"cannot reach {url}: {type(reason).__name__}: {reason}; check --url and that the "
                          "server is up") from None


def _message(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
        return str(doc.get("error", {}).get("message") or doc)[:200]
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace")[:200] or "(empty body)"


def fetch_info(url: str, *, timeout_s: float) -> dict[str, Any]:
    status, raw = _request(f"{url}/info", None, timeout_s)
    if status != 200:
        raise VerifyError(f"{url}/info answered HTTP {status} ({_message(raw)}); the target is not ready or "
                          "is not an eks-inference model endpoint")
    try:
        info = json.loads(raw)
    except ValueError:
        raise VerifyError(f"{url}/info did not answer JSON; is --url a model endpoint?") from None
    if not isinstance(info, dict) or "task" not in info:
        raise VerifyError(f"{url}/info names no task; is --url a model endpoint (http://HOST:PORT/MODEL)?")
    if not isinstance(info.get("max_seq_length"), int):
        raise VerifyError(f"{url}/info gives no max_seq_length: the model is still loading; wait until "
                          f"{url}/healthz answers 200")
    return info


def _predict(url: str, items: Sequence[Any], *, task: Task, timeout_s: float,
             sleep: Callable[[float], None], headers: Mapping[str, str] | None = None) -> tuple[int, Any, str]:
    """(HTTP status, parsed body or None, error text)."""
    inputs = [{"question": q, "context": c} for q, c in items] if task is Task.QUESTION_ANSWERING else list(items)
    body = json.dumps({"inputs": inputs}).encode()
    for attempt in range(RETRIES_ON_503 + 1):
        status, raw = _request(f"{url}/predict", body, timeout_s, headers)
        if status == 503 and attempt < RETRIES_ON_503:
            sleep(1.0 + attempt)
            continue
        if status != 200:
            return status, None, f"HTTP {status}: {_message(raw)}"
        try:
            return status, json.loads(raw), ""
        except ValueError:
            return status, None, "the answer is not JSON"
    raise AssertionError("unreachable")


def _chunks(n: int, size: int) -> list[list[int]]:
    """Probe indices in requests of at most ``size``, each mixing the set's short and long inputs."""
    k = max(1, -(-n // size))
    return [list(range(j, n, k)) for j in range(k)]


def ask_target(url: str, probes: Sequence[Probe], *, task: Task, max_inputs: int, timeout_s: float,
               sleep: Callable[[float], None] = time.sleep,
               headers: Mapping[str, str] | None = None) -> tuple[list[Any], list[Any], dict[int, str]]:
    """The target's outputs and truncation flags per probe; failed probes map index → why. ``headers`` (default none)
    go with every request (a family member's model id)."""
    outputs: list[Any] = [None] * len(probes)
    truncated: list[Any] = [None] * len(probes)
    errors: dict[int, str] = {}
    for chunk in _chunks(len(probes), max(1, min(max_inputs, MAX_INPUTS_PER_REQUEST))):
        _, doc, err = _predict(url, [probes[i].item for i in chunk], task=task, timeout_s=timeout_s, sleep=sleep,
                               headers=headers)
        outs = doc.get("outputs") if isinstance(doc, dict) else None
        flags = doc.get("truncated") if isinstance(doc, dict) else None
        if not err and (not isinstance(outs, list) or not isinstance(flags, list)
                        or len(outs) != len(chunk) or len(flags) != len(chunk)):
            err = f"the answer has no outputs/truncated lists of {len(chunk)} items"
        for pos, i in enumerate(chunk):
            if err:
                errors[i] = err
            else:
                assert isinstance(outs, list) and isinstance(flags, list)
                outputs[i], truncated[i] = outs[pos], flags[pos]
    return outputs, truncated, errors


# ---------------------------------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------------------------------

REFERENCE_MODES = ("auto", "compute", "stored")


def get_reference(source_uri: str, task: Task, max_seq_length: int, *, mode: str, cache_dir: str | Path,
                  endpoint_url: str | None, write: bool, say: Callable[[str], None]) -> tuple[Reference, list[str]]:
    """The reference (computed when torch is here, else stored), and notes on how it was had."""
    notes: list[str] = []
    try:
        source = describe_source(source_uri, endpoint_url=endpoint_url)
    except ConfigError as e:
        raise VerifyError(str(e)) from None
    except Exception as e:  # S3 trouble: name the source
        raise VerifyError(f"--source {source_uri}: {type(e).__name__}: {e}") from None
    compute = mode == "compute" or (mode == "auto" and torch_available())
    if write and not compute:
        raise VerifyError("--write-reference computes the reference, which needs torch and transformers: install "
                          "the serve extra (pip install 'eks-inference[serve]')")
    if compute:
        try:
            say(f"computing the fp32 reference from {source_uri} at max_seq_length {max_seq_length}")
            model = load_reference_model(source_uri, task, cache_dir=cache_dir, endpoint_url=endpoint_url)
            ref = model.run(max_seq_length)
        except ReferenceUnavailable as e:
            raise VerifyError(str(e)) from None
        except Exception as e:
            raise VerifyError(f"computing the reference from {source_uri} failed: {type(e).__name__}: {e}") from None
        if write:
            if source.store_uri is None:
                raise VerifyError(f"--write-reference: {source_uri} is a bundled model, which has no place for "
                                  "references; give the published copy as --source (s3://... or a directory)")
            uri, status = write_reference(ref, source.store_uri, endpoint_url=endpoint_url)
            notes.append(f"reference {status} at {uri}")
        return ref, notes
    try:
        return read_reference(source, task, max_seq_length, endpoint_url=endpoint_url), notes
    except ReferenceUnavailable as e:
        raise VerifyError(str(e)) from None
    except Exception as e:  # S3 trouble: name the source
        raise VerifyError(f"reading the stored reference of {source_uri} failed: {type(e).__name__}: {e}") from None


def verify_target(url: str, *, source: str | None = None, reference_mode: str = "auto",
                  cache_dir: str | Path = ".eks-inference/verify-cache", endpoint_url: str | None = None,
                  timeout_s: float = 60.0, write: bool = False, tolerances: Tolerances | None = None,
                  say: Callable[[str], None] = lambda _m: None,
                  model: tuple[str, str] | None = None) -> Verdict:
    """Fetch ``/info``, get the reference, send the probes, compare. Raises :class:`VerifyError`.

    ``model``: (model id, its digest) of a family member to check (default none: the target is one model); every
    probe names it in Serve's model-id header (:mod:`eks_inference.verify.family` picks them)."""
    if reference_mode not in REFERENCE_MODES:
        raise VerifyError(f"--reference: {reference_mode!r} is not one of {', '.join(REFERENCE_MODES)}")
    url = base_url(url)
    info = fetch_info(url, timeout_s=timeout_s)
    try:
        task = Task(info["task"])
    except ValueError:
        raise VerifyError(f"{url}/info names task {info['task']!r}, which this eks-inference does not know") from None
    seq = int(info["max_seq_length"])
    src = source or info.get("model_uri")
    if not src:
        raise VerifyError(f"{url}/info names no model_uri; give the weights with --source (bundled:NAME, a "
                          "model directory or s3://...)")
    ref, notes = get_reference(str(src), task, seq, mode=reference_mode, cache_dir=cache_dir,
                               endpoint_url=endpoint_url, write=write, say=say)
    probes = probes_for(task, seq)
    if ref.probe_ids != [p.id for p in probes]:
        raise VerifyError(f"the reference ({ref.basis}) holds other probes than this eks-inference's probe set "
                          f"v{PROBE_SET_VERSION}; write it again with --write-reference")
    limits: Mapping[str, Any] = info.get("limits") or {}
    max_chars = int(limits.get("max_input_chars") or 1 << 30)
    keep = [i for i, p in enumerate(probes) if p.chars <= max_chars]
    skipped = tuple(f"{p.id}: {p.chars} characters, over the server's max_input_chars {max_chars}"
                    for i, p in enumerate(probes) if i not in keep)
    sent = [probes[i] for i in keep]
    say(f"sending {len(sent)} probes (probe set v{PROBE_SET_VERSION}) to {url}/predict")
    outs, flags, errors = ask_target(url, sent, task=task, max_inputs=int(limits.get("max_inputs") or 8),
                                     timeout_s=timeout_s, headers={MODEL_ID_HEADER: model[0]} if model else None)
    comparison = compare(task, sent, outs, flags, [ref.outputs[i] for i in keep], [ref.truncated[i] for i in keep],
                         tolerances)
    if errors:
        rows = tuple(Row(probe=r.probe, ok=False, score=None, label_agrees=False, detail=errors[i])
                     if i in errors else r for i, r in enumerate(comparison.rows))
        comparison = Comparison(task=task, rows=rows, tolerances=comparison.tolerances)
    target_digest = model[1] if model else info.get("weights_digest")
    if target_digest and target_digest != ref.weights_digest:
        notes.append(f"the target serves weights {str(target_digest)[:16]}…, the reference is of "
                     f"{ref.weights_digest[:16]}… ({src})")
    return Verdict(url=url, task=task, max_seq_length=seq, target_dtype=info.get("dtype"), source=str(src),
                   source_digest=ref.weights_digest, target_digest=target_digest, reference=ref.basis,
                   comparison=comparison, skipped=skipped, notes=tuple(notes))


def render_table(v: Verdict, *, width: int = 120, limit: int | None = None) -> str:
    """A plain-text table, worst probe first (no terminal library: the serve extra has none). ``limit`` shows
    only the failing probes and at most that many others (the load tester's log); None shows them all."""
    rows = sorted(v.comparison.rows, key=v.comparison.sort_key)
    if limit is not None:
        failing = [r for r in rows if not r.ok]
        rows = failing + [r for r in rows if r.ok][: max(0, limit - len(failing))]
    score_name = {Task.EMBEDDING: "cosine", Task.CLASSIFICATION: "max|Δp|",
                  Task.QUESTION_ANSWERING: "span"}[v.task]
    head = f"{'':2}{'probe':<18} {'input':<42} {score_name:>9}  why it fails"
    lines = [f"Verification of {v.url} ({v.task.value}, {v.target_dtype or '?'}, max_seq_length {v.max_seq_length})",
             f"reference: {v.reference} from {v.source}", head, "-" * len(head)]
    for r in rows:
        score = "n/a" if r.score is None else f"{r.score:.6f}" if v.task is not Task.QUESTION_ANSWERING else (
            "same" if r.score == 1.0 else "other")
        mark = "  " if r.ok else "✘ "
        line = f"{mark}{r.probe.id:<18} {r.probe.short(42):<42} {score:>9}  {'' if r.ok else r.detail}".rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    if limit is not None and len(rows) < len(v.comparison.rows):
        more = len(v.comparison.rows) - len(rows)
        agree = "probes agree" if more > 1 else "probe agrees"
        lines.append(f"  … and {more} more {agree} (all are in the result file)")
    lines += [f"skipped: {s}" for s in v.skipped]
    lines += [f"note: {n}" for n in v.notes]
    lines.append(v.summary())
    return "\n".join(lines)
