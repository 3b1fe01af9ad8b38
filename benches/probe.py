"""Shared by the end-to-end benches: prove a command runs without importing torch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def assert_torch_free(args: Sequence[str], cwd: Path, must_see: Sequence[str]) -> None:
    """Run ``python -X importtime ARGS``: it succeeds, imports ``must_see`` (the probe sees our
    imports at all) and no torch module."""
    probe = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=cwd)
    assert probe.returncode == 0, probe.stderr
    imported = imported_modules(probe.stderr)
    assert set(must_see) <= imported, f"the probe did not see {set(must_see) - imported}"
    assert not {m for m in imported if m == "torch" or m.startswith("torch.")}, f"{' '.join(args)} imported torch"
