"""The result file: one JSON document per client per run, versioned.

A report merges files written by many pods, possibly by different releases of this tool. The document
therefore carries ``format`` and ``format_version``; a report refuses to mix versions (silently merging
histograms recorded with different conventions would be a wrong number with a straight face), and
names the files on each side.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eks_inference.config import ConfigError
from eks_inference.measure.spec import StepSpec, TargetInfo
from eks_inference.measure.stats import StepStats
from eks_inference.measure.steps import ClientStep

FORMAT = "eks-inference.loadtest.result"
FORMAT_VERSION = 1
REPORT_FORMAT = "eks-inference.loadtest.report"
"""The report that ``loadtest report`` writes and ``plan`` reads back."""
REPORT_FORMAT_VERSION = 1


class ResultFormatError(ConfigError):
    """A file is not a result file, or its version cannot be read or mixed with the others."""


@dataclass(frozen=True, kw_only=True)
class ParsedResult:
    source: str
    doc: Mapping[str, Any]
    steps: tuple[ClientStep, ...]

    @property
    def provenance(self) -> Mapping[str, Any]:
        return self.doc.get("provenance", {})


def is_result(doc: Any) -> bool:
    return isinstance(doc, Mapping) and doc.get("format") == FORMAT


def check_versions(docs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """All files one format version, and one this tool reads; otherwise name who has which."""
    by_version: dict[Any, list[str]] = {}
    for source, doc in docs:
        by_version.setdefault(doc.get("format_version"), []).append(source)
    if len(by_version) > 1:
        listing = "; ".join(f"version {v}: {', '.join(srcs)}" for v, srcs in sorted(by_version.items(), key=str))
        raise ResultFormatError(
            f"result files of different format versions cannot be merged ({listing}); "
            "report each version separately or re-run with one release"
        )
    for version, srcs in by_version.items():
        if version != FORMAT_VERSION:
            raise ResultFormatError(
                f"{', '.join(srcs)}: result format version {version!r}, but this eks-inference reads version "
                f"{FORMAT_VERSION}; use the release that wrote them"
            )


def parse_result(source: str, doc: Mapping[str, Any]) -> ParsedResult:
    """A validated result document; errors name the file and the field."""
    if not is_result(doc):
        raise ResultFormatError(f"{source}: not an eks-inference load-test result (no format {FORMAT!r})")
    try:
        target = TargetInfo.from_dict(doc["target"])
        client = doc["client"]
        steps = tuple(
            ClientStep(
                source=source,
                run_id=str(doc["run_id"]),
                client_index=int(client["index"]),
                clients=int(client["count"]),
                target=target,
                spec=StepSpec.from_dict(s["spec"]),
                stats=StepStats.from_dict(s["stats"]),
                client=s.get("client", {}),
                status=str(s.get("status", "complete")),
                server=s.get("server_metrics"),
            )
            for s in doc["steps"]
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ResultFormatError(f"{source}: malformed result file ({type(e).__name__}: {e})") from None
    return ParsedResult(source=source, doc=doc, steps=steps)


def load_results(found: Sequence[Any]) -> tuple[list[ParsedResult], list[str]]:
    """Parse storage hits; JSON that is not a result is skipped inside directories, an error if named."""
    docs: list[tuple[str, Mapping[str, Any]]] = []
    skipped: list[str] = []
    for f in found:
        try:
            doc = json.loads(f.text)
        except json.JSONDecodeError as e:
            if f.explicit:
                raise ResultFormatError(f"{f.source}:{e.lineno}: not valid JSON ({e.msg})") from None
            skipped.append(f"{f.source}: skipped (not valid JSON)")
            continue
        if not is_result(doc):
            if f.explicit:
                raise ResultFormatError(f"{f.source}: not an eks-inference load-test result (no format {FORMAT!r})")
            skipped.append(f"{f.source}: skipped (not a load-test result)")
            continue
        docs.append((f.source, doc))
    if not docs:
        raise ConfigError("no load-test result files among the inputs; give files or directories that "
                          "`eks-inference loadtest run --out` wrote")
    check_versions(docs)
    return [parse_result(src, doc) for src, doc in docs], skipped


def dumps(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n"
