"""``chaincomp fit``: interaction terms recovered from run records made by the chain model itself.

Expected values come from routes other than the fit code:

* synthetic run records: each stage's accuracy is ``simulator.model.predict`` of the order's prefix
  under a profile that holds KNOWN interaction terms (constants, or curves over the later method's
  hyperparameter), plus seeded gaussian noise per stage; exit rates are the profile's rates at the
  threshold (np.interp) times the known scales of the pairs that apply, worked out here, times
  seeded log-normal noise;
* which stages reach the final model and which pairs apply are written out here from the trainer's
  semantics (:func:`reaches`, :func:`applies`), not taken from ``simulator.structure``: D builds a
  fresh student, so a P, Q or D with a later D does not reach the final model (E does: its heads
  carry over); a pair (i before j, different letters) applies when j reaches the final model and
  either i does too or j is that D (the student of a pruned / quantized teacher);
* the spread of the noisy recovery is a closed form computed here: the test builds the design
  matrix A of the increments (one column per pair and value of the later method) from those rules
  and takes ``sigma * sqrt(diag((A^T A)^-1))``; likewise for the exit scales in log space;
* single-stage deltas, interpolated terms and predictions checked against numbers worked out by
  hand from the hand profile below;
* the least squares itself on matrices small enough to solve by hand;
* bad input one rule per case: exit code 2, one line on stderr, nothing written.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator.fit import solve
from simulator.model import Grid, predict
from simulator.profile import load_profile, parse_profile
from tests.simulator.fitting import (
    ALL_ORDERS, ALL_RUNS, AT_MEASURED, BASE_ACCURACY, BETWEEN, SETUP, TRUE_ACCURACY, TRUE_SCALE, _load,
    accuracy_design, accuracy_terms, applied_pairs, base_profile, chain_accuracy, exit_design, exit_keys,
    exit_scale_pairs, exit_tables, exit_triple_terms, fit,
    make_record, reaches, residual, run_cli, with_terms, write_records, write_runs)



def test_the_written_out_rules_on_hand_examples():
    # The rules above, checked on orders worked through by hand.
    assert [p for p in range(4) if reaches("PQDE", p)] == [2, 3]
    assert [p for p in range(4) if reaches("EPDQ", p)] == [0, 2, 3]  # E before D is kept
    assert applied_pairs("PD") == [("P", "D", 1)]
    assert applied_pairs("PQD") == [("P", "D", 2), ("Q", "D", 2)]  # PQ is gone with the teacher
    assert applied_pairs("EPDQ") == [("E", "D", 2), ("P", "D", 2), ("E", "Q", 3), ("D", "Q", 3)]
    assert applied_pairs("DPQE") == [("D", "P", 1), ("D", "Q", 2), ("P", "Q", 2), ("D", "E", 3), ("P", "E", 3),
                                     ("Q", "E", 3)]
    assert exit_scale_pairs("QPED") == [("Q", "E"), ("P", "E"), ("E", "D")]  # heads carried over through D
    assert exit_scale_pairs("EPDQ") == [("E", "P"), ("E", "D"), ("E", "Q")]
    assert exit_scale_pairs("QPDE") == [("D", "E")]  # heads built for the fresh student
    assert exit_scale_pairs("PQE") == [("P", "E"), ("Q", "E")]
    assert exit_triple_terms("EPDQ") == ["EPD", "EDQ"] and exit_triple_terms("QEDP") == ["EDP", "QED"]
    assert exit_triple_terms("DEPQ") == [] and exit_triple_terms("PDQE") == []
    assert exit_keys("QEDP", {"Q": 2, "E": 0.8, "D": "resnet8", "P": 0.5}) == [
        ("QE", 2), ("ED", "resnet8"), ("EP", 0.5), ("EDP", 0.5), ("QED", 2)]


def test_the_fit_applies_the_exit_terms_these_rules_write_out():
    # simulator.exit_fit.exit_terms (from simulator.structure) against the rules above, every prefix
    # of every order of DPQE.
    from simulator.exit_fit import exit_terms

    for order in ALL_ORDERS:
        for k in range(1, 5):
            prefix = order[:k]
            values = [AT_MEASURED[m] for m in prefix]
            want: dict = {}
            for key in exit_keys(prefix, AT_MEASURED):
                want[key] = want.get(key, 0) + 1
            assert exit_terms(prefix, values) == want, prefix


def truth_scale(letters: str) -> float:
    """The synthetic runs' exit scale of a term: TRUE_SCALE for a pair, none (1) for three stages."""
    return TRUE_SCALE[(letters[0], letters[1])] if len(letters) == 2 else 1.0


# ---- synthetic run records -----------------------------------------------------------------------

def test_solve_identified_system_by_hand():
    # x0 = 1, x0 + x1 = 3  ->  x = (1, 2), exactly; no residual degrees of freedom, no std error.
    got = solve(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([1.0, 3.0]))
    assert got.identified.tolist() == [True, True]
    assert got.estimate == pytest.approx([1.0, 2.0])
    assert got.rank == 2 and got.dof == 0 and np.isnan(got.std_error).all()


def test_solve_mean_and_its_standard_error_by_hand():
    # One unknown seen three times: the mean 2, residuals -1, 0, 1, sigma^2 = 2 / 2, se = 1 / sqrt(3).
    got = solve(np.array([[1.0], [1.0], [1.0]]), np.array([1.0, 2.0, 3.0]))
    assert got.estimate[0] == pytest.approx(2.0)
    assert got.residuals == pytest.approx([-1.0, 0.0, 1.0])
    assert got.std_error[0] == pytest.approx(1 / math.sqrt(3))
    assert got.rms == pytest.approx(math.sqrt(2 / 3))


def test_solve_confounded_and_zero_columns():
    # x0 and x1 only ever appear together; x2 never appears; x3 alone.
    design = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]])
    got = solve(design, np.array([5.0, 3.0, 6.0]))
    assert got.identified.tolist() == [False, False, False, True]
    assert got.estimate[3] == pytest.approx(2.0)
    assert got.confounded[0] == [1] and got.confounded[1] == [0] and got.confounded[2] == []
    assert np.isnan(got.estimate[:3]).all()  # never a number for what the runs cannot see


