"""Help text that reads cleanly: each option's default shown once, examples under every command.

argparse's ``ArgumentDefaultsHelpFormatter`` appends ``(default: X)`` to every option, even when the help
already says the default, when the option is required (``None``) or a flag (``False``). This formatter
appends it only when it tells the reader something, and keeps the example block's line breaks.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

_SAYS_DEFAULT = re.compile(r"\bdefault\b", re.IGNORECASE)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``(default: X)`` once, only where X is a real value the help does not already mention."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or _SAYS_DEFAULT.search(text):
            return text
        default = action.default
        if (action.required or default is None or default is False or default == [] or default == ""
                or default is argparse.SUPPRESS or isinstance(action, argparse._StoreConstAction)
                or (action.option_strings == [] and action.nargs in ("+", "*", "?"))):
            return text
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse._HelpAction
                      | argparse._VersionAction | argparse._CountAction):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def examples(*lines: str) -> str:
    """An epilog block: ``examples:`` then each command indented, as in man pages."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_command(sub: Any, name: str, *, summary: str, description: str | None = None,
                example_lines: tuple[str, ...] = (), **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` has a one-line summary, a description and an example block."""
    return sub.add_parser(  # type: ignore[no-any-return]
        name, help=summary, description=description or summary,
        epilog=examples(*example_lines) if example_lines else None,
        formatter_class=HelpFormatter, **kwargs)
