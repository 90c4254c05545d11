"""The one error type a bad input raises, anywhere in the project, and how the command line shows it.

It lives below every other module (the dated tables raise it too), and :mod:`eks_inference.config` re-exports it,
so ``from eks_inference.config import ConfigError`` keeps working for code that reads configuration.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """One or more configuration values are invalid; each line names the field, the value and the fix.

    ``errors`` holds the lines; ``str(error)`` joins them with newlines.
    """

    def __init__(self, *messages: str) -> None:
        lines = tuple(line for m in messages for line in str(m).split("\n") if line)
        super().__init__("\n".join(lines))
        self.errors: tuple[str, ...] = lines

    def within(self, prefix: str) -> ConfigError:
        """The same errors, each prefixed with where they sit (``model 'minilm'``)."""
        return ConfigError(*(f"{prefix} {e}" for e in self.errors))


def format_config_error(error: ConfigError, program: str = "eks-inference") -> str:
    """How the command line shows a ConfigError: one line for one error, a numbered list for several."""
    if len(error.errors) == 1:
        return f"{program}: configuration error: {error.errors[0]}"
    return "\n".join([f"{program}: {len(error.errors)} configuration errors:",
                      *(f"  {i}. {e}" for i, e in enumerate(error.errors, 1))])