# ---- recovery of known terms ---------------------------------------------------------------------

def test_exact_runs_give_back_every_term_exactly(tmp_path):
    # Every order at two settings: each term comes back at each value of the later method the runs
    # used it at (22 nodes: 2 pairs into D at the one student, ED there at E's two thresholds, 9 pairs
    # at two values each), each the constant truth.
    paths = write_records(tmp_path, ALL_RUNS, np.random.default_rng(0), sigma=0.0, log_sigma=0.0)
    report, fitted = fit(tmp_path, paths)
    design, columns = accuracy_design(ALL_RUNS)
    assert len(columns) == 2 * 1 + 2 + 9 * 2 and np.linalg.matrix_rank(design) == len(columns)
    acc, scale = accuracy_terms(report), exit_tables(report)
    assert set(acc) == set(columns)
    for i, j, value, *_ in columns:
        assert acc[(i, j, value, *_)]["estimate"] == pytest.approx(TRUE_ACCURACY[(i, j)], abs=1e-9), (i, j, value)
    # Exit scales: one unknown per term and value of its other method, in each (threshold, exit) cell.
    # The runs at one setting ran E at one threshold, so each cell sees half the values; the other
    # threshold takes the nearest measured one's (the truth is constant, so every cell is the truth).
    _, exit_columns = exit_design(ALL_RUNS)
    assert set(scale) == set(exit_columns)
    for letters, value in exit_columns:
        assert scale[(letters, value)] == pytest.approx(truth_scale(letters), rel=1e-9), (letters, value)
    assert report["unidentified"] == []
    assert report["accuracy"]["rms"] == pytest.approx(0, abs=1e-9)
    assert report["accuracy"]["equations"] == 48 * 4 == len(design) and report["accuracy"]["rank"] == 22
    cells = [exit_design(ALL_RUNS, settings["E"])[0] for settings in (AT_MEASURED, BETWEEN)]
    assert report["exit_scale"]["equations"] == 2 * sum(len(d) for d in cells)  # two exits per equation row
    assert report["exit_scale"]["rank"] == max(np.linalg.matrix_rank(d) for d in cells)
    # The written profile reads back: each pair a curve through its nodes, all at the truth.
    back = parse_profile(fitted)
    assert set(back.accuracy_terms) == set(TRUE_ACCURACY)
    for (i, j), truth in TRUE_ACCURACY.items():
        term = back.accuracy_terms[(i, j)]
        if (i, j) == ("E", "D"):  # per threshold: the truth at both, and between them
            assert term.grid.before.values == (0.65, 0.8)
            for t in (0.6, 0.65, 0.7, 0.8, 0.9):
                got = term.at(np.array(["resnet8"], dtype=object), np.array([t]))
                assert got == pytest.approx([truth], abs=1e-9), t
            continue
        assert sorted(term.curve.values, key=str) == sorted({c[2] for c in columns if c[:2] == (i, j)}, key=str)
        nodes = np.array(term.curve.values, dtype=object if j == "D" else np.float64)
        assert term.at(nodes) == pytest.approx([truth] * len(nodes), abs=1e-9), (i, j)
    assert back.exit_scales == {}
    for letters, value in exit_columns:
        table = back.exit_tables[letters]
        values = np.array([value], dtype=object if isinstance(value, str) else np.float64)
        for t in (0.5, 0.65, 0.8, 0.95):
            got = table.log_at(values, np.array([t]), ["layer1", "layer2"])
            assert np.exp(got) == pytest.approx(truth_scale(letters), rel=1e-9), (letters, value, t)
    # ... and predicts the runs' own final accuracies (they were made by the truth, without noise).
    for path, (order, settings) in zip(paths, ALL_RUNS):
        final = json.loads(Path(path).read_text())["stages"][-1]["accuracy"]
        assert chain_accuracy(back, order, settings) == pytest.approx(final, abs=1e-9), order


def test_noisy_runs_recover_the_terms_within_the_closed_form_spread(tmp_path):
    sigma, log_sigma = 0.2, 0.03
    paths = write_records(tmp_path, ALL_RUNS, np.random.default_rng(1), sigma=sigma, log_sigma=log_sigma)
    report, _ = fit(tmp_path, paths)
    acc, scale = accuracy_terms(report), exit_tables(report)
    # Each increment carries its own N(0, sigma): cov = sigma^2 (A^T A)^-1 for the design built here.
    design, columns = accuracy_design(ALL_RUNS)
    acc_sd = sigma * np.sqrt(np.diag(np.linalg.inv(design.T @ design)))
    assert set(acc) == set(columns)
    for c, (i, j, value, *threshold) in enumerate(columns):
        got = acc[(i, j, value, *threshold)]
        assert abs(got["estimate"] - TRUE_ACCURACY[(i, j)]) < 4.5 * acc_sd[c], (i, j, value)
        assert got["std_error"] == pytest.approx(acc_sd[c], rel=0.3), (i, j, value)  # sigma from 171 residual dof
        assert got["equations"] == np.count_nonzero(design[:, c]), (i, j, value)
    # Exit scales: per cell, the same closed form in log space over the runs whose E ran there.
    for settings in (AT_MEASURED, BETWEEN):
        exits, exit_columns = exit_design(ALL_RUNS, settings["E"])
        log_sd = log_sigma * np.sqrt(np.diag(np.linalg.pinv(exits.T @ exits)))
        t = sorted({AT_MEASURED["E"], BETWEEN["E"]}).index(settings["E"])
        for c, (letters, value) in enumerate(exit_columns):
            for x in range(2):
                got = scale[(letters, value)][t, x]
                assert abs(math.log(got / truth_scale(letters))) < 4.5 * log_sd[c], (letters, value, x)
    # E[RSS] = sigma^2 (n - rank): the rms over n equations is sigma sqrt((n - rank) / n).
    n = len(design)
    assert report["accuracy"]["rms"] == pytest.approx(sigma * math.sqrt((n - len(columns)) / n), rel=0.2)


