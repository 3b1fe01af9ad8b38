"""``chaincomp fit --ridge/--select``: shrinkage and term selection by cross-validation.

Expected values come from routes other than the code under test:

* the ridge solve against least squares on the augmented system ``[A; sqrt(penalty) I] x = [b; 0]``
  (numpy's lstsq) and its standard errors against the sandwich formula with an explicit inverse;
* the linear cross-validation (``simulator.fit_select.cv_errors``) against the route through the
  written profile and the chain model: fit the training runs with ``fit_runs``, write the fitted
  profile, predict each held-out run with ``simulator.model.predict`` (``fit_report._final_loss``);
* the selection's contract recomputed from ``cv_errors``: no penalty of the grid does better on
  the families kept, and dropping any kept family raises the held-out error;
* synthetic runs made by the chain model with known terms (``tests.simulator.fitting``): a large
  term is kept and the families that are truly 0 are mostly left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simulator.fit import fit_runs, solve
from simulator.fit_report import _final_loss, fitted_profile, read_runs
from simulator.fit_select import RIDGE_GRID, CVDesign, cv_errors, select_model
from simulator.profile import parse_profile
from tests.simulator.fitting import ALL_RUNS, SETUP, _load, base_profile, fit, make_record, run_cli


def test_ridge_solve_is_least_squares_on_the_augmented_system_with_sandwich_errors():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 6))
    b = a @ np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0]) + rng.normal(0, 0.4, 40)
    penalty = np.array([0.0, 5.0, 5.0, 0.0, 20.0, 1.0])
    fit = solve(a, b, penalty)
    augmented = np.vstack([a, np.diag(np.sqrt(penalty))])
    expected = np.linalg.lstsq(augmented, np.concatenate([b, np.zeros(6)]), rcond=None)[0]
    np.testing.assert_allclose(fit.estimate, expected, rtol=1e-9, atol=1e-12)
    m_inv = np.linalg.inv(a.T @ a + np.diag(penalty))
    hat = a @ m_inv @ a.T
    sigma2 = float(np.sum((b - a @ expected) ** 2)) / (40 - np.trace(hat))
    np.testing.assert_allclose(fit.std_error, np.sqrt(np.diag(sigma2 * m_inv @ a.T @ a @ m_inv)), rtol=1e-9)
    # a penalty of 0 everywhere is least squares
    np.testing.assert_allclose(solve(a, b, np.zeros(6)).estimate, np.linalg.lstsq(a, b, rcond=None)[0], rtol=1e-9)


def test_ridge_keeps_least_squares_identification():
    """A column no equation sees stays unidentified whatever the penalty (the profile leaves it out)."""
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    fit = solve(a, np.array([2.0, 2.2, 1.0]), np.array([1.0, 1.0, 1.0]))
    assert list(fit.identified) == [False, False, True]
    assert fit.estimate[2] == pytest.approx(0.5)  # 1 / (1 + 1)


def _runs(tmp_path: Path, sigma: float, accuracy=None, seeds=(0, 1)) -> list[str]:
    rng = np.random.default_rng(11)
    paths = []
    for seed in seeds:
        for n, (order, settings) in enumerate(ALL_RUNS):
            record = make_record(order, settings, rng, sigma, 0.0, accuracy=accuracy)
            record["config"]["seed"] = seed
            path = tmp_path / f"{n:02d}-{order}-s{seed}.json"
            path.write_text(json.dumps(record), encoding="utf-8")
            paths.append(str(path))
    return paths


def _through_the_profile(runs, profile, train, held, ridge, dropped, refine) -> list[float]:
    fitted = parse_profile(fitted_profile(profile, fit_runs(train, profile, refine, (), ridge, dropped), [], None))
    # measured change - predicted change = -(measured loss - predicted loss)
    return [-((r.base_accuracy - r.stages[-1].accuracy) - _final_loss(fitted, r, _load)) for r in held]


@pytest.mark.parametrize("refine", [False, True])
@pytest.mark.parametrize("ridge, dropped", [(0.0, ()), (3.0, ()), (1.0, ("DP", "QE"))])
def test_linear_cross_validation_equals_the_route_through_the_written_profile(tmp_path, ridge, dropped, refine):
    """Refining, only the runs at measured points: a value between them takes the written profile's
    interpolation of the corrected neighbours, which the fit's equations do not model (fit.py)."""
    profile = parse_profile(base_profile())
    runs = read_runs(_runs(tmp_path, 0.3), profile)
    if refine:
        runs = [r for r in runs if all(s.value in ("resnet8", 0.5, 2, 0.8) for s in r.stages)]
    design = CVDesign.build(runs, profile, refine, ())
    # by seed: fit on one seed, predict the other
    expected = []
    for seed in (0, 1):
        train = [r for r in runs if r.seed != seed]
        expected += _through_the_profile(runs, profile, train, [r for r in runs if r.seed == seed], ridge, dropped,
                                         refine)
    np.testing.assert_allclose(cv_errors(design, "seed", ridge, frozenset(dropped)), expected, atol=1e-9)
    # by order: every order held out in turn (folds sorted by order name)
    expected = []
    for order in sorted({r.order for r in runs}):
        train = [r for r in runs if r.order != order]
        expected += _through_the_profile(runs, profile, train, [r for r in runs if r.order == order], ridge, dropped,
                                         refine)
    np.testing.assert_allclose(cv_errors(design, "order", ridge, frozenset(dropped)), expected, atol=1e-9)


