"""``chaincomp profile`` end to end: the stage-profile file, its points, and the refusals.

Expected values come from routes other than the profile code:

* the file's layout from ``trainer/profile.py``'s docstring (the documented format), read back
  with ``json``; the grids from the command's documented defaults and the options passed;
* the base model and the first P point re-created step by step with ``trainer.data``,
  ``bitops.zoo`` and ``trainer.stages`` (same seed, same order of random draws), and accuracy
  counted here from the logits; the parameter count of models pruned at each grid value;
* the spread of two seeds from the one-seed run's base accuracy (the same seed-0 base);
* E's exit rates: they sum to 1 and the share reaching the final classifier cannot fall as the
  threshold rises (max-softmax exits);
* bad input: ``trainer.executors.train_node`` (where every training starts) replaced by a function
  that records the call, so a refusal is proven to come before any training; Ctrl-C by a stage that raises KeyboardInterrupt.

Real profiles run once per module (module-scoped fixtures) on digits at 8x8 with 1-3 epochs.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bitops import zoo
from bitops.architectures import exit_points
from chaincomp.cli import main
from trainer import chain as chain_mod
from trainer import executors
from trainer import profile as profile_mod
from trainer.chain import seed_everything
from trainer.config import DataConfig, PruneConfig, TrainConfig
from trainer.data import load_data
from trainer.stages import prune, train_base

CPU = torch.device("cpu")
SMALL = ["--epochs", "3", "--image-size", "8", "--device", "cpu", "--threads-per-run", "1"]  # as the by-hand models train
THRESHOLDS = (0.5, 0.9, 0.99)  # not the default --thresholds, so E's grid must follow the option
TOP_KEYS = {"_type", "_version", "provenance", "setup", "base", "methods", "interactions"}
POINT_KEYS = {"value", "accuracy", "accuracy_std", "delta"}


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``chaincomp.cli.main`` with stdout and stderr captured (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pqe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pqe") / "p.json"
    rc, stdout, stderr = run_cli(["profile", "--method", "PQE", *SMALL, "--finetune-epochs", "1", "--exit-epochs", "2",
                                  "--thresholds", ",".join(map(str, THRESHOLDS)), "--out", str(out)])
    assert rc == 0, stderr
    return {"profile": read(out), "stdout": stdout, "stderr": stderr}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("seeds") / "p.json"
    rc, _, stderr = run_cli(["profile", "--method", "P", "--grid", "0.3", "--seeds", "0,1", *SMALL,
                             "--finetune-epochs", "1", "--out", str(out)])
    assert rc == 0, stderr
    return read(out)


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("d") / "p.json"
    rc, _, stderr = run_cli(["profile", "--method", "D", "--grid", "resnet8,resnet20", *SMALL, "--distill-epochs", "1",
                             "--out", str(out)])
    assert rc == 0, stderr
    return read(out)


@pytest.fixture(scope="module")
def base_by_hand() -> dict[str, Any]:
    """The seed-0 base model built step by step, in the order a run draws its random numbers: the
    reference teacher is built first (its initial weights are drawn, then traced for the costs),
    then the model that trains."""
    seed_everything(0)
    data = load_data(DataConfig(dataset="digits", image_size=8, seed=0))
    zoo.build("resnet20", num_classes=data.num_classes)  # the reference the costs are counted against
    model = zoo.build("resnet20", num_classes=data.num_classes)
    train_base(model, TrainConfig(epochs=3, lr=0.05), data, CPU, progress=False)
    return {"model": model, "data": data}


def top1(model: torch.nn.Module, loader) -> float:
    """Top-1 % counted here: argmax of the final logits against the labels."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            out = model(x)
            logits = out[-1] if isinstance(out, (list, tuple)) else out
            correct += int((logits.argmax(dim=1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- 1. the PQE profile --------------------------------------------------------------------------

@pytest.mark.slow
def test_profile_has_the_documented_layout(pqe):
    p = pqe["profile"]
    assert set(p) == TOP_KEYS
    assert (p["_type"], p["_version"]) == ("chaincomp.StageProfile", 1)
    assert p["provenance"]["source"] == "measured"
    assert p["provenance"]["seeds"] == [0]
    assert {"command", "versions"} <= set(p["provenance"])
    assert p["provenance"]["versions"]["torch"] == torch.__version__
    setup = p["setup"]
    assert {"teacher", "student", "dataset", "input_shape", "num_classes"} <= set(setup)
    assert (setup["teacher"], setup["dataset"], setup["input_shape"], setup["num_classes"]) == \
        ("resnet20", "digits", [3, 8, 8], 10)
    assert set(p["base"]) == {"model", "accuracy", "accuracy_std"}
    assert p["base"]["model"] == "resnet20"
    assert p["interactions"] == []
    assert list(p["methods"]) == ["P", "Q", "E"]
    params = {m: entry["parameter"] for m, entry in p["methods"].items()}
    assert params == {"P": "prune_ratio", "Q": "w_bits", "E": "threshold"}
    assert p["methods"]["Q"]["a_bits"] == 8  # the --a-bits default, beside "parameter"
    for method, entry in p["methods"].items():
        for point in entry["points"]:
            assert set(point) == POINT_KEYS | ({"exit_rates"} if method == "E" else set())
            assert 0.0 <= point["accuracy"] <= 100.0


@pytest.mark.slow
def test_profile_grids_are_the_defaults_and_the_thresholds(pqe):
    methods = pqe["profile"]["methods"]
    assert [pt["value"] for pt in methods["P"]["points"]] == [0.25, 0.5, 0.75]
    assert [pt["value"] for pt in methods["Q"]["points"]] == [1, 2, 4, 8]
    assert all(type(pt["value"]) is int for pt in methods["Q"]["points"])  # weight bits stay integers
    assert [pt["value"] for pt in methods["E"]["points"]] == list(THRESHOLDS)


@pytest.mark.slow
def test_profile_base_learns_digits_and_deltas_are_differences(pqe):
    p = pqe["profile"]
    base = p["base"]
    assert base["accuracy"] > 50.0  # 10 classes: chance is 10 %
    assert base["accuracy_std"] is None  # one seed
    for entry in p["methods"].values():
        for point in entry["points"]:
            assert point["accuracy_std"] is None
            assert point["delta"] == pytest.approx(point["accuracy"] - base["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_profile_exit_rates(pqe):
    e = pqe["profile"]["methods"]["E"]
    assert e["exits"] == list(exit_points("resnet20"))  # every exit point without --exits
    finals = []
    for point in e["points"]:
        rates = point["exit_rates"]
        assert list(rates) == [*e["exits"], "final"]
        assert all(0.0 <= r <= 1.0 for r in rates.values())
        assert sum(rates.values()) == pytest.approx(1.0, abs=1e-9)
        finals.append(rates["final"])
    # A sample confident enough to leave at a threshold leaves at every lower one too.
    assert finals == sorted(finals)


@pytest.mark.slow
def test_profile_prints_one_line_per_point(pqe):
    p, lines = pqe["profile"], pqe["stdout"].splitlines()
    assert lines[0].startswith("base resnet20:") and f"{p['base']['accuracy']:.2f}" in lines[0]
    rows = [line.split() for line in lines if line[:1] in "DPQE" and line.split()[0] in "DPQE"]
    expected = [(m, str(pt["value"]), f"{pt['accuracy']:.2f}")
                for m, entry in p["methods"].items() for pt in entry["points"]]
    assert len(rows) == len(expected) == 3 + 4 + len(THRESHOLDS)
    assert [tuple(r[:3]) for r in rows] == expected
    assert "Traceback" not in pqe["stderr"]


@pytest.mark.slow
def test_profile_records_its_own_command(pqe):
    command = pqe["profile"]["provenance"]["command"]
    assert command.startswith("chaincomp profile ") and "--method PQE" in command


# ---- 2. an independent P point -------------------------------------------------------------------

@pytest.mark.slow
def test_base_and_first_p_point_reproduce_by_hand(pqe, base_by_hand):
    """Single-threaded CPU training with the same seed and the same order of draws is repeatable,
    so the base model and the first P point (pruned right after the base, as the profile does)
    must come out to the same accuracy, counted here from the logits."""
    p = pqe["profile"]
    model, data = base_by_hand["model"], base_by_hand["data"]
    assert top1(model, data.test) == pytest.approx(p["base"]["accuracy"], abs=1e-9)
    top1(model, data.val)  # a run measures the test split, then the validation split: each loader draws a seed
    pruned = prune(copy.deepcopy(model), PruneConfig(ratio=0.25, finetune_epochs=1), data, CPU, 0.05, progress=False)
    first = p["methods"]["P"]["points"][0]
    assert first["value"] == 0.25
    assert top1(pruned, data.test) == pytest.approx(first["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_larger_pruning_ratio_never_has_more_parameters(base_by_hand):
    model, data = base_by_hand["model"], base_by_hand["data"]
    counts = [n_params(model)]
    for ratio in profile_mod.DEFAULT_GRIDS["P"]:
        counts.append(n_params(prune(model, PruneConfig(ratio=ratio, finetune_epochs=0), data, CPU, 0.05,
                                     progress=False)))
    assert counts == sorted(counts, reverse=True)
    assert len(set(counts)) == len(counts)  # 25 % steps of 16/32/64-channel groups each remove channels


@pytest.mark.slow
def test_grid_gives_exactly_its_points(two_seeds):
    points = two_seeds["methods"]["P"]["points"]
    assert [pt["value"] for pt in points] == [0.3]
    assert list(two_seeds["methods"]) == ["P"]


# ---- 3. seeds ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_seeds_give_a_spread(two_seeds, pqe):
    assert two_seeds["provenance"]["seeds"] == [0, 1]
    point = two_seeds["methods"]["P"]["points"][0]
    assert point["accuracy_std"] is not None and point["accuracy_std"] >= 0
    assert point["delta"] == pytest.approx(point["accuracy"] - two_seeds["base"]["accuracy"], abs=1e-9)
    # Seed 0's base is the one-seed run's base (same options), so seed 1's follows from the mean,
    # and the sample standard deviation of two values is |a - b| / sqrt(2).
    base0 = pqe["profile"]["base"]["accuracy"]
    base1 = 2 * two_seeds["base"]["accuracy"] - base0
    assert 0.0 <= base1 <= 100.0
    assert two_seeds["base"]["accuracy_std"] == pytest.approx(abs(base0 - base1) / math.sqrt(2), abs=1e-6)


# ---- 4. D over students --------------------------------------------------------------------------

@pytest.mark.slow
def test_distillation_profiles_each_student(students):
    d = students["methods"]["D"]
    assert d["parameter"] == "student"
    assert [pt["value"] for pt in d["points"]] == ["resnet8", "resnet20"]
    for point in d["points"]:
        assert 0.0 <= point["accuracy"] <= 100.0
        assert point["delta"] == pytest.approx(point["accuracy"] - students["base"]["accuracy"], abs=1e-9)


# ---- 5. refusals before any training -------------------------------------------------------------

class _Trained(Exception):
    """Raised by the stand-in for train_base: reaching it means a refusal came too late."""


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def fake_train_node(config: dict[str, Any], stages: int, *args: Any) -> None:
        calls.append((config["order"], stages))  # what would have trained
        raise _Trained("a training started")

    monkeypatch.setattr(executors, "train_node", fake_train_node)
    return calls


def refuse(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], calls: list[Any]) -> str:
    """Run ``profile`` expecting a refusal; return the one stderr line."""
    try:
        rc = main(["profile", *argv, "--image-size", "8", "--device", "cpu", "--out", str(out)])
    except _Trained:
        rc = "trained"
    captured = capsys.readouterr()
    assert not calls, f"the base model was trained before the refusal (stderr: {captured.err!r})"
    assert rc == 2
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaincomp profile: error: "), captured.err
    assert captured.out == ""
    assert not out.exists()
    return lines[0]


BAD = {
    "unknown method": (["--method", "X"], "--method"),
    "repeated method": (["--method", "PP"], "--method"),
    "empty method": (["--method", ""], "--method"),
    "grid with two methods": (["--method", "PQ", "--grid", "0.5"], "single --method"),
    "non-number in grid": (["--method", "P", "--grid", "0.5,abc"], "0.5,abc"),
    "pruning ratio 1": (["--method", "P", "--grid", "1.0"], "1.0"),
    "pruning ratio nan": (["--method", "P", "--grid", "nan"], "nan"),
    "0 weight bits": (["--method", "Q", "--grid", "0"], "got 0"),
    "33 weight bits": (["--method", "Q", "--grid", "33"], "33"),
    "fractional weight bits": (["--method", "Q", "--grid", "1.5"], "1.5"),
    "threshold 0": (["--method", "E", "--grid", "0"], "0"),
    "unknown student": (["--method", "D", "--grid", "nosuchnet"], "nosuchnet"),
    "non-integer seed": (["--method", "P", "--seeds", "a"], "--seeds"),
    "negative seed": (["--method", "P", "--seeds", "-1"], "-1"),
    "empty grid": (["--method", "P", "--grid", ""], "--grid"),
}


@pytest.mark.parametrize("argv, says", BAD.values(), ids=BAD.keys())
def test_bad_input_is_refused_before_training(argv, says, tmp_path, capsys, no_training):
    line = refuse(argv, tmp_path / "p.json", capsys, no_training)
    assert says in line


def test_out_in_missing_directory_is_refused(tmp_path, capsys, no_training):
    out = tmp_path / "missing" / "p.json"
    line = refuse(["--method", "P"], out, capsys, no_training)
    assert "does not exist" in line
    assert not out.parent.exists()


# Refused before the base model trains: every grid point's model checks, and every seed.
EARLY = {
    "pruning ratio that empties a group": ["--method", "P", "--grid", "0.25,0.95"],
    "unknown exit point": ["--method", "E", "--exits", "nosuch"],
    "bad second seed": ["--method", "P", "--seeds", "0,-1"],
}


@pytest.mark.parametrize("argv", [pytest.param(argv, id=name) for name, argv in EARLY.items()])
def test_refused_before_training(argv, tmp_path, capsys, no_training):
    refuse(argv, tmp_path / "p.json", capsys, no_training)


# ---- 6. Ctrl-C -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_mid_profile_keeps_the_finished_runs_and_continues(tmp_path, capsys, monkeypatch):
    """Real base training and a real first P point, then Ctrl-C in the second; the same command
    then trains only the second point (the base is kept too) and writes the profile."""
    real_prune, calls = chain_mod.prune, []

    def prune_then_interrupt(*args: Any, **kwargs: Any):
        calls.append(args[1].ratio)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_prune(*args, **kwargs)

    monkeypatch.setattr(chain_mod, "prune", prune_then_interrupt)
    out = tmp_path / "p.json"
    argv = ["profile", "--method", "P", "--grid", "0.25,0.5", "--epochs", "1", "--finetune-epochs", "1",
            "--image-size", "8", "--device", "cpu", "--out", str(out)]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 130
    assert sorted(calls) == [0.25, 0.5]
    assert "interrupted" in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
    assert not out.exists()  # no profile, and no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.runs"]
    finished = sorted(p.name for p in (tmp_path / "p.runs" / "runs").glob("*.json"))
    assert len(finished) == 1
    monkeypatch.setattr(chain_mod, "prune", real_prune)
    trained: list[int] = []
    real_node = executors.train_node
    monkeypatch.setattr(executors, "train_node", lambda c, stages, *a: trained.append(stages) or real_node(c, stages, *a))
    assert main(argv) == 0
    assert trained == [1]  # the missing point only: the base came from the kept prefix
    assert [pt["value"] for pt in read(out)["methods"]["P"]["points"]] == [0.25, 0.5]


def test_an_existing_profile_is_never_overwritten(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "train_node", lambda *a, **k: pytest.fail("trained before refusing"))
    out = tmp_path / "p.json"
    out.write_text("previous profile\n", encoding="utf-8")
    rc = main(["profile", "--method", "E", "--image-size", "8", "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and "already exists" in captured.err
    assert "Traceback" not in captured.err
    assert out.read_text(encoding="utf-8") == "previous profile\n"
    assert list(tmp_path.iterdir()) == [out]