def test_a_term_curve_over_the_later_method_is_recovered_per_node_and_interpolated(tmp_path):
    qp = {0.25: -1.0, 0.5: -2.5, 0.75: -4.5}  # QP as a curve over P's ratio
    runs = [("QP", {"Q": q, "P": ratio}) for ratio in qp for q in (2, 8)]
    paths = write_records(tmp_path, runs, np.random.default_rng(13), 0.0, 0.0, accuracy={("Q", "P"): qp}, scales={})
    report, fitted = fit(tmp_path, paths)
    acc = accuracy_terms(report)
    assert set(acc) == {("Q", "P", ratio) for ratio in qp}
    for ratio, truth in qp.items():
        assert acc[("Q", "P", ratio)]["estimate"] == pytest.approx(truth, abs=1e-9), ratio
        assert acc[("Q", "P", ratio)]["equations"] == 2
    (entry,) = fitted["interactions"]
    assert (entry["before"], entry["after"], entry["parameter"]) == ("Q", "P", "prune_ratio")
    assert sorted(p["value"] for p in entry["points"]) == [0.25, 0.5, 0.75]
    # Between nodes the fitted profile interpolates the term like P's own curve (linear in the ratio):
    # QP(0.4) = -1.0 + 0.6 * (-2.5 + 1.0) = -1.9, and with base 90, Q(2 bits) -3.0,
    # P(0.4) = -0.5 + 0.6 * (-1.5 + 0.5) = -1.1: 84.0. At 0.6: QP = -2.5 + 0.4 * (-2.0) = -3.3,
    # P = -1.5 + 0.4 * (-2.5) = -2.5: 81.2.
    back = parse_profile(fitted)
    assert back.accuracy_terms[("Q", "P")].at(np.array([0.4, 0.6])) == pytest.approx([-1.9, -3.3], abs=1e-9)
    for ratio, want in ((0.4, 84.0), (0.6, 81.2)):
        got = predict(back, "QP", Grid({"Q": (2,), "P": (ratio,)}), _load, SETUP["teacher"])
        assert got.accuracy[0] == pytest.approx(want, abs=1e-9) and not got.outside[0], ratio


def test_an_e_stage_reporting_several_thresholds_gives_one_equation_each(tmp_path):
    # PE as a curve over the threshold; at 0.65 (not a node of the truth) it is 0.8 + 0.5 * (0.3 - 0.8).
    pe = {0.5: 0.8, 0.8: 0.3, 0.95: -0.4}
    want = {0.5: 0.8, 0.65: 0.55, 0.8: 0.3, 0.95: -0.4}
    listed = (0.5, 0.65, 0.95)  # the operating threshold 0.8 is measured too, as the trainer does
    truth = {("P", "E"): pe, ("E", "P"): TRUE_ACCURACY[("E", "P")]}
    runs = [("PE", {"P": 0.5, "E": 0.8}), ("EP", {"E": 0.8, "P": 0.25})]
    paths = write_records(tmp_path, runs, np.random.default_rng(14), 0.0, 0.0, accuracy=truth, scales={},
                          thresholds=listed)
    record = json.loads(Path(paths[0]).read_text())
    assert [row["threshold"] for row in record["stages"][2]["exit"]["thresholds"]] == [0.5, 0.65, 0.8, 0.95]
    report, fitted = fit(tmp_path, paths)
    # PE: P (1) + E at 4 thresholds; EP: E at 4 thresholds + P (1, at the operating threshold: the
    # thresholds P's model also reports are not equations).
    assert report["accuracy"]["equations"] == 10
    e_stage = residual(report, paths[0], 2)
    assert sorted(r["threshold"] for r in e_stage) == [0.5, 0.65, 0.8, 0.95]
    hand_e = {0.5: -3.0, 0.65: -2.0, 0.8: -1.0, 0.95: -0.25}  # the profile's E delta (linear in the threshold)
    for r in e_stage:
        t = r["threshold"]
        assert r["unknowns"] == {f"PE@{t:g}": 1.0}, t
        assert r["profile_part"] == pytest.approx(hand_e[t], abs=1e-9), t
        assert r["observed"] == pytest.approx(hand_e[t] + want[t], abs=1e-9), t
    acc = accuracy_terms(report)
    for t, value in want.items():
        assert acc[("P", "E", t)]["estimate"] == pytest.approx(value, abs=1e-9), t
    assert acc[("E", "P", 0.25)]["estimate"] == pytest.approx(TRUE_ACCURACY[("E", "P")], abs=1e-9)
    (p_stage,) = residual(report, paths[1], 2)
    assert p_stage["unknowns"] == {"EP@0.25": 1.0} and p_stage["threshold"] is None
    assert [r["unknowns"] for r in residual(report, paths[1], 1)] == [{}] * 4  # E first: no pair yet
    back = parse_profile(fitted)
    assert back.accuracy_terms[("P", "E")].curve.values == (0.5, 0.65, 0.8, 0.95)