def test_selection_keeps_the_large_term_drops_the_null_ones_and_is_a_local_optimum(tmp_path):
    """Only D->P (-4 points) and Q->P (-2.5) are real; the other 10 pairs are 0. Noise 0.4 per stage."""
    truth = {("D", "P"): -4.0, ("Q", "P"): -2.5}
    profile = parse_profile(base_profile())
    runs = read_runs(_runs(tmp_path, 0.4, accuracy=truth), profile)
    design = CVDesign.build(runs, profile, True, ())
    chosen = select_model(design)
    assert {"DP", "QP"} <= set(chosen.kept)
    assert len(chosen.dropped) >= 7, chosen.dropped  # of the 10 null families
    dropped = frozenset(chosen.dropped)

    def pooled(ridge: float, left_out: frozenset[str]) -> float:
        e = np.concatenate([cv_errors(design, s, ridge, left_out) for s in ("seed", "order")])
        return math.sqrt(float(np.mean(e ** 2)))

    assert chosen.criterion == pytest.approx(pooled(chosen.ridge, dropped), rel=1e-12)
    assert all(pooled(r, dropped) >= chosen.criterion - 1e-12 for r in RIDGE_GRID)
    assert all(pooled(chosen.ridge, dropped | {f}) > chosen.criterion for f in chosen.kept)
    # the chosen model beats both ends on the folds it was chosen on
    assert chosen.criterion <= pooled(0.0, frozenset())
    assert chosen.criterion < pooled(0.0, frozenset(design.families))


def test_fit_select_writes_the_chosen_model_and_reports_it(tmp_path):
    paths = _runs(tmp_path, 0.4, accuracy={("D", "P"): -4.0, ("Q", "P"): -2.5})
    report, written = fit(tmp_path, paths, "--select")
    selection = report["selection"]
    assert report["ridge"] == selection["ridge"] and report["dropped"] == selection["dropped"]
    pairs = {i["before"] + i["after"] for i in written["interactions"] if "points" in i}
    assert pairs == set(selection["kept"])
    left_out = {u["before"] + u["after"] for u in report["unidentified"]
                if u["kind"] == "accuracy" and "left out" in u["reason"]}
    assert left_out == set(selection["dropped"])
    assert written["provenance"]["fit"]["ridge"] == selection["ridge"]
    assert written["provenance"]["fit"]["selection"]["kept"] == selection["kept"]
    # the cross-validation line is the chosen model's, through the written profile
    assert report["cross_validation"]["fitted"]["rmse"] == pytest.approx(selection["chosen"]["seed"]["rmse"],
                                                                          rel=1e-9)
    rc, text, _ = run_cli(["fit", *paths, "-o", str(tmp_path / "t.json"), "--profile", str(tmp_path / "base.json"),
                           "--select"])
    assert rc == 0 and "model chosen by cross-validation" in text and "kept DP" in text


