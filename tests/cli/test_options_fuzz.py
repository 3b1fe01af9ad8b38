"""Every command's options, fed values a user might type by mistake (hypothesis): empty strings,
NaN and infinities, negative and huge numbers, stray commas and ``KEY=VALUE`` pairs, paths that do
not exist or cannot be written, and random text. The only acceptable outcomes are a finished
command (exit 0), or one ``error:`` line with exit 2 that leaves no file behind; a traceback or
any other exit code is a bug a user would see.

Training never starts here: ``trainer.chain.run_chain`` and ``trainer.profile.run_profile`` are
replaced by a tripwire, and reaching it means every option was accepted (what the tests of each
command check is that accepted options train correctly). Each example runs in a fresh folder that
is also the working directory, so relative output paths land there.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaincomp.cli import make_parser, main
from tests.cli.helpers import SMALL_CLAIM

pytest.importorskip("torch")

RECORD = {
    "_type": "chaincomp.RunRecord", "_version": 1, "status": "complete",
    "config": {"order": "P"}, "reference": {"model": "resnet8"},
    "stages": [{"stage": "base", "accuracy": 90.0}, {"stage": "P", "accuracy": 89.0, "config": {"ratio": 0.5}}],
}

# What each command needs besides the fuzzed options ({tmp} is the example's folder).
BASE: dict[str, list[str]] = {
    "count": ["resnet8"],
    "audit": ["{tmp}/claims.toml"],
    "simulate": [],
    "orders": [],
    "fit": ["{tmp}/record.json"],
    "confirm": ["--out-dir", "{tmp}/confirm"],
    "train": ["--order", "D", "--out", "{tmp}/run.json"],
    "profile": ["--method", "P", "--out", "{tmp}/profile.json"],
    "campaign plan": ["--orders", "P", "--out", "{tmp}/planned.json"],
    "campaign run": ["{tmp}/campaign.json"],
}
CAMPAIGN = {"_type": "chaincomp.Campaign", "_version": 1, "command": "",
            "runs": [{"name": "P", "record": "runs/P.json", "config": {"order": "P"}}]}

TOKENS = ["", " ", "0", "1", "-1", "2", "8", "32", "0.5", "1.5", "-0.5", "1e309", "-1e309", "1e-320", "nan", "NaN",
          "inf", "-inf", "1,2", "1,,2", ",", "3,8,8", "3,100000,100000", "0,0,0", "a=b", "=", "Q=nan", "P=0.5",
          "Q=1,2", "D", "DPQE", "PP", "x", "resnet8", "layer1", "same", "counted", "../", ".", "/dev/full",
          "/nonexistent/out.json", "out.json", "plot.png", "plot.xyz", "a" * 300, "é", "-", "--json"]
VALUES = st.one_of(st.sampled_from(TOKENS), st.text(st.characters(blacklist_characters="\x00",
                                                                  blacklist_categories=("Cs",)), max_size=12),
                   st.integers(-10**12, 10**12).map(str), st.floats().map(str))


def _options() -> dict[str, list[tuple[str, bool]]]:
    """(option, takes a value) of every optional argument of each command (``campaign plan``: of a
    subcommand), read off the parser."""
    sub = make_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    parsers = {}
    for name, parser in sub.items():
        if parser._subparsers is None:
            parsers[name] = parser
        else:
            parsers.update({f"{name} {inner}": p for inner, p in
                            parser._subparsers._group_actions[0].choices.items()})  # type: ignore[union-attr]
    return {name: [(action.option_strings[-1], action.nargs != 0) for action in parser._actions
                   if action.option_strings and action.dest != "help"]
            for name, parser in parsers.items()}


OPTIONS = _options()


class _Reached(Exception):
    """The tripwire: the command accepted its options and would train now."""


def _tripwire(*_args: Any, **_kwargs: Any) -> None:
    raise _Reached


@pytest.fixture(autouse=True)
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from bitops import trace
    from trainer import chain, executors, profile

    monkeypatch.setattr(chain, "run_chain", _tripwire)
    # Every campaign (campaign run, confirm) makes its executor once its options are all accepted.
    monkeypatch.setattr(executors.Execution, "executor", _tripwire)
    # Models the memory check lets through are built and traced for real: keep them small (~0.3 GiB).
    monkeypatch.setattr(trace, "MEMORY_FRACTION", 2**28 / trace._available_bytes())
    monkeypatch.setattr(profile, "run_profile", _tripwire)


@pytest.fixture(autouse=True)
def bounded_memory() -> Any:
    """A runaway allocation becomes a MemoryError (a failed test) here, not the machine's OOM killer
    ending the whole run: the address space may grow by 4 GiB at most while a test runs."""
    resource = pytest.importorskip("resource")
    with open("/proc/self/statm", encoding="ascii") as statm:
        used = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + (4 << 30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(argv: list[str]) -> tuple[int | str, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except _Reached:
            code = "reached"
    return code, err.getvalue()


@st.composite
def command_lines(draw: st.DrawFn, command: str) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(OPTIONS[command]), min_size=1, max_size=3, unique=True))
    argv = []
    for option, takes_value in chosen:
        argv += [option, draw(VALUES)] if takes_value else [option]
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("command", list(BASE))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_option_value_is_a_result_or_one_line(command: str, data: st.DataObject) -> None:
    fuzzed = data.draw(command_lines(command))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "claims.toml").write_text(SMALL_CLAIM, encoding="utf-8")
        (tmp / "record.json").write_text(json.dumps(RECORD), encoding="utf-8")
        (tmp / "campaign.json").write_text(json.dumps(CAMPAIGN), encoding="utf-8")
        before = _files(tmp)
        here = os.getcwd()
        os.chdir(tmp)
        try:
            code, err = _run([*command.split(), *[a.format(tmp=tmp) for a in BASE[command]], *fuzzed])
        finally:
            os.chdir(here)
        assert "Traceback" not in err, err
        assert code in (0, 2, "reached"), (code, err)
        if code == 2:
            errors = [line for line in err.splitlines() if "error:" in line]
            assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
            assert _files(tmp) == before, (fuzzed, _files(tmp) - before)
