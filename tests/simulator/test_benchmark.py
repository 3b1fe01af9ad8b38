"""``chaincomp benchmark`` on the hand profile, with the trainings replaced by records made from a
known rule (each measured accuracy is the prediction plus a fixed offset per order and seed), so
every statistic of the report can be recomputed here by another route: scipy's tau and rho on the
raw values, numpy's errors, a count of the intervals that hold the measurement, the picks by
hand. One slow test trains for real (one order, one epoch per stage) and checks the report reads
the records the campaign wrote, and that running it again reuses them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from chaincomp.cli import main
from simulator import benchmark as bench
from tests.simulator.profiles import BASE_ACCURACY, hand_profile

ORDERS = ["DPQE", "PDQE", "QPDE", "EDPQ", "PQED", "DEPQ"]
BUDGETS = (4.0, 8.0)
SEEDS = (2, 3)
Z90 = 1.6448536269514722


def profile_with_a_term(tmp_path: Path) -> Path:
    data = hand_profile()
    data["provenance"]["seeds"] = [0, 1]
    data["base"]["accuracy_std"] = 0.5
    data["interactions"] = [{"before": "P", "after": "Q", "accuracy": -1.5, "source": "hand"}]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def without_its_terms(path: Path) -> Path:
    """The profile at ``path`` with no interaction terms, written beside it (a challenger)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["interactions"] = []
    rival = path.parent / "rival.json"
    rival.write_text(json.dumps(data), encoding="utf-8")
    return rival


def offset(order: str, seed: int) -> float:
    """The measured accuracy's distance from the prediction: distinct per order and seed."""
    return ((sum(map(ord, order)) * (seed + 3)) % 17 - 8) / 4.0


def cr_factor(order: str, seed: int) -> float:
    return 0.9 + ((sum(map(ord, order)) + seed) % 5) / 25


def fake_records(points, seeds, *args, **kwargs):
    records = {}
    for p in points:
        for s in seeds:
            acc = p.accuracy + offset(p.order, s)
            records[(p.run, s)] = {"stages": [{"accuracy": BASE_ACCURACY + (s - 2) * 0.5},
                                              {"accuracy": acc, "cost": {"bitops_cr": p.bitops_cr * cr_factor(p.order, s)}}]}
    return records


@pytest.fixture
def report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_train", fake_records)
    path = profile_with_a_term(tmp_path)
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "300", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def by_seed(report, seed):
    return [m for m in report["measurements"] if m["seed"] == seed]


def test_operating_points_are_the_best_within_each_budget(report):
    """Each point is its order's largest predicted BitOpsCR whose predicted loss is within the budget."""
    from simulator.simulate import simulate

    sim = simulate(str(Path(report["profile"]["path"])), budgets=BUDGETS, orders=ORDERS).to_dict()
    for m in by_seed(report, 2):
        b = BUDGETS.index(m["budget"])
        assert m["predicted"]["bitops_cr"] == pytest.approx(sim["budget_table"][m["order"]][b], rel=1e-12)
        assert BASE_ACCURACY - m["predicted"]["accuracy"] <= m["budget"] + 1e-9
    expected = sum(v is not None for row in sim["budget_table"].values() for v in row)
    assert report["points"] == expected == len(by_seed(report, 2))


def test_simulator_statistics_equal_scipy_and_numpy(report):
    values = {k: [] for k in ("tau", "rho", "mae", "rmse", "cover", "ratio", "cr_tau")}
    for seed in SEEDS:
        rows = by_seed(report, seed)
        pred = np.array([r["predicted"]["accuracy"] for r in rows])
        meas = np.array([r["measured"]["accuracy"] for r in rows])
        std = np.array([r["predicted"]["accuracy_std"] for r in rows])
        values["tau"].append(kendalltau(pred, meas).statistic)
        values["rho"].append(spearmanr(pred, meas).statistic)
        values["mae"].append(np.mean(np.abs(meas - pred)))
        values["rmse"].append(math.sqrt(np.mean((meas - pred) ** 2)))
        values["cover"].append(np.mean(np.abs(meas - pred) <= Z90 * std))
        ratio = np.array([r["measured"]["bitops_cr"] / r["predicted"]["bitops_cr"] for r in rows])
        values["ratio"].append(math.exp(np.mean(np.log(ratio))))
        values["cr_tau"].append(kendalltau([r["predicted"]["bitops_cr"] for r in rows],
                                           [r["measured"]["bitops_cr"] for r in rows]).statistic)
    sim = report["predictors"]["simulator"]
    for key, name in (("tau", "accuracy_tau"), ("rho", "accuracy_spearman"), ("mae", "mean_abs_error"),
                      ("rmse", "rmse"), ("cover", "coverage"), ("ratio", "bitops_cr_ratio"), ("cr_tau", "bitops_cr_tau")):
        assert sim[name]["value"] == pytest.approx(np.mean(values[key]), abs=1e-9), name
        lo, hi = sim[name]["interval"]
        assert lo <= hi


