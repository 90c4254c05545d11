"""The metric names a PromQL expression reads, so that a test can check each one is really exported.

A deliberately small lexer, not a parser: strings, label matchers (``{...}``), range and subquery brackets
(``[...]``) and the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right`` are
removed; every identifier left that is not a keyword, a function call or a number is a metric name. It is
checked against expressions of every shape the dashboards and rules use (tests/unit/test_observability.py).
"""

from __future__ import annotations

import re

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                       "unless", "offset", "atan2", "inf", "nan"})
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names ``expr`` selects (Grafana's ``$__rate_interval`` and ``$var`` are treated as opaque)."""
    text = _STRING.sub(" ", expr)
    text = re.sub(r"\$\{?\w+\}?", "1", text)
    text = _BRACES.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    text = _LABEL_LISTS.sub(" ", text)
    out = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        if name in _KEYWORDS or re.fullmatch(r"\d", name[:1]):
            continue
        if text[m.end():].lstrip().startswith("("):
            continue  # a function (or an aggregation whose label list came first)
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # the exponent or unit of a number such as 1e3 or a duration such as 5m
        out.add(name)
    return out