def test_stages_before_d_are_absorbed_and_keep_only_their_term_with_d(tmp_path):
    runs = [("PD", {"P": 0.4, "D": "resnet8"}), ("QD", {"Q": 3, "D": "resnet8"}),
            ("PQD", {"P": 0.75, "Q": 8, "D": "resnet8"})]
    paths = write_records(tmp_path, runs, np.random.default_rng(15), 0.0, 0.0)
    finals = [json.loads(Path(p).read_text())["stages"][-1]["accuracy"] for p in paths]
    # The student forgets the teacher's pruning and bits: base 90 + D -2.0 + the pairs into D only.
    assert finals == pytest.approx([90 - 2.0 - 2.3, 90 - 2.0 - 3.4, 90 - 2.0 - 2.3 - 3.4], abs=1e-9)
    report, _ = fit(tmp_path, paths)
    acc = accuracy_terms(report)
    assert set(acc) == {("P", "D", "resnet8"), ("Q", "D", "resnet8"), ("P", "Q", 8.0)}
    assert acc[("P", "D", "resnet8")]["estimate"] == pytest.approx(-2.3, abs=1e-9)
    assert acc[("Q", "D", "resnet8")]["estimate"] == pytest.approx(-3.4, abs=1e-9)
    assert acc[("P", "Q", 8.0)]["estimate"] == pytest.approx(-0.4, abs=1e-9)
    # PD's D stage: D's delta replaces P's (P(0.4) = -1.1 on the hand profile): -2.0 + 1.1.
    (p_stage,) = residual(report, paths[0], 1)
    assert p_stage["unknowns"] == {} and p_stage["profile_part"] == pytest.approx(-1.1, abs=1e-9)
    (d_stage,) = residual(report, paths[0], 2)
    assert d_stage["unknowns"] == {"PD@resnet8": 1.0}
    assert d_stage["profile_part"] == pytest.approx(-2.0 - (-1.1), abs=1e-9)
    assert d_stage["observed"] == pytest.approx(-2.0 - 2.3 - (-1.1), abs=1e-9)
    # QD: Q at 3 bits is -3.0 + (log2 3 - 1) * (-1.0 + 3.0) on the hand profile (linear in log2 bits).
    (d_stage,) = residual(report, paths[1], 2)
    assert d_stage["unknowns"] == {"QD@resnet8": 1.0}
    assert d_stage["profile_part"] == pytest.approx(-2.0 - (-3.0 + (math.log2(3) - 1) * 2.0), abs=1e-9)
    # PQD: D removes P (0.75: -4.0), Q (8 bits: -0.25) and their PQ term, adds PD and QD.
    (d_stage,) = residual(report, paths[2], 3)
    assert d_stage["unknowns"] == {"PD@resnet8": 1.0, "QD@resnet8": 1.0, "PQ@8": -1.0}
    assert d_stage["profile_part"] == pytest.approx(-2.0 + 4.0 + 0.25, abs=1e-9)
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert missing[("QP", "accuracy")] == "no run applies P after Q with both reaching the final model"


# ---- what the runs cannot identify ---------------------------------------------------------------

def test_only_pq_runs_leave_qp_unidentified_and_out_of_the_profile(tmp_path):
    runs = [("PQ", {"P": ratio, "Q": bits}) for ratio, bits in ((0.25, 1), (0.5, 2), (0.4, 3), (0.75, 8))]
    paths = write_records(tmp_path, runs, np.random.default_rng(2), sigma=0.0, log_sigma=0.0)
    report, fitted = fit(tmp_path, paths)
    acc = accuracy_terms(report)
    assert set(acc) == {("P", "Q", bits) for bits in (1, 2, 3, 8)}
    for key, term in acc.items():
        assert term["estimate"] == pytest.approx(TRUE_ACCURACY[("P", "Q")], abs=1e-9), key
    missing = {(u["first"], u["before"], u["after"], u["kind"]): u for u in report["unidentified"]}
    assert missing[(None, "Q", "P", "accuracy")]["reason"] == "no run applies P after Q with both reaching the final model"
    assert missing[(None, "Q", "P", "accuracy")]["value"] is None
    assert len(report["unidentified"]) == len(missing) == 11 + 6 + 6  # every other accuracy pair, every exit term
    (entry,) = fitted["interactions"]  # QP is absent, not written as 0
    assert (entry["before"], entry["after"]) == ("P", "Q")
    assert sorted(p["value"] for p in entry["points"]) == [1, 2, 3, 8]
    listed = {(u["before"], u["after"], u["kind"]) for u in fitted["provenance"]["fit"]["unidentified"]}
    assert ("Q", "P", "accuracy") in listed


def test_only_dpqe_runs_confound_the_terms_that_always_appear_together(tmp_path):
    settings = [(0.25, 2, 0.95), (0.5, 2, 0.95), (0.5, 3, 0.8), (0.75, 3, 0.8), (0.4, 2, 0.95)]
    runs = [("DPQE", {"D": "resnet8", "P": p, "Q": q, "E": e}) for p, q, e in settings]
    sigma = 0.1
    paths = write_records(tmp_path, runs, np.random.default_rng(3), sigma=sigma, log_sigma=0.01)
    report, _ = fit(tmp_path, paths)
    acc = accuracy_terms(report)
    assert set(acc) == {("D", "P", p) for p in (0.25, 0.4, 0.5, 0.75)}  # P's only predecessor is D
    for (_, _, p), term in acc.items():
        # DP@p is the mean of the P increments of the runs at p, each with its own N(0, sigma).
        runs_at = sum(s[0] == p for s in settings)
        assert abs(term["estimate"] - TRUE_ACCURACY[("D", "P")]) < 4.5 * sigma / math.sqrt(runs_at), p
    missing = {((u["first"] or "") + u["before"] + u["after"], u["kind"], u["value"]): u["reason"]
               for u in report["unidentified"]}
    for q in (2, 3):
        assert missing[("DQ", "accuracy", q)].startswith(f"confounded with PQ@{q}:"), q
        assert missing[("PQ", "accuracy", q)].startswith(f"confounded with DQ@{q}:"), q
    for e in (0.8, 0.95):
        assert missing[("DE", "accuracy", e)].startswith(f"confounded with PE@{e:g}, QE@{e:g}:"), e
    assert not any(key[:2] == ("DP", "accuracy") for key in missing)
    # Every DPQE run has D before E: DE is only ever seen with the PE and QE of the same runs.
    assert missing[("DE", "exit_scale", "resnet8")].startswith("confounded with PE@0.5, PE@0.75, QE@3 at threshold 0.8")
    assert missing[("ED", "exit_scale", None)] == "no run applies D after E"
    assert missing[("ED", "accuracy", None)] == "no run applies D after E with both reaching the final model"


def test_zero_exit_shares_give_no_exit_equation_and_say_so(tmp_path):
    profile = base_profile()
    for point in profile["methods"]["E"]["points"]:
        point["exit_rates"] = {"layer1": 0.0, "layer2": 0.0, "final": 1.0}
    rng = np.random.default_rng(4)
    paths = []
    for n, order in enumerate(["PE", "EP"]):
        record = make_record(order, {"P": 0.5, "E": 0.8}, rng, 0.0, 0.0, profile=profile)
        path = tmp_path / f"{order}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    (tmp_path / "base.json").write_text(json.dumps(profile), encoding="utf-8")
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "f.json"), "--profile",
                                  str(tmp_path / "base.json"), "--json"])
    assert rc == 0, stderr
    report = json.loads(stdout)
    assert report["exit_scale"]["equations"] == 0
    assert any("rate(s) of 0 give no equation" in note for note in report["exit_scale"]["notes"])
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert "no usable exit-rate measurement" in missing[("PE", "exit_scale")]
    assert set(accuracy_terms(report)) == {("P", "E", 0.8), ("E", "P", 0.5)}