def test_ranking_score_tau_equals_scipy(report):
    """The score per order: the geometric mean over the budgets of the BitOpsCR within each (1 where
    the order has no point or its measured loss is beyond it), predicted and measured."""
    from simulator.search import score

    taus = []
    for seed in SEEDS:
        rows = by_seed(report, seed)
        pred, meas = [], []
        for order in ORDERS:
            mine = {r["budget"]: r for r in rows if r["order"] == order}
            pred.append(score([mine[b]["predicted"]["bitops_cr"] if b in mine else None for b in BUDGETS]))
            meas.append(score([mine[b]["measured"]["bitops_cr"] if b in mine and mine[b]["measured"]["base_accuracy"]
                               - mine[b]["measured"]["accuracy"] <= b else None for b in BUDGETS]))
        taus.append(kendalltau(pred, meas).statistic)
    assert report["predictors"]["simulator"]["score_tau"]["value"] == pytest.approx(np.mean(taus), abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_tau_and_rho_equal_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 4, 12).astype(float), rng.integers(0, 3, 12).astype(float)
    assert bench._tau(x, y) == pytest.approx(kendalltau(x, y).statistic, abs=1e-12)
    assert bench._rho(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert bench._tau(x, np.ones(12)) is None and bench._rho([1.0], [2.0]) is None


def test_baselines_on_the_same_runs(report):
    """additive: the prediction without the P->Q term; seed-noise: the other seed's measurement."""
    maes, noise = [], []
    for seed, other in ((2, 3), (3, 2)):
        rows, twins = by_seed(report, seed), {(r["run"], r["budget"]): r for r in by_seed(report, other)}
        maes.append(np.mean([abs(r["measured"]["accuracy"] - r["predicted"]["additive_accuracy"]) for r in rows]))
        noise.append(np.mean([abs(r["measured"]["accuracy"] - twins[r["run"], r["budget"]]["measured"]["accuracy"])
                              for r in rows]))
        for r in rows:  # the term applies where P runs before Q (and after the last D)
            order = r["order"]
            gap = r["predicted"]["accuracy"] - r["predicted"]["additive_accuracy"]
            kept = order[order.rfind("D") + 1:] if "D" in order else order
            expected = -1.5 if ("P" in kept and "Q" in kept and kept.index("P") < kept.index("Q")) else 0.0
            if r["predicted"]["accuracy"] > 0:  # not clipped at 0
                assert gap == pytest.approx(expected, abs=1e-9), order
    assert report["predictors"]["additive"]["mean_abs_error"]["value"] == pytest.approx(np.mean(maes), abs=1e-9)
    assert report["predictors"]["seed-noise"]["mean_abs_error"]["value"] == pytest.approx(np.mean(noise), abs=1e-9)
    assert report["predictors"]["cost-only"]["accuracy_tau"]["value"] is None


def test_picks_by_hand(report):
    for pick in report["picks"]:
        rows = [r for r in by_seed(report, pick["seed"]) if r["budget"] == pick["budget"]]
        best = max(rows, key=lambda r: r["predicted"]["bitops_cr"])
        assert pick["order"] == best["order"]
        loss = best["measured"]["base_accuracy"] - best["measured"]["accuracy"]
        assert pick["measured_loss"] == pytest.approx(loss)
        assert pick["within_budget"] == (loss <= pick["budget"] + 1e-12)
        within = [r["measured"]["bitops_cr"] for r in rows
                  if r["measured"]["base_accuracy"] - r["measured"]["accuracy"] <= pick["budget"] + 1e-12]
        if pick["within_budget"]:
            assert pick["regret"] == pytest.approx(max(within) / best["measured"]["bitops_cr"])
        else:
            assert pick["regret"] is None
    held = report["pick_summary"]
    assert held["cases"] == len(BUDGETS) * len(SEEDS)
    assert held["within_budget"] == sum(p["within_budget"] for p in report["picks"])


def test_text_report_lists_every_predictor(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_train", fake_records)
    path = profile_with_a_term(tmp_path)
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "50"])
    out, err = capsys.readouterr()
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.strip().startswith("simulator"))
    assert header.split() == ["simulator", "additive", "cost-only", "seed-noise"]
    assert "pick (the order ranked first per budget, trained): within budget in" in out