def test_a_fixed_ridge_shrinks_every_term_toward_zero(tmp_path):
    paths = _runs(tmp_path, 0.0, seeds=(0,))
    plain, _ = fit(tmp_path, paths)
    shrunk, _ = fit(tmp_path, paths, "--ridge", "30")
    size = {k: sum(abs(t["estimate"]) for t in r["terms"] if t["kind"] == "accuracy")
            for k, r in (("plain", plain), ("shrunk", shrunk))}
    assert shrunk["ridge"] == 30 and size["shrunk"] < 0.9 * size["plain"]


@pytest.mark.parametrize("extra, message", [
    (["--ridge", "-1"], "ridge must be a finite number >= 0"),
    (["--ridge", "nan"], "ridge must be a finite number >= 0"),
    (["--ridge", "2", "--select"], "not both"),
])
def test_bad_ridge_options_are_refused(tmp_path, extra, message):
    paths = _runs(tmp_path, 0.0, seeds=(0,))[:4]
    (tmp_path / "base.json").write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "o.json"
    rc, _, err = run_cli(["fit", *paths, "-o", str(out), "--profile", str(tmp_path / "base.json"), *extra])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_select_needs_something_to_hold_out(tmp_path):
    paths = _runs(tmp_path, 0.0, seeds=(0,))[:1]
    (tmp_path / "base.json").write_text(json.dumps(base_profile()), encoding="utf-8")
    rc, _, err = run_cli(["fit", *paths, "-o", str(tmp_path / "o.json"), "--profile", str(tmp_path / "base.json"),
                          "--select"])
    assert rc == 2 and "select: the runs hold neither two seeds nor two orders" in err
    assert SETUP["dataset"] == "digits"


# ---- spreads calibrated on held-out runs -------------------------------------------------------------

def test_select_calibrates_the_sharpest_noise_whose_intervals_hold_90_percent(tmp_path):
    """Recomputed here from the written profile's noise (floor + per_point x predicted loss): every
    run held out by seed and by order, the fitted profile's prediction with the noise added in
    quadrature by hand. It holds 90%, a smaller per_point would not, and a constant floor that
    holds 90% (the 90% quantile of what each run needs) is no sharper on average."""
    from simulator.fit_report import Z90, _held_out
    from simulator.model import Grid, predict

    paths = _runs(tmp_path, 0.6, accuracy={("D", "P"): -4.0, ("Q", "P"): -2.5})
    report, written = fit(tmp_path, paths, "--select")
    floor, per_point = written["spread"]["floor"], written["spread"]["per_point"]
    assert report["spread"]["floor"] == floor and floor >= 0 and per_point >= 0 and floor + per_point > 0
    profile = parse_profile(base_profile())
    runs = read_runs(paths, profile)
    selection = report["selection"]
    errors, spreads, losses = [], [], []
    for by in ("seed", "order"):
        for fitted, held in _held_out(runs, profile, False, (), selection["ridge"], selection["dropped"], by):
            assert fitted.spread_floor == 0.0
            for r in held:
                p = predict(fitted, r.order, Grid({s.method: (s.value,) for s in r.stages}), _load, SETUP["teacher"])
                errors.append(abs(r.stages[-1].accuracy - p.accuracy[0]))
                spreads.append(p.accuracy_std[0])
                losses.append(max(0.0, fitted.base_accuracy - p.accuracy[0]))
    errors, spreads, losses = np.array(errors), np.array(spreads), np.array(losses)

    def total(a: float, b: float) -> np.ndarray:
        return np.sqrt(spreads ** 2 + (a + b * losses) ** 2)

    def coverage(a: float, b: float) -> float:
        return float(np.mean(errors <= Z90 * total(a, b) + 1e-9))

    assert len(errors) == report["spread"]["runs"]
    assert coverage(floor, per_point) >= 0.9
    if per_point > 0:
        assert coverage(floor, per_point * (1 - 1e-6)) < 0.9
    assert report["spread"]["coverage_after"] == pytest.approx(coverage(floor, per_point))
    assert report["spread"]["coverage_before"] == pytest.approx(coverage(0.0, 0.0))
    need = np.sqrt(np.maximum(0.0, (errors / Z90) ** 2 - spreads ** 2))
    constant = float(np.quantile(need, 0.9, method="inverted_cdf"))
    assert coverage(constant, 0.0) >= 0.9
    assert total(floor, per_point).mean() <= total(constant, 0.0).mean() + 1e-12