def test_rates_a_later_stage_sends_to_0_are_fitted_through_half_a_sample_and_predicted_as_0(tmp_path):
    # EQ runs whose heads stop working under Q (scale 0: every sample goes on to the end). With the
    # test size in the records, eps = 0.5 / 360 and each cell's scale is eps / (r + eps), r the
    # profile's rate there; the model gives (r + eps) x that - eps = 0: the cost of the model with
    # nobody leaving early, which a profile whose rates are all 0 gives by another route.
    profile = base_profile()
    rng = np.random.default_rng(15)
    paths = []
    for bits in (1, 2):
        record = make_record("EQ", {"E": 0.8, "Q": bits}, rng, 0.0, 0.0, profile=profile, scales={("E", "Q"): 0.0},
                             thresholds=(0.5, 0.8, 0.95))
        record["data"]["sizes"] = {"train": 1000, "val": 360, "test": 360}
        path = tmp_path / f"EQ-{bits}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    report, fitted = fit(tmp_path, paths)
    eps = 0.5 / 360
    assert report["exit_scale"]["smoothing"] == pytest.approx(eps)
    table = next(t for t in report["exit_scale"]["tables"] if t["term"] == "EQ")
    assert table["values"] == [1, 2] and table["thresholds"] == [0.5, 0.8, 0.95]
    points = profile["methods"]["E"]["points"]
    for t, threshold in enumerate(table["thresholds"]):
        for x, name in enumerate(table["exits"]):
            rate = float(np.interp(threshold, [p["value"] for p in points], [p["exit_rates"][name] for p in points]))
            for v in range(2):
                assert table["scale"][v][t][x] == pytest.approx(eps / (rate + eps), rel=1e-9), (threshold, name)
    nobody = base_profile()
    for point in nobody["methods"]["E"]["points"]:
        point["exit_rates"] = {"layer1": 0.0, "layer2": 0.0, "final": 1.0}
    grid = Grid({"E": (0.5, 0.8, 0.95), "Q": (1, 2)})
    got = predict(parse_profile(fitted), "EQ", grid, _load, SETUP["teacher"])
    want = predict(parse_profile(nobody), "EQ", grid, _load, SETUP["teacher"])
    assert got.bitops == pytest.approx(want.bitops, rel=1e-12)


# ---- a term of E with a later D, per threshold ----------------------------------------------------

# The student's inherited heads lose more the lower the threshold: ED per threshold of E.
ED_BY_THRESHOLD = {("resnet8", 0.5): -4.0, ("resnet8", 0.8): -1.5, ("resnet8", 0.95): 0.5}


def test_a_term_of_e_with_d_is_recovered_at_every_threshold_the_sweeps_report(tmp_path):
    """Runs at one operating threshold (0.8) whose models with exits report their accuracy at 0.5,
    0.8 and 0.95 (as the trainer sweeps): ED comes back at each threshold, exactly, and no other
    term moves (the sweep's equations are differenced against the operating threshold, so they hold
    ED alone). The written profile predicts the truth at the measured thresholds, linearly between
    them, clamped and flagged outside, and ED's spread is per threshold too."""
    truth_terms = {**TRUE_ACCURACY, ("E", "D"): ED_BY_THRESHOLD}
    rng = np.random.default_rng(21)
    runs = [(order, settings) for settings in (AT_MEASURED, {**BETWEEN, "E": 0.8}) for order in ALL_ORDERS]
    paths = write_records(tmp_path, runs, rng, 0.0, 0.0, accuracy=truth_terms, thresholds=(0.5, 0.8, 0.95))
    report, fitted = fit(tmp_path, paths)
    acc = accuracy_terms(report)
    for (student, t), want in ED_BY_THRESHOLD.items():
        assert acc[("E", "D", student, t)]["estimate"] == pytest.approx(want, abs=1e-9), t
    others = {k: v for k, v in acc.items() if k[:2] != ("E", "D")}
    assert others and all(v["estimate"] == pytest.approx(TRUE_ACCURACY[k[:2]], abs=1e-9) for k, v in others.items())
    assert report["accuracy"]["rms"] == pytest.approx(0, abs=1e-9)
    back = parse_profile(fitted)
    term = back.accuracy_terms[("E", "D")]
    student = np.array(["resnet8"] * 5, dtype=object)
    thresholds = np.array([0.4, 0.5, 0.65, 0.95, 0.99])
    assert term.at(student, thresholds) == pytest.approx([-4.0, -4.0, -2.75, 0.5, 0.5], abs=1e-9)
    assert term.outside(student, thresholds).tolist() == [True, False, False, False, True]
    # the chain model through it: every four-stage order with E before D, at each threshold
    truth = parse_profile(with_terms(base_profile(), truth_terms, TRUE_SCALE))
    for order in (o for o in ALL_ORDERS if o.index("E") < o.index("D")):
        for t in (0.5, 0.65, 0.8, 0.95):
            settings = {**AT_MEASURED, "E": t}
            assert chain_accuracy(back, order, settings) == pytest.approx(chain_accuracy(truth, order, settings),
                                                                          abs=1e-9), (order, t)
    # ED's standard error is per threshold: the noisy version of the same runs gives one per cell
    noisy, _ = fit(tmp_path, write_records(tmp_path, runs, np.random.default_rng(22), 0.3, 0.0, accuracy=truth_terms,
                                           thresholds=(0.5, 0.8, 0.95)))
    errors = {t["threshold"]: t["std_error"] for t in noisy["terms"] if (t["before"], t["after"]) == ("E", "D")}
    assert sorted(errors) == [0.5, 0.8, 0.95] and all(e > 0 for e in errors.values())