def test_a_challenger_without_terms_is_the_additive_baseline_and_picks_by_its_own_predictions(tmp_path, monkeypatch,
                                                                                              capsys):
    """The challenger is the profile with its term removed: every statistic equals the additive
    baseline's (computed by another route, ``without_terms``), and its pick per budget is the point
    with the largest BitOpsCR among those its own prediction puts within the budget."""
    monkeypatch.setattr(bench, "_train", fake_records)
    path = profile_with_a_term(tmp_path)
    rival = without_its_terms(path)
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "300", "--challenger", str(rival), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    got = json.loads(out)
    challenger, additive = got["predictors"]["challenger"], got["predictors"]["additive"]
    for key in ("accuracy_tau", "mean_abs_error", "rmse", "coverage", "score_tau"):
        assert challenger[key]["value"] == pytest.approx(additive[key]["value"], abs=1e-12), key
    for pick in got["challenger_picks"]:
        rows = [r for r in by_seed(got, pick["seed"]) if r["budget"] == pick["budget"]]
        within = [r for r in rows if BASE_ACCURACY - r["predicted"]["challenger"][0] <= pick["budget"] + 1e-12]
        best = max(within, key=lambda r: r["predicted"]["challenger"][2])
        assert pick["order"] == best["order"]
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "50", "--challenger", str(rival)])
    out, _ = capsys.readouterr()
    header = next(line for line in out.splitlines() if line.strip().startswith("simulator"))
    assert header.split() == ["simulator", "challenger", "additive", "cost-only", "seed-noise"]
    assert "challenger's pick (among the same trained points" in out


