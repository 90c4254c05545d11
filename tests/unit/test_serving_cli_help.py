"""`eks-inference local|compile|publish --help`: a summary, a description, examples, each default once."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def help_text(*argv: str) -> str:
    r = subprocess.run([sys.executable, "-m", "eks_inference.cli", *argv, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def option_entries(text: str) -> dict[str, str]:
    """Each option's help, its wrapped lines joined: ``{"--port": "HTTP port (default: 8000)", ...}``."""
    body = text.split("\noptions:\n", 1)[1].split("\nexamples:\n", 1)[0]
    entries: dict[str, str] = {}
    current = None
    for line in body.splitlines():
        m = re.match(r"^  (-\S+|[a-z]\S*)(?: [A-Z_{][^ ]*)*(?:, --\S+(?: [A-Z_]+)?)?(?:\s{2,}(.*))?$", line)
        if m and not line.startswith("    "):
            current = m.group(1)
            entries[current] = (m.group(2) or "").strip()
        elif current and line.strip():
            entries[current] = f"{entries[current]} {line.strip()}".strip()
    return entries


@pytest.mark.parametrize("command", ["local", "compile", "publish"])
def test_help_has_summary_description_examples_and_each_default_once(command: str) -> None:
    top = help_text()
    summary = re.search(rf"^\s+{command}\s+(\S.*)$", top, re.M)
    assert summary, top  # a one-line summary in `eks-inference --help`
    text = help_text(command)
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "\nexamples:\n" in text
    examples = text.split("\nexamples:\n", 1)[1].strip().splitlines()
    assert len(examples) >= 3 and all(line.strip().startswith("eks-inference " + command) for line in examples)
    description = text.split("\n\n")[1]
    assert len(description) > 80 and not description.startswith(("usage", "options"))
    entries = option_entries(text)
    assert entries and "-h" not in [k for k, v in entries.items() if not v]
    for option, words in entries.items():
        assert words, f"{command} {option} has no help"
        assert len(re.findall(r"\bdefault\b", words, re.I)) <= 1, f"{command} {option}: {words}"


def test_defaults_are_shown_where_they_help() -> None:
    local = option_entries(help_text("local"))
    assert local["--port"] == "HTTP port (default: 8000)"
    assert local["--source"].endswith("(default: bundled:all-minilm-l6-v2)")
    assert "does not count (default: 600.0)" in local["--timeout"]
    assert local["--detach"].startswith("start in the background")
    compile_ = option_entries(help_text("compile"))
    assert compile_["--processor"] == "target processor (default: cpu)"
    publish = option_entries(help_text("publish"))
    assert publish["--revision"] == "weights revision (default: v1)"


def test_compile_refuses_a_bad_source_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "eks_inference.cli", "compile", "bundled:bert-base", "--name", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["eks-inference: configuration error: SOURCE: 'bundled:bert-base' is not a "
                                     "bundled model; use bundled:all-minilm-l6-v2, a model directory or "
                                     "s3://BUCKET/models/NAME/REVISION"]