def test_without_sweeps_a_term_of_e_with_d_holds_at_each_runs_threshold_only(tmp_path):
    """Records without the sweep (older trainers): ED at each threshold some run operated at, from
    that run's own increments; a single threshold is a constant over every threshold."""
    paths = write_records(tmp_path, [("ED", {**AT_MEASURED})], np.random.default_rng(3), 0.0, 0.0)
    report, fitted = fit(tmp_path, paths)
    assert [(t["value"], t["threshold"]) for t in report["terms"] if t["after"] == "D"] == [("resnet8", 0.8)]
    term = parse_profile(fitted).accuracy_terms[("E", "D")]
    got = term.at(np.array(["resnet8"] * 3, dtype=object), np.array([0.5, 0.8, 0.99]))
    assert got == pytest.approx([TRUE_ACCURACY[("E", "D")]] * 3, abs=1e-9)
    assert not term.outside(np.array(["resnet8"], dtype=object), np.array([0.5]))[0]


@pytest.mark.parametrize("points, message", [
    ([{"value": "resnet8", "threshold": 0.5, "accuracy": -1.0}, {"value": "resnet8", "accuracy": 0.0}],
     "a 'threshold' per point belongs to a term of E with a later method, and then to every point"),
    ([{"value": "resnet8", "threshold": 1.5, "accuracy": -1.0}], "points[0].threshold"),
    ([{"value": "resnet8", "threshold": 0.5, "accuracy": -1.0}, {"value": "resnet8", "threshold": 0.5, "accuracy": 0}],
     "at threshold 0.5: a value appears twice in points"),
])
def test_a_bad_per_threshold_term_is_refused(points, message):
    from bitops.errors import InputError

    data = base_profile()
    data["interactions"] = [{"before": "E", "after": "D", "points": points, "source": "test"}]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[").replace("'", ".")):
        parse_profile(data)
    data["interactions"] = [{"before": "P", "after": "D", "source": "test",
                             "points": [{"value": "resnet8", "threshold": 0.5, "accuracy": -1.0}]}]
    with pytest.raises(InputError, match="this term's 'before' is 'P'"):
        parse_profile(data)


# ---- refining the single-stage deltas ------------------------------------------------------------

# How far the runs' own single-stage deltas are from the profile's, per measured point.
SHIFT = {("D", "resnet8"): 0.6, ("P", 0.25): 0.2, ("P", 0.5): -0.3, ("P", 0.75): 0.4, ("Q", 1): -0.5,
         ("Q", 2): 0.25, ("Q", 4): 0.1, ("Q", 8): -0.1, ("E", 0.5): -0.2, ("E", 0.8): 0.15, ("E", 0.95): 0.05}


def shifted_profile() -> dict[str, Any]:
    data = base_profile()
    for method, entry in data["methods"].items():
        for point in entry["points"]:
            point["delta"] += SHIFT[(method, point["value"])]
    return data


def test_refined_deltas_and_terms_are_recovered_when_the_profile_is_off(tmp_path):
    rng = np.random.default_rng(11)
    truth = shifted_profile()
    # Every order at two settings of measured points (the deltas refined are measured points' only).
    low = {"D": "resnet8", "P": 0.25, "Q": 1, "E": 0.5}
    high = {"D": "resnet8", "P": 0.75, "Q": 4, "E": 0.95}
    runs = [(order, settings) for settings in (low, high) for order in ALL_ORDERS]
    paths = write_records(tmp_path, runs, rng, 0.0, 0.0, profile=truth)
    for method, value in SHIFT:  # one single-method run per measured point, as a profile makes
        record = make_record(method, {m: value if m == method else None for m in "DPQE"}, rng, 0.0, 0.0, profile=truth)
        path = tmp_path / f"single-{method}-{value}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        paths.append(str(path))
    report, fitted = fit(tmp_path, paths, "--refine-deltas")
    assert report["unidentified"] == []
    got = {(d["method"], d["value"]): d for d in report["deltas"]}
    assert set(got) == set(SHIFT)
    for key, shift in SHIFT.items():
        assert got[key]["correction"] == pytest.approx(shift, abs=1e-9), key
    _, columns = accuracy_design(runs)
    acc = accuracy_terms(report)
    assert set(acc) == set(columns)
    for i, j, value, *threshold in columns:
        assert acc[(i, j, value, *threshold)]["estimate"] == pytest.approx(TRUE_ACCURACY[(i, j)], abs=1e-9), (i, j)
    for method, entry in shifted_profile()["methods"].items():  # the written points are the truth's
        for want, point in zip(entry["points"], fitted["methods"][method]["points"]):
            assert point["value"] == want["value"] and point["delta"] == pytest.approx(want["delta"], abs=1e-9)
            assert point["accuracy"] == pytest.approx(want["accuracy"] + SHIFT[(method, want["value"])])
            assert point["fit"]["profile_delta"] == pytest.approx(want["delta"] - SHIFT[(method, want["value"])])
    # Without refining, the same runs push the profile's error into the terms.
    plain, _ = fit(tmp_path, paths)
    worst = max(abs(t["estimate"] - TRUE_ACCURACY[(t["before"], t["after"])])
                for t in plain["terms"] if t["kind"] == "accuracy")
    assert worst > 0.1


def test_refining_with_only_pq_runs_refines_p_only_and_q_s_error_lands_in_pq(tmp_path):
    # Only a stage that runs first pins its method's delta: here P, never Q. Q's delta is taken
    # from the profile, so the runs' Q offset at 2 bits (SHIFT: +0.25) shows up in PQ@2.
    runs = [("PQ", {"P": ratio, "Q": 2}) for ratio in (0.25, 0.5, 0.75)]
    paths = write_records(tmp_path, runs, np.random.default_rng(12), 0.0, 0.0, profile=shifted_profile())
    report, _ = fit(tmp_path, paths, "--refine-deltas")
    got = {(d["method"], d["value"]): d["correction"] for d in report["deltas"]}
    assert got == pytest.approx({("P", ratio): SHIFT[("P", ratio)] for ratio in (0.25, 0.5, 0.75)}, abs=1e-9)
    assert set(accuracy_terms(report)) == {("P", "Q", 2.0)}
    assert accuracy_terms(report)[("P", "Q", 2.0)]["estimate"] == pytest.approx(-0.4 + 0.25, abs=1e-9)


def test_refining_takes_the_runs_mean_base_accuracy_and_says_where_it_came_from(tmp_path):
    paths = write_runs(tmp_path, ["PQ", "QP", "DP"], np.random.default_rng(13), sigma=0.5, log_sigma=0.0)
    bases = [json.loads(Path(p).read_text())["stages"][0]["accuracy"] for p in paths]
    assert len(set(bases)) == 3  # the noise moved each run's base: the mean is not the profile's
    report, fitted = fit(tmp_path, paths, "--refine-deltas")
    assert report["base_accuracy"] == pytest.approx(np.mean(bases), abs=1e-12)
    assert fitted["base"]["accuracy"] == pytest.approx(np.mean(bases), abs=1e-12)
    assert fitted["base"]["fit"]["profile_accuracy"] == BASE_ACCURACY and fitted["base"]["fit"]["runs"] == 3
    plain, unrefined = fit(tmp_path, paths)
    assert plain["base_accuracy"] is None and unrefined["base"]["accuracy"] == BASE_ACCURACY


def test_a_stage_undone_by_d_has_no_exit_scale_with_e_and_the_reason_says_so(tmp_path):
    # In PDE, P is undone by D: PE does not apply (its shares are fine), DE and PD do.
    paths = write_records(tmp_path, [("PDE", {"P": 0.5, "D": "resnet8", "E": 0.8})] * 2,
                          np.random.default_rng(14), 0.0, 0.0)
    report, _ = fit(tmp_path, paths)
    missing = {(u["before"] + u["after"], u["kind"]): u["reason"] for u in report["unidentified"]}
    assert missing[("PE", "exit_scale")] == "no run applies E after P"
    assert {t["term"] for t in report["exit_scale"]["tables"]} == {"DE"}


# ---- the command's output ------------------------------------------------------------------------

def test_text_report_and_provenance(tmp_path):
    rng = np.random.default_rng(5)
    paths = write_runs(tmp_path, ["PQ", "QP", "PQ", "QP"], rng, sigma=0.1, log_sigma=0.0)
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path)])
    assert rc == 0, stderr
    assert "PQ" in stdout and "QP" in stdout and "not identified" in stdout and "residual rms" in stdout
    fitted = json.loads(out.read_text(encoding="utf-8"))
    assert fitted["provenance"]["fitted_from"] == paths
    assert fitted["provenance"]["source"] == "hand"  # the base's provenance is kept, and extended
    assert fitted["provenance"]["fit"]["accuracy"]["equations"] == 8
    for term in fitted["interactions"]:
        assert term["source"].startswith("fit of RUN files 00-PQ.json, 01-QP.json, 02-PQ.json")
        assert "residual rms" in term["source"]
    assert fitted["methods"] == base_profile()["methods"]  # the single-stage curves are the base's