def test_plot_draws_every_run_of_every_predictor(tmp_path, monkeypatch, capsys):
    """The PNG is written, and the left panel holds one marker per trained run per accuracy predictor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(bench, "_train", fake_records)
    path = profile_with_a_term(tmp_path)
    drawn = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, target, **kwargs):
        drawn["left"] = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
        drawn["right"] = sum(len(c.get_offsets()) for c in fig.axes[1].collections)
        return real_savefig(fig, target, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    out = tmp_path / "bench.png"
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "20", "--challenger", str(path), "--json",
                 "--plot", str(out)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = len(report["measurements"])
    assert drawn == {"left": 3 * runs, "right": runs}
    plt.close("all")


def test_a_bad_plot_path_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_train", lambda *a, **k: pytest.fail("nothing may train"))
    path = profile_with_a_term(tmp_path)
    code = main(["benchmark", "--profile", str(path), "--out-dir", str(tmp_path / "runs"),
                 "--plot", str(tmp_path / "missing" / "b.png")])
    _, err = capsys.readouterr()
    assert code == 2 and "plot" in err and len(err.strip().splitlines()) == 1


def test_confident_picks_are_simulates_first_order_trained_and_judged_by_hand(tmp_path, monkeypatch, capsys):
    """Each profile's pick per budget at confidence 0.9 is the order with the largest BitOpsCR in
    ``chaincomp simulate --confidence 0.9 --json``'s budget table; its measured loss, within and
    regret (against every trained run at that seed) recomputed from the records."""
    trained = {}

    def spy(points, seeds, *args, **kwargs):
        records = fake_records(points, seeds)
        trained.update(records)
        return records

    monkeypatch.setattr(bench, "_train", spy)
    path = profile_with_a_term(tmp_path)
    rival = without_its_terms(path)
    code = main(["benchmark", "--profile", str(path), "--orders", ",".join(ORDERS), "--budget", "4,8",
                 "--out-dir", str(tmp_path / "runs"), "--bootstrap", "20", "--challenger", str(rival),
                 "--pick-confidence", "0.9", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    got = json.loads(out)["confident_picks"]
    assert got["confidence"] == 0.9 and got["simulator"]["picks"] and got["challenger"]["picks"]
    for name, profile in (("simulator", path), ("challenger", rival)):
        assert main(["simulate", "--profile", str(profile), "--orders", ",".join(ORDERS), "--budget", "4,8",
                     "--confidence", "0.9", "--json"]) == 0
        table = json.loads(capsys.readouterr().out)["budget_table"]
        for k, budget in enumerate(BUDGETS):
            reachable = {o: row[k] for o, row in table.items() if row[k] is not None}
            mine = [p for p in got[name]["picks"] if p["budget"] == budget]
            if not reachable:
                assert not mine and budget in got[name]["unpicked_budgets"]
                continue
            best = max(reachable, key=reachable.get)
            assert {p["order"] for p in mine} == {best} and len(mine) == len(SEEDS)
            for p in mine:
                assert p["predicted_bitops_cr"] == pytest.approx(reachable[best], rel=1e-12)
                z90 = 1.2815515655446004  # the one-sided 90% quantile
                assert p["predicted_accuracy"] - z90 * p["predicted_std"] >= BASE_ACCURACY - budget - 1e-9
                runs = {key: r for key, r in trained.items() if key[1] == p["seed"]}
                mine_record = runs[(p["run"], p["seed"])]
                assert p["run"].startswith(p["order"] + "_")
                loss = mine_record["stages"][0]["accuracy"] - mine_record["stages"][-1]["accuracy"]
                assert p["measured_loss"] == pytest.approx(loss)
                assert p["within_budget"] == (loss <= budget + 1e-12)
                within = [r["stages"][-1]["cost"]["bitops_cr"] for r in runs.values()
                          if r["stages"][0]["accuracy"] - r["stages"][-1]["accuracy"] <= budget + 1e-12]
                cr = mine_record["stages"][-1]["cost"]["bitops_cr"]
                assert p["regret"] == (pytest.approx(max(within) / cr) if p["within_budget"] else None)
        assert got[name]["within_budget"] == sum(p["within_budget"] for p in got[name]["picks"])


def test_a_challenger_of_another_setup_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "_train", lambda *a, **k: pytest.fail("nothing may train"))
    path = profile_with_a_term(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["setup"]["teacher"] = "resnet8"
    rival = tmp_path / "rival.json"
    rival.write_text(json.dumps(data), encoding="utf-8")
    code = main(["benchmark", "--profile", str(path), "--out-dir", str(tmp_path / "runs"), "--challenger", str(rival)])
    _, err = capsys.readouterr()
    assert code == 2 and "challenger:" in err and "another setup" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "1,2"], "--seeds: 1 is a seed the profile was measured on ([0, 1])"),
    (["--seeds", "2,x"], "--seeds must be comma-separated integers, got '2,x'"),
    (["--seeds", "2,2"], "--seeds must be distinct, got [2, 2]"),
    (["--confidence", "1.5"], "--confidence must be in [0.5, 1), got 1.5"),
    (["--bootstrap", "0"], "--bootstrap must be an integer"),
    (["--pick-confidence", "0.3"], "--pick-confidence must be in [0.5, 1), got 0.3"),
    (["--budget", "0.01"], "no order has a point predicted within any of them"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(bench, "_train", lambda *a, **k: pytest.fail("nothing may train"))
    path = profile_with_a_term(tmp_path)
    code = main(["benchmark", "--profile", str(path), "--out-dir", str(tmp_path / "runs"), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_real_benchmark_reads_its_records_and_resumes(tmp_path, capsys):
    """One order, one budget, two seeds, one epoch per stage: the report's measurements are the
    records' final stages, and a second run trains nothing."""
    path = profile_with_a_term(tmp_path)
    argv = ["benchmark", "--profile", str(path), "--orders", "DPQE", "--budget", "8", "--out-dir",
            str(tmp_path / "runs"), "--epochs", "1", "--distill-epochs", "1", "--finetune-epochs", "1",
            "--exit-epochs", "1", "--bootstrap", "20", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert [m["seed"] for m in first["measurements"]] == [2, 3]
    for m in first["measurements"]:
        record = json.loads((tmp_path / "runs" / f"{m['run']}_s{m['seed']}.json").read_text())
        assert record["config"]["seed"] == m["seed"] and record["config"]["order"] == "DPQE"
        assert m["measured"]["accuracy"] == record["stages"][-1]["accuracy"]
        assert m["measured"]["bitops_cr"] == record["stages"][-1]["cost"]["bitops_cr"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*_s?.json")}
    assert len(stamps) == 2
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert json.loads(out)["measurements"] == first["measurements"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*_s?.json")} == stamps  # nothing retrained
