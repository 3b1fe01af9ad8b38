"""Failures at the edges of every command: one line on stderr, exit 2, no traceback, nothing written.

Cases a fuzzing pass found (issue 11): stdout that cannot take the output, plot names matplotlib
cannot draw, file names no file system takes, binary files given as inputs, NaN and infinity in a
grid. Each runs the real command in a subprocess, so an exception escaping at interpreter exit (a
failed flush of stdout) would show too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.helpers import run_module

LONG = "a" * 300


def _one_line_exit_2(done, *words: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("argv", [["simulate", "--json"], ["count", "resnet8"]], ids=["simulate", "count"])
def test_a_full_stdout_is_one_line(argv: list[str]) -> None:
    with open("/dev/full", "w") as full:
        done = run_module(*argv, stdout=full, capture_output=False, stderr=-1, text=True)
    _one_line_exit_2(done, "stdout", "No space left")


CASES = {
    "plot-unknown-suffix": (["simulate", "--plot", "{tmp}/fronts.xyz"], ["--plot", ".png"]),
    "plot-no-suffix": (["audit", "--example", "paper", "--plot", "{tmp}/plotfile"], ["--plot", "plotfile", ".png"]),
    "save-table-name-too-long": (["count", "resnet8", "--save-table", "{tmp}/" + LONG + ".json"],
                                 ["--save-table", "305 bytes", "255"]),
    "fit-out-name-too-long": (["fit", "{tmp}/run.json", "-o", "{tmp}/" + LONG + ".json"], ["--out", "255"]),
    "grid-Q-nan": (["simulate", "--grid", "Q=nan"], ["--grid Q=", "nan"]),
    "grid-Q-inf": (["orders", "--grid", "Q=inf"], ["--grid Q=", "inf"]),
    "grid-P-nan": (["simulate", "--grid", "P=nan"], ["--grid P=", "nan"]),
    "grid-too-large": (["simulate", "--grid", "P=0:0.9:2000;E=0.5:0.99:2000;Q=1,2,4,8,16"],
                       ["--grid", "20,000,000 combinations", "GiB", "fewer values"]),
    "binary-profile": (["simulate", "--profile", "{tmp}/binary.json"], ["--profile", "not UTF-8"]),
    "binary-table": (["count", "{tmp}/binary.json"], ["table file", "not UTF-8"]),
    "binary-bits-file": (["count", "resnet8", "--bits-file", "{tmp}/binary.json"], ["--bits-file", "not UTF-8"]),
    "binary-claims": (["audit", "{tmp}/binary.json"], ["claims file", "not UTF-8"]),
    "binary-run-record": (["fit", "{tmp}/binary.json", "-o", "{tmp}/out.json"], ["run record", "not UTF-8"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case: str, tmp_path: Path) -> None:
    (tmp_path / "binary.json").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "run.json").write_text("{}", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv, words = CASES[case]
    _one_line_exit_2(run_module(*(a.format(tmp=tmp_path) for a in argv)), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--order", "P", "--prune-ratio", "0.99"], ["--prune-ratio", "keeps 0"]),
    (["train", "--order", "E", "--exits", "layer9"], ["--exits", "'layer9'"]),
    (["train", "--order", "D", "--epochs", "-1"], ["--epochs", ">= 0"]),
], ids=["prune-ratio-keeps-nothing", "unknown-exit", "negative-epochs"])
def test_train_refuses_bad_options_before_torch_loads(argv: list[str], words: list[str], tmp_path: Path) -> None:
    """Options and model checks need no torch: a mistake costs a fraction of a second, not a torch import."""
    import subprocess
    import sys

    from tests.cli.helpers import ROOT

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "chaincomp", *argv, "--out",
                           str(tmp_path / "run.json")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert len(lines) == 1 and lines[0].startswith("chaincomp train: error: ") and "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]
    assert "| torch\n" not in done.stderr and not any(line.rstrip().endswith("| torch")
                                                       for line in done.stderr.splitlines())
    assert list(tmp_path.iterdir()) == []
