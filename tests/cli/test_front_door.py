"""The front door: console script, ``python -m chaincomp``, ``--version``, the Python API against
the commands' ``--json``, argparse defaults against the library's dataclasses, and imports that
stay free of torch.

Expected values come from the other route each time: the API result against what the command
prints (parsed JSON), the parser's defaults against the dataclass fields, the imported modules
against a fresh interpreter's ``sys.modules``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import chaincomp
from bitops.errors import InputError
from bitops.policy import Policy
from chaincomp.cli import main, make_parser
from simulator.grid import DEFAULT_BUDGETS
from trainer.options import TrainingOptions
from tests.cli.helpers import SMALL_CLAIM, run_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["chaincomp", "bitops", "simulator", "chaincomp.cli", "trainer.options",
                                    "trainer.run"])
def test_import_does_not_import_torch(module):
    probe = (f"import sys, {module}\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numba')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_version_from_the_console_script_and_python_m():
    installed = ROOT / ".venv" / "bin" / "chaincomp"
    runs = [[sys.executable, "-m", "chaincomp", "--version"]]
    if installed.exists():
        runs.append([str(installed), "--version"])
    for argv in runs:
        done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"chaincomp {chaincomp.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chaincomp.__version__)


def test_api_names():
    assert sorted(chaincomp.__all__) == chaincomp.__all__
    for name in chaincomp.__all__:
        assert getattr(chaincomp, name) is not None
    with pytest.raises(AttributeError):
        chaincomp.no_such_function  # noqa: B018


def _subparser(name: str):
    parser = make_parser()
    return parser._subparsers._group_actions[0].choices[name]


def _defaults(name: str) -> dict[str, object]:
    return {a.dest: a.default for a in _subparser(name)._actions}


@pytest.mark.parametrize("command", ["train", "profile"])
def test_training_defaults_are_the_dataclass_defaults(command):
    defaults = _defaults(command)
    for f in fields(TrainingOptions):
        value = defaults[f.name]
        expected = getattr(TrainingOptions(), f.name)
        if f.name in ("first_last_bits", "input_bits"):
            assert value == "same" and expected is None
        elif f.name in ("thresholds", "exits", "data_dir"):
            assert value is None  # parsed from text; None means the dataclass default
        else:
            assert value == expected, f.name


def test_count_defaults_are_the_policy_defaults():
    defaults = _defaults("count")
    for name in ("bitops_formula", "bn", "elementwise", "nonmac_bits", "aux_bits"):
        assert defaults[name] == getattr(Policy(), name)
    assert defaults["flops"] is False and Policy().ops == "macs"


def test_simulate_budget_default_is_the_library_default():
    text = _defaults("simulate")["budgets"]
    assert tuple(float(v) for v in text.split(",")) == DEFAULT_BUDGETS


def test_every_option_shows_its_default_in_help():
    for name in ("count", "train", "simulate", "confirm"):
        help_text = _subparser(name).format_help()
        assert "%(default)" not in help_text
    assert "(default 0.05)" in " ".join(_subparser("train").format_help().split())  # TrainingOptions.lr


def _cli_json(capsys, *argv: str) -> dict:
    code, out, err = run_main(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_count_api_equals_the_command(capsys):
    argv = ["resnet20", "--w-bits", "2", "--a-bits", "4", "--keep-ratio", "0.5", "--exits", "layer2,layer1",
            "--exit-probs", "0.2,0.3", "--first-last-bits", "8", "--flops"]
    api = chaincomp.count("resnet20", w_bits=2, a_bits=4, keep_ratio=0.5, exits=("layer2", "layer1"),
                          exit_probs=(0.2, 0.3), first_last_bits=8, ops="flops")
    assert api.to_dict() == _cli_json(capsys, "count", *argv)


def test_count_api_names_an_unknown_option():
    with pytest.raises(InputError, match="wbits is not an option of count"):
        chaincomp.count("resnet20", wbits=2)


def test_audit_api_equals_the_command(capsys, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(SMALL_CLAIM, encoding="utf-8")
    api = chaincomp.audit(claims, conventions={"first_last_bits": 32})
    assert api.to_dict() == _cli_json(capsys, "audit", str(claims), "--convention", "first_last_bits=32")


def test_simulate_and_orders_api_equal_the_commands(capsys):
    api = chaincomp.simulate(orders=["DPQE", "PDQE", "QPDE"], budgets=[1, 4], grid={"P": (0.25, 0.5)})
    cli = _cli_json(capsys, "simulate", "--orders", "DPQE,PDQE,QPDE", "--budget", "1,4", "--grid", "P=0.25,0.5")
    assert api.to_dict() == cli
    assert chaincomp.orders(budgets="1,2").to_dict() == _cli_json(capsys, "orders", "--budget", "1,2")


def test_python_m_chaincomp_runs_a_command():
    done = subprocess.run([sys.executable, "-m", "chaincomp", "count", "resnet8", "--json"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == chaincomp.count("resnet8").to_dict()


def test_main_returns_an_exit_code_without_raising(capsys):
    assert main(["count", "resnet8", "--keep-ratio", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["chaincomp count: error: --keep-ratio must be in (0, 1], got 2.0"]
