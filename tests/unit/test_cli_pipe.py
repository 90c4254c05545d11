"""A reader that goes away (`eks-inference … | head`) ends the command quietly, as a piped Unix command does."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_a_closed_pipe_ends_the_command_without_a_traceback() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "eks_inference.cli", "local", "--env", "dev", "--print-config"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has started: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