def test_runs_whose_base_trained_otherwise_are_fitted_with_a_warning(tmp_path):
    # Issue 11: fit used to take such runs without a word. Another budget is a real use, so it is
    # not refused; the report names each run and the setting that differs, in JSON and in text.
    rng = np.random.default_rng(5)
    paths = write_runs(tmp_path, ["PQ", "QP", "PQ", "QP"], rng, sigma=0.1, log_sigma=0.0)
    for path, base in zip(paths, ({"epochs": 3, "lr": 0.05}, {"epochs": 15, "lr": 0.05}, None, None)):
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        if base is not None:
            record["config"]["base"] = base
        Path(path).write_text(json.dumps(record), encoding="utf-8")
    profile = base_profile()
    profile["setup"]["base_training"] = {"epochs": 15, "lr": 0.05}
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(profile), encoding="utf-8")
    argv = ["fit", *paths, "-o", str(tmp_path / "fitted.json"), "--profile", str(profile_path)]
    rc, stdout, stderr = run_cli([*argv, "--json"])
    assert rc == 0, stderr
    assert json.loads(stdout)["warnings"] == ["00-PQ.json: base training epochs 3 (profile 15)"]
    rc, stdout, stderr = run_cli(argv)
    assert rc == 0 and "warning: 00-PQ.json: base training epochs 3 (profile 15)" in stdout.splitlines()[1]


def test_default_base_profile_is_the_shipped_one(tmp_path, monkeypatch):
    from simulator import profile as profile_mod

    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps(base_profile()), encoding="utf-8")
    monkeypatch.setattr(profile_mod, "DEFAULT_PROFILE", shipped)
    runs = [("PQ", {"P": 0.5, "Q": 2}), ("QP", {"Q": 3, "P": 0.4})]
    paths = write_records(tmp_path, runs, np.random.default_rng(6), 0.0, 0.0)
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "f.json")])
    assert rc == 0, stderr
    assert json.loads((tmp_path / "f.json").read_text())["provenance"]["fit"]["base_profile"] == "(shipped default)"
    got = load_profile(tmp_path / "f.json").accuracy_terms
    assert set(got) == {("P", "Q"), ("Q", "P")}
    # Each seen at one value of the later method: a single point, which reads as a constant.
    assert got[("P", "Q")].curve.values == (2,) and got[("Q", "P")].curve.values == (0.4,)
    for pair, term in got.items():
        assert term.at(np.array([1.0, 4.0, 0.7])) == pytest.approx([TRUE_ACCURACY[pair]] * 3, abs=1e-9), pair


def test_incomplete_run_is_used_with_allow_incomplete(tmp_path):
    rng = np.random.default_rng(7)
    record = make_record("PQE", {"P": 0.5, "Q": 2, "E": 0.8}, rng, 0.0, 0.0, status="interrupted")
    record["stages"] = record["stages"][:3]  # base, P, Q finished; E did not
    path = tmp_path / "part.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    report, _ = fit(tmp_path, [str(path)], "--allow-incomplete")
    assert report["accuracy"]["equations"] == 2
    assert set(accuracy_terms(report)) == {("P", "Q", 2.0)}
    assert accuracy_terms(report)[("P", "Q", 2.0)]["estimate"] == pytest.approx(TRUE_ACCURACY[("P", "Q")], abs=1e-9)


