"""Every ``eks-inference loadtest`` command's ``--help``, and ``verify``'s and ``plan``'s: a one-line summary, an
example block, each default once."""

from __future__ import annotations

import argparse
import re

import pytest

from eks_inference.cli import build_parser


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _loadtest_commands() -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, summary in the parent's listing) for the group and every sub-command, found, not listed."""
    root = build_parser()
    group = _choices(root)["loadtest"]
    summaries = {a.dest: a.help for a in next(a for a in root._actions
                                              if isinstance(a, argparse._SubParsersAction))._choices_actions}
    out = [("loadtest", group, summaries["loadtest"] or "")]
    sub = next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
    sub_summaries = {a.dest: a.help for a in sub._choices_actions}
    out += [(f"loadtest {name}", p, sub_summaries.get(name) or "") for name, p in sub.choices.items()]
    out += [(name, _choices(root)[name], summaries[name] or "") for name in ("verify", "plan")]
    return out


COMMANDS = _loadtest_commands()


def _option_entries(text: str) -> dict[str, str]:
    """``--flag`` → its whole help entry (the option line plus its indented continuation lines)."""
    entries: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def test_run_and_report_are_both_there() -> None:
    assert {name for name, _, _ in COMMANDS} >= {"loadtest", "loadtest run", "loadtest report"}


@pytest.mark.parametrize("name, parser, summary", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_help_has_a_summary_examples_and_each_default_once(name: str, parser: argparse.ArgumentParser,
                                                          summary: str) -> None:
    text = parser.format_help()
    assert summary and "\n" not in summary and len(summary) < 80, summary
    assert parser.description and len(parser.description) > len(summary) - 20
    assert "\nexamples:\n  eks-inference " + name in text, text
    for bad in ("(default: None)", "(default: False)", "(default: [])", "(default: )"):
        assert bad not in text, f"{name}: {bad}"
    entries = _option_entries(text)
    for option, entry in entries.items():
        assert len(re.findall(r"\bdefault\b", entry, re.IGNORECASE)) <= 1, f"{name} {option}: {entry}"
    for action in parser._actions:
        if not action.option_strings or action.help is None or action.dest == "help":
            continue
        entry = entries[action.option_strings[-1]]
        has_value = (action.default not in (None, False, "", [], argparse.SUPPRESS)
                     and not isinstance(action, argparse._StoreTrueAction))
        if has_value:
            assert re.search(r"\bdefault\b", entry, re.IGNORECASE), f"{name} {action.option_strings}: {entry}"


def test_the_run_flags_the_chart_passes_are_named_exactly() -> None:
    run = dict((n, p) for n, p, _ in COMMANDS)["loadtest run"]
    options = {o for a in run._actions for o in a.option_strings}
    assert {"--wait-ready", "--skip-if-exists", "--clients", "--client-index", "--run-id", "--price-as",
            "--verify", "--verify-source"} <= options
