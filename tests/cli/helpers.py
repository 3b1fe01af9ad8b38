"""Shared by the CLI tests: run ``chaincomp.cli.main`` in-process or as a subprocess, capture its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chaincomp.cli import main

ROOT = Path(__file__).resolve().parents[2]
# One claim over a shipped table: an audit in a fraction of a second (the paper example takes seconds).
SMALL_CLAIM = """\
[[claim]]
name = "resnet20 alone"
reference = "resnet20"
order = "PQE"
w_bits = 2
a_bits = 4
bitops_cr = "150"
cr = "40"
"""


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` with pytest's capsys: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_module(*argv: str, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    """``python -m chaincomp ARGV`` as a subprocess (for exit codes, files and tracebacks)."""
    options = {"capture_output": True, "text": True, "cwd": cwd, **kwargs}
    if not options["capture_output"]:
        del options["capture_output"]
    return subprocess.run([sys.executable, "-m", "chaincomp", *argv], **options)