# ---- bad input -----------------------------------------------------------------------------------

def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    rng = np.random.default_rng(8)
    good = write_runs(tmp_path, ["PQ"], rng, 0.0, 0.0)[0]

    def record_file(name: str, data: Any) -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return str(path)

    other = dict(SETUP, teacher="resnet32")
    letters = make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0)
    letters["config"]["order"] = "PX"
    student = make_record("DP", {"D": "resnet8", "P": 0.5}, rng, 0, 0)
    student["stages"][1]["config"]["student"] = "resnet20"  # a student the profile has no D point for
    return {
        "no runs": ([], "at least one run record"),
        "missing file": ([str(tmp_path / "nope.json")], "cannot read"),
        "not json": ([record_file("bad.json", "{not json")], "not valid JSON"),
        "a profile, not a run": ([record_file("prof.json", base_profile())], "not a chaincomp run record"),
        "other teacher": ([record_file("t.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0, setup=other))],
                          "teacher is 'resnet32'"),
        "other dataset": ([record_file("d.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0,
                                                             setup=dict(SETUP, dataset="cifar10")))],
                          "dataset is 'cifar10'"),
        "other image size": ([record_file("s.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0,
                                                                setup=dict(SETUP, input_shape=[3, 8, 8])))],
                             "input_shape is [3, 8, 8]"),
        "other student": ([record_file("st.json", student)],
                          "student is 'resnet20'"),
        "incomplete": ([record_file("run.json", make_record("PQ", {"P": 0.5, "Q": 2}, rng, 0, 0, status="running"))],
                       "status is 'running', not 'complete'"),
        "given twice": ([good, good], "is given twice"),
        "order of other letters": ([record_file("x.json", letters)], "config.order must be letters of D, P, Q, E"),
    }


@pytest.mark.parametrize("case", ["no runs", "missing file", "not json", "a profile, not a run", "other teacher",
                                  "other dataset", "other image size", "other student", "incomplete", "given twice",
                                  "order of other letters"])
def test_bad_runs_are_refused(case, tmp_path):
    paths, says = _bad_cases(tmp_path)[case]
    profile_path = tmp_path / "base.json"
    profile_path.write_text(json.dumps(base_profile()), encoding="utf-8")
    out = tmp_path / "fitted.json"
    rc, stdout, stderr = run_cli(["fit", *paths, "-o", str(out), "--profile", str(profile_path)])
    assert rc == 2 and stdout == ""
    assert stderr.startswith("chaincomp fit: error: ") and stderr.count("\n") == 1 and says in stderr
    assert not out.exists()


def test_out_in_missing_directory_is_refused(tmp_path):
    paths = write_runs(tmp_path, ["PQ"], np.random.default_rng(9), 0.0, 0.0)
    rc, _, stderr = run_cli(["fit", *paths, "-o", str(tmp_path / "no" / "f.json")])
    assert rc == 2 and stderr.count("\n") == 1 and "does not exist" in stderr


def test_out_onto_a_run_record_is_refused(tmp_path):
    paths = write_runs(tmp_path, ["PQ"], np.random.default_rng(10), 0.0, 0.0)
    before = Path(paths[0]).read_text()
    rc, _, stderr = run_cli(["fit", *paths, "-o", paths[0]])
    assert rc == 2 and "is one of the run records" in stderr
    assert Path(paths[0]).read_text() == before


def test_fit_and_confirm_modules_import_no_torch():
    # The simulator reads run records and profiles through the trainer's torch-free format owners
    # (DESIGN.md "Layers"); no other trainer module, and no torch.
    code = ("import sys, simulator.fit, simulator.confirm; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer')); "
            "assert set(loaded) <= {'trainer', 'trainer.config', 'trainer.record', 'trainer.profile_format'}, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- cross-validation ----------------------------------------------------------------------------------

def test_leave_one_seed_out_is_exact_for_noise_free_runs_and_the_additive_error_is_the_terms(tmp_path):
    """The same 48 noise-free runs at seeds 0 and 1: fitted on one seed, the terms predict the other
    exactly; without them the error of each run is what its terms add, by the chain model written
    with and without the true terms (fitting.chain_accuracy)."""
    from tests.simulator.fitting import ALL_RUNS, TRUE_ACCURACY, TRUE_SCALE, base_profile, chain_accuracy, make_record
    from tests.simulator.fitting import with_terms

    rng = np.random.default_rng(0)
    paths = []
    for seed in (0, 1):
        for n, (order, settings) in enumerate(ALL_RUNS):
            record = make_record(order, settings, rng, 0.0, 0.0)
            record["config"]["seed"] = seed
            path = tmp_path / f"{n:02d}-{order}-s{seed}.json"
            path.write_text(json.dumps(record), encoding="utf-8")
            paths.append(str(path))
    report, _ = fit(tmp_path, paths)
    cv = report["cross_validation"]
    assert cv["by"] == "seed" and cv["seeds"] == [0, 1] and cv["runs"] == 2 * len(ALL_RUNS)
    assert cv["fitted"]["mean_abs_error"] == pytest.approx(0.0, abs=1e-9)
    truth = parse_profile(with_terms(base_profile(), TRUE_ACCURACY, TRUE_SCALE))
    plain = parse_profile(base_profile())
    gaps = [chain_accuracy(truth, order, s) - chain_accuracy(plain, order, s) for order, s in ALL_RUNS]
    assert cv["additive"]["mean_abs_error"] == pytest.approx(np.mean(np.abs(gaps)), abs=1e-9)
    assert cv["additive"]["rmse"] == pytest.approx(math.sqrt(np.mean(np.square(gaps))), abs=1e-9)


def test_no_cross_validation_with_one_seed(tmp_path):
    from tests.simulator.fitting import ALL_RUNS

    paths = write_records(tmp_path, ALL_RUNS, np.random.default_rng(1), 0.0, 0.0)
    report, _ = fit(tmp_path, paths)
    assert report["cross_validation"] is None
