"""``chaincomp confirm``: which orders it trains, at which point, and how it compares.

Expected values come from routes other than the confirm code:

* the orders and their points from ``chaincomp simulate --json`` at the same budget: its ranking
  (positions 1, 6, 10, 15, 19, 24 of 24 for six orders spread evenly: floor(23 k / 5 + 0.5)) and
  each order's Pareto front, from which the max-BitOpsCR point within the budget (or, failing
  that, the most accurate point) is picked here;
* the trainer is replaced by a fake ``train_node`` that "measures" the chain model's own prediction
  at the config it is handed (``simulator.model.predict`` of that single point) plus a known
  offset per order, so each error must equal its offset, and Kendall's tau is counted here pair by
  pair (tau-b);
* one real confirm (two orders, digits at 8x8, one epoch per stage): the measured BitOpsCR of orders
  without E must equal the predicted one exactly, since the cost model is exact on both sides;
* bad input one rule per case: exit code 2, one line on stderr, no training.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitops.models import ModelSpec, load_model_table
from simulator.model import Grid, predict
from simulator.profile import parse_profile
from tests.simulator.fitting import TRUE_ACCURACY, TRUE_SCALE, base_profile, run_cli, with_terms

BUDGET = 1.0
# Every order of 1 to 4 distinct letters, numbered: the fake trainer's errors are functions of it.
NUMBERED = ["".join(p) for k in range(1, 5) for p in itertools.permutations("DPQE", k)]


def offset(order: str) -> float:
    """The fake trainer's accuracy error for an order: known, different across orders."""
    return 0.5 * (NUMBERED.index(order) % 7) - 1.5


def factor(order: str) -> float:
    """The fake trainer's BitOpsCR ratio (measured / predicted) for an order."""
    return 1.0 + 0.05 * (NUMBERED.index(order) % 5)


@pytest.fixture
def profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(with_terms(base_profile(), TRUE_ACCURACY, TRUE_SCALE)), encoding="utf-8")
    return path


