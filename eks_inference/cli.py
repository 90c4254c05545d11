"""``eks-inference`` command line: local, compile, publish, loadtest, diff, preflight, verify, plan.

Each area registers its own sub-commands, imported lazily so that an image with only the ``serve``
or only the ``loadtest`` extra still gets a working CLI for its part.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from eks_inference import __version__
from eks_inference.config import ConfigError, format_config_error

# module -> what it provides; each module has ``register(subparsers) -> None`` and sets ``func`` on its parsers.
_COMMAND_MODULES = (
    "eks_inference.serving.commands",   # local, compile, publish
    "eks_inference.loadtest.commands",  # loadtest run | report
    "eks_inference.ops.commands",       # diff, preflight
    "eks_inference.verify.commands",    # verify
    "eks_inference.loadtest.fleet",     # plan
)
_UNAVAILABLE_AS = {"eks_inference.loadtest.fleet": "plan"}
"""Command name shown for a module that cannot be imported, where it differs from the module's package."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eks-inference",
        description="Serve NLP models with Ray Serve locally or on EKS, load-test them and price the result.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # an image built with one extra only
            missing = getattr(e, "name", None) or str(e)
            sub.add_parser(_UNAVAILABLE_AS.get(name, name.split(".")[1]),
                           help=f"(unavailable: {missing} is not installed)")
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except ConfigError as e:
        print(format_config_error(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`eks-inference plan … | head`): what was left to print has nowhere to go. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again, and exit as a piped
        # command does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