def test_calibrate_spread_calibrates_the_least_squares_model_without_selecting(tmp_path):
    """--calibrate-spread keeps every term family and no penalty (the plain least-squares fit), and its
    noise is what calibrate_spread gives for that model; the same runs at one seed and one order
    cannot be held out, which is refused in one line."""
    from simulator.fit_report import calibrate_spread

    paths = _runs(tmp_path, 0.6, accuracy={("D", "P"): -4.0, ("Q", "P"): -2.5})
    plain_report, plain = fit(tmp_path, paths)
    report, written = fit(tmp_path, paths, "--calibrate-spread")
    assert report["selection"] is None and "spread" not in plain
    assert [t["estimate"] for t in report["terms"]] == [t["estimate"] for t in plain_report["terms"]]
    direct = calibrate_spread(read_runs(paths, parse_profile(base_profile())), parse_profile(base_profile()),
                              False, ())
    assert written["spread"]["floor"] == pytest.approx(direct["floor"])
    assert written["spread"]["per_point"] == pytest.approx(direct["per_point"])
    assert report["spread"]["coverage_after"] >= 0.9
    one = [p for p in paths if p.endswith("-s0.json")][:1]
    profile_path = tmp_path / "base.json"
    rc, _, err = run_cli(["fit", *one, "-o", str(tmp_path / "one.json"), "--profile", str(profile_path),
                          "--calibrate-spread"])
    assert rc == 2 and err.count("\n") == 1 and "calibrate: the runs hold neither two seeds nor two orders" in err
    assert not (tmp_path / "one.json").exists()


def test_the_floor_adds_in_quadrature_and_a_refit_drops_an_inherited_one(tmp_path):
    from simulator.model import Grid, predict

    data = base_profile()
    plain = parse_profile(data)
    data["spread"] = {"floor": 1.5, "per_point": 0.25, "source": "test"}
    floored = parse_profile(data)
    grid = Grid({"D": ("resnet8",), "P": (0.25, 0.5, 0.75), "Q": (1, 2)})
    a = predict(plain, "DPQ", grid, _load, SETUP["teacher"])
    b = predict(floored, "DPQ", grid, _load, SETUP["teacher"])
    loss = np.maximum(plain.base_accuracy - a.accuracy, 0.0)
    assert loss.max() > 1  # the per-point part matters here
    np.testing.assert_allclose(b.accuracy_std ** 2, a.accuracy_std ** 2 + (1.5 + 0.25 * loss) ** 2, rtol=1e-12)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    base = tmp_path / "floored.json"
    base.write_text(json.dumps(data), encoding="utf-8")
    paths = _runs(tmp_path, 0.0, seeds=(0,))
    out = tmp_path / "refit.json"
    rc, _, err = run_cli(["fit", *paths, "-o", str(out), "--profile", str(base)])
    assert rc == 0, err
    assert "spread" not in json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("spread, message", [
    ({"floor": -0.5}, "spread.floor must be >= 0, got -0.5"),
    ({"floor": "x"}, "spread.floor must be a finite number"),
    ([1.0], "spread must be an object"),
    ({"floor": 0.5, "per_point": -1}, "spread.per_point must be >= 0, got -1"),
])
def test_a_bad_spread_is_refused(spread, message):
    from bitops.errors import InputError

    data = base_profile()
    data["spread"] = spread
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_profile(data)