@pytest.fixture
def fake_trainer(monkeypatch, profile_file):
    """Replace ``trainer.executors.train_node``, where every training of a campaign starts; returns
    the list of runs "trained" (order, resume, config), one per order (its last stage)."""
    from trainer import executors
    from trainer.config import ChainConfig

    profile = parse_profile(json.loads(profile_file.read_text()))
    shape = tuple(profile.setup["input_shape"])
    calls: list[tuple[str, bool, Any]] = []

    def load(name: str):
        return load_model_table(ModelSpec(name, input_shape=shape, num_classes=10))

    def fake_train_node(config_json, stages, parent, threads):
        config = ChainConfig.from_json(config_json)
        if stages == 0:
            return {"_type": "chaincomp.RunRecord", "_version": 1, "status": "running", "config": config_json,
                    "stages": [{"stage": "base", "accuracy": 90.5, "cost": {"bitops_cr": 1.0, "cr": 1.0}}]}, b""
        if stages < len(config.order):  # a stage on the way: confirm reads the final one only
            return {"stage": config.order[stages - 1], "accuracy": 0.0, "cost": {"bitops_cr": 1.0, "cr": 1.0}}, b""
        calls.append((config.order, False, config))
        values = {"D": config.distill.student, "P": config.prune.ratio, "Q": config.quant.w_bits,
                  "E": config.exits.threshold}
        point = predict(profile, config.order, Grid({m: (values[m],) for m in config.order}), load, config.teacher)
        return {"stage": config.order[-1], "accuracy": float(point.accuracy[0]) + offset(config.order),
                "cost": {"bitops_cr": float(point.bitops_cr[0]) * factor(config.order), "cr": float(point.cr[0])}}, b""

    monkeypatch.setattr(executors, "train_node", fake_train_node)
    return calls


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Tau-b counted pair by pair: (concordant - discordant) / sqrt((n0 - ties in x)(n0 - ties in y))."""
    concordant = discordant = tied_x = tied_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        tied_x += dx == 0
        tied_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    pairs = len(x) * (len(x) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_x) * (pairs - tied_y))


def confirm(profile_file: Path, out_dir: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["confirm", "--profile", str(profile_file), "--out-dir", str(out_dir), *extra])


def simulated(profile_file: Path, budget: float) -> dict[str, Any]:
    rc, stdout, stderr = run_cli(["simulate", "--profile", str(profile_file), "--budget", str(budget), "--json"])
    assert rc == 0, stderr
    return json.loads(stdout)


def expected_point(front: list[dict[str, Any]], base: float, budget: float) -> tuple[dict[str, Any], bool]:
    within = [p for p in front if base - p["accuracy"] <= budget + 1e-12]
    if within:
        return max(within, key=lambda p: p["bitops_cr"]), True
    return max(front, key=lambda p: p["accuracy"]), False


# ---- selection, errors, rank correlation ---------------------------------------------------------

@pytest.mark.parametrize("budget", [BUDGET, 0.01])
def test_orders_points_errors_and_tau(budget, profile_file, fake_trainer, tmp_path):
    rc, stdout, stderr = confirm(profile_file, tmp_path / "runs", "--budget", str(budget), "--json")
    assert rc == 0, stderr
    report = json.loads(stdout)
    sim = simulated(profile_file, budget)
    ranking = [r["order"] for r in sim["ranking"]]
    places = [1, 6, 10, 15, 19, 24]
    assert [r["rank"] for r in report["orders"]] == places
    assert [r["order"] for r in report["orders"]] == [ranking[p - 1] for p in places]
    assert sorted(call[0] for call in fake_trainer) == sorted(ranking[p - 1] for p in places)  # each trained once
    for row in report["orders"]:
        point, within = expected_point(sim["orders"][row["order"]]["front"], sim["profile"]["base_accuracy"], budget)
        assert row["within_budget"] == within
        assert row["settings"] == {s["stage"]: next(v for k, v in s.items() if k != "stage") for s in point["settings"]}
        assert row["predicted"]["accuracy"] == pytest.approx(point["accuracy"], abs=1e-12)
        assert row["predicted"]["bitops_cr"] == pytest.approx(point["bitops_cr"], rel=1e-12)
        assert row["error"]["accuracy"] == pytest.approx(offset(row["order"]), abs=1e-9)
        assert row["error"]["bitops_cr_ratio"] == pytest.approx(factor(row["order"]), rel=1e-9)
        assert row["record"] == str(tmp_path / "runs" / f"{row['order']}.json") and not row["reused"]
    if budget == 0.01:  # every deltas is negative: nothing is within a hundredth of a point
        assert not any(r["within_budget"] for r in report["orders"])
    errors = [offset(r["order"]) for r in report["orders"]]
    summary = report["summary"]
    assert summary["accuracy"]["mean_abs_error"] == pytest.approx(np.mean(np.abs(errors)))
    assert summary["accuracy"]["bias"] == pytest.approx(np.mean(errors))
    assert summary["accuracy"]["rmse"] == pytest.approx(math.sqrt(np.mean(np.square(errors))))
    predicted = [r["predicted"]["accuracy"] for r in report["orders"]]
    measured = [p + e for p, e in zip(predicted, errors)]
    assert summary["accuracy"]["kendall"]["tau"] == pytest.approx(kendall_tau_b(predicted, measured))
    predicted_cr = [r["predicted"]["bitops_cr"] for r in report["orders"]]
    measured_cr = [p * factor(r["order"]) for p, r in zip(predicted_cr, report["orders"])]
    assert summary["bitops_cr"]["kendall"]["tau"] == pytest.approx(kendall_tau_b(predicted_cr, measured_cr))
    ratios = [factor(r["order"]) for r in report["orders"]]
    assert summary["bitops_cr"]["geometric_mean_ratio"] == pytest.approx(math.exp(np.mean(np.log(ratios))))
    # the ranking's score: BitOpsCR where the loss (against the run's own base, 90.5) is within the budget
    measured_scores = [cr if 90.5 - acc <= budget else 1.0 for cr, acc in zip(measured_cr, measured)]
    assert [r["measured_score"] for r in report["orders"]] == pytest.approx(measured_scores, rel=1e-12)
    assert summary["ranking"]["within_budget_measured"] == sum(90.5 - acc <= budget for acc in measured)
    assert summary["ranking"]["within_budget_predicted"] == sum(r["within_budget"] for r in report["orders"])
    tau = summary["ranking"]["kendall"]["tau"]
    predicted_scores = [r["score"] for r in report["orders"]]
    if len(set(predicted_scores)) > 1 and len(set(measured_scores)) > 1:
        assert tau == pytest.approx(kendall_tau_b(predicted_scores, measured_scores))
    else:
        assert tau is None



def test_equal_predictions_are_a_tie_not_a_ranking(tmp_path, fake_trainer):
    # No interaction terms: the most accurate point of every order is the same combination; the
    # model sums its stages in letter order, so these awkward deltas (those of a measured profile,
    # thirds of a point on 360 test images) give the same float in every order: a tie, no tau.
    data = base_profile()
    data["base"]["accuracy"] = 99.30555555555556
    for method, value, delta in (("D", "resnet8", 0.13888888888888573), ("P", 0.25, -0.13888888888889284),
                                 ("Q", 8, -1.250000000000007), ("E", 0.95, -3.3113691699782066e-07)):
        next(p for p in data["methods"][method]["points"] if p["value"] == value)["delta"] = delta
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    rc, stdout, stderr = confirm(path, tmp_path / "runs", "--orders", "DPQE,DQPE,EDPQ,DEQP", "--budget", "0.01",
                                 "--json")
    assert rc == 0, stderr
    report = json.loads(stdout)
    predicted = [r["predicted"]["accuracy"] for r in report["orders"]]
    assert len(set(predicted)) == 1
    assert report["summary"]["accuracy"]["kendall"] == {"tau": None, "p_value": None}


def test_the_config_trained_is_the_profiles_setup_and_the_point(profile_file, fake_trainer, tmp_path):
    rc, stdout, stderr = confirm(profile_file, tmp_path / "runs", "--orders", "DPQE,EQPD", "--epochs", "3",
                                 "--finetune-epochs", "2", "--json")
    assert rc == 0, stderr
    rows = {r["order"]: r for r in json.loads(stdout)["orders"]}
    profile = base_profile()
    for order, _, config in fake_trainer:
        settings = rows[order]["settings"]
        assert config.teacher == "resnet20" and config.data.dataset == "digits" and config.data.image_size == 16
        assert (config.base.epochs, config.prune.finetune_epochs, config.quant.finetune_epochs) == (3, 2, 2)
        assert config.distill.student == settings["D"] and config.prune.ratio == settings["P"]
        assert config.quant.w_bits == settings["Q"] and config.quant.a_bits == profile["methods"]["Q"]["a_bits"]
        assert config.exits.threshold == settings["E"] and config.exits.exits == ("layer1", "layer2")
        assert set(config.exits.thresholds) == {0.5, 0.8, 0.95, settings["E"]}


def test_base_epochs_default_to_the_profiles_base_training(tmp_path, fake_trainer):
    data = with_terms(base_profile(), TRUE_ACCURACY, TRUE_SCALE)
    data["setup"]["base_training"] = {"epochs": 7, "lr": 0.02}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    rc, _, stderr = confirm(path, tmp_path / "runs", "--orders", "PQ", "--top", "1")
    assert rc == 0, stderr
    assert (fake_trainer[0][2].base.epochs, fake_trainer[0][2].base.lr) == (7, 0.02)


# ---- resuming ------------------------------------------------------------------------------------

def test_complete_records_are_reused_and_unfinished_ones_trained_again(profile_file, fake_trainer, tmp_path):
    runs = tmp_path / "runs"
    rc, first, stderr = confirm(profile_file, runs, "--orders", "PQ,QP", "--json")
    assert rc == 0, stderr
    assert sorted(c[0] for c in fake_trainer) == ["PQ", "QP"]
    fake_trainer.clear()
    rc, second, stderr = confirm(profile_file, runs, "--orders", "PQ,QP", "--json")
    assert rc == 0 and fake_trainer == []
    again = json.loads(second)
    assert all(r["reused"] for r in again["orders"])
    assert again["summary"] == json.loads(first)["summary"]
    record = json.loads((runs / "QP.json").read_text())
    record["status"] = "interrupted"
    (runs / "QP.json").write_text(json.dumps(record))
    rc, _, stderr = confirm(profile_file, runs, "--orders", "PQ,QP")
    assert rc == 0, stderr
    assert [(c[0], c[1]) for c in fake_trainer] == [("QP", False)]


def test_a_record_of_other_settings_is_refused(profile_file, fake_trainer, tmp_path):
    runs = tmp_path / "runs"
    assert confirm(profile_file, runs, "--orders", "PQ", "--top", "1")[0] == 0
    fake_trainer.clear()
    rc, stdout, stderr = confirm(profile_file, runs, "--orders", "PQ", "--top", "1", "--finetune-epochs", "3")
    assert rc == 2 and stdout == "" and stderr.count("\n") == 1 and "with other settings" in stderr
    assert fake_trainer == []


def test_a_conflicting_record_stops_confirm_before_it_trains_anything(profile_file, fake_trainer, tmp_path):
    runs = tmp_path / "runs"
    assert confirm(profile_file, runs, "--orders", "QP", "--top", "1", "--finetune-epochs", "3")[0] == 0
    fake_trainer.clear()
    # PQ comes first and has no record; QP's record was made with other settings
    rc, stdout, stderr = confirm(profile_file, runs, "--orders", "PQ,QP")
    assert rc == 2 and "'QP'" in stderr and "with other settings" in stderr
    assert fake_trainer == [] and not (runs / "PQ.json").exists()


# ---- text and plot -------------------------------------------------------------------------------

def test_table_and_plot(profile_file, fake_trainer, tmp_path):
    plot = tmp_path / "confirm.png"
    rc, stdout, stderr = confirm(profile_file, tmp_path / "runs", "--orders", "DPQE,DQPE,EQPD", "--plot", str(plot))
    assert rc == 0, stderr
    lines = stdout.splitlines()
    assert sum(line.split()[1:2] in (["DPQE"], ["DQPE"], ["EQPD"]) for line in lines[2:5]) == 3
    assert "Kendall tau" in stdout and "mean |error|" in stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["--top", "0"], "--top must be an integer >= 1, got 0"),
    (["--top", "25"], "--top must be at most the number of orders ranked (24), got 25"),
    (["--orders", "PQ,QP", "--top", "3"], "--top must be at most the number of orders ranked (2), got 3"),
    (["--budget", "0"], "--budget must be accuracy losses in (0, 100] points, got 0"),
    (["--budget", "0.5,1"], "--budget takes one accuracy-loss budget"),
    (["--orders", "PQP"], "repeats a letter"),
    (["--epochs", "-1"], "--epochs must be an integer >= 0, got -1"),
    (["--lr", "0"], "--lr must be"),
])
def test_bad_options_are_refused_before_training(argv, says, profile_file, fake_trainer, tmp_path):
    rc, stdout, stderr = confirm(profile_file, tmp_path / "runs", *argv)
    assert rc == 2 and stdout == ""
    assert stderr.startswith("chaincomp confirm: error: ") and stderr.count("\n") == 1 and says in stderr
    assert fake_trainer == []


def test_out_dir_in_a_missing_folder_is_refused(profile_file, fake_trainer, tmp_path):
    rc, _, stderr = confirm(profile_file, tmp_path / "no" / "runs")
    assert rc == 2 and stderr.count("\n") == 1 and "does not exist" in stderr
    assert fake_trainer == [] and not (tmp_path / "no").exists()


def test_out_dir_that_is_a_file_is_refused(profile_file, fake_trainer, tmp_path):
    (tmp_path / "runs").write_text("")
    rc, _, stderr = confirm(profile_file, tmp_path / "runs")
    assert rc == 2 and "is a file" in stderr and fake_trainer == []


# ---- one real confirm ----------------------------------------------------------------------------

@pytest.mark.slow
def test_real_confirm_of_two_orders(tmp_path):
    """PQ and QP trained for real (ResNet8 on digits at 8x8, one epoch per stage, ~10 s)."""
    data = base_profile()
    data["setup"] = {"teacher": "resnet8", "student": "resnet8", "dataset": "digits", "input_shape": [3, 8, 8],
                     "num_classes": 10}
    data["methods"] = {m: data["methods"][m] for m in "PQ"}
    profile = tmp_path / "tiny.json"
    profile.write_text(json.dumps(data), encoding="utf-8")
    runs = tmp_path / "runs"
    rc, stdout, stderr = confirm(profile, runs, "--budget", "100", "--epochs", "1",  # all: PQ and QP
                                 "--finetune-epochs", "1", "--device", "cpu", "--json")
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert sorted(r["order"] for r in report["orders"]) == ["PQ", "QP"]
    for row in report["orders"]:
        record = json.loads((runs / f"{row['order']}.json").read_text())
        assert record["status"] == "complete" and record["config"]["order"] == row["order"]
        assert row["settings"] == {"P": 0.75, "Q": 1}  # the cheapest point: everything is within 100 points
        assert row["measured"]["accuracy"] == record["stages"][-1]["accuracy"]
        # No E: the cost is exact on both sides (bitops on the real model, bitops on the table).
        assert row["measured"]["bitops_cr"] == pytest.approx(row["predicted"]["bitops_cr"], rel=1e-9)
        assert row["measured"]["cr"] == pytest.approx(row["predicted"]["cr"], rel=1e-9)


def test_a_second_confirm_into_the_same_folder_is_refused(profile_file, fake_trainer, tmp_path):
    import os

    from bitops.jsonio import hold_lock

    with hold_lock("out_dir", tmp_path / "runs"):  # a first confirm is training into this folder
        rc, _, stderr = confirm(profile_file, tmp_path / "runs")
    assert rc == 2 and stderr.count("\n") == 1
    assert f"is being written by process {os.getpid()}" in stderr and "--out-dir" in stderr
    assert fake_trainer == []
