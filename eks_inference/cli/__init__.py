"""``eks-inference`` command line: local, compile, publish, loadtest, diff, preflight, verify, plan, trial, rollout.

The top floor: each module of this package turns one area's command line into calls on the floors below and
registers its own sub-commands. They are imported lazily, so that an image with only the ``serve`` or only the
``loadtest`` extra still gets a working CLI for its part.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from eks_inference import __version__
from eks_inference.config import ConfigError, format_config_error

# module -> the commands it registers; each module has ``register(subparsers) -> None`` and sets ``func`` on its
# parsers. An image that lacks what a module imports shows those commands as unavailable.
_COMMAND_MODULES = {
    "eks_inference.cli.serving": ("local", "compile", "publish"),
    "eks_inference.cli.loadtest": ("loadtest",),
    "eks_inference.cli.ops": ("diff", "preflight"),
    "eks_inference.cli.verify": ("verify",),
    "eks_inference.cli.plan": ("plan",),
    "eks_inference.cli.trial": ("trial",),
    "eks_inference.cli.tune": ("tune",),
    "eks_inference.cli.rollout": ("rollout",),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eks-inference",
        description="Serve NLP models with Ray Serve locally or on EKS, load-test them and price the result.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, commands in _COMMAND_MODULES.items():
        try:
            module = importlib.import_module(name)
        except ImportError as e:  # an image built with one extra only
            missing = getattr(e, "name", None) or str(e)
            for command in commands:
                sub.add_parser(command, help=f"(unavailable: {missing} is not installed)")
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
