"""`chaincomp simulate` and `chaincomp orders` end to end, on the hand-made profile of
``tests.simulator.profiles.hand_profile`` written to a temporary file.

Reports are checked for their keys and against routes of their own: a front point's numbers
against ``bitops.evaluate`` of the configuration its settings name, each budget-table cell against
the front it must come from, the text report against the JSON one, the pairwise scores of
``orders`` against ``simulate`` of the two orders. Bad input is checked one rule per case: exit
code 2, one line on stderr, no traceback, nothing on stdout, no plot file left behind. A fresh
interpreter checks that neither command imports torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest

from bitops import Config, evaluate, kept_from_ratio, reference_totals
from bitops.config import heads_follow_stages
from bitops.models import ModelSpec, load_model_table
from chaincomp.cli import main
from simulator.search import score
from tests.simulator.profiles import BASE_ACCURACY, hand_profile

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_ORDERS = ["".join(p) for p in permutations("DPQE")]
BUDGETS = "3,6,10"  # every order holds D (-2 points): smaller budgets are all unreachable
POINT_KEYS = {"settings", "accuracy", "accuracy_std", "bitops_cr", "cr", "bitops", "outside_measured_range"}


def write_profile(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory) -> Path:
    return write_profile(tmp_path_factory.mktemp("profile") / "profile.json", hand_profile())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def all_orders_json(profile_file) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["simulate", "--profile", str(profile_file), "--budget", BUDGETS, "--json"]) == 0
    return json.loads(out.getvalue())


# ---- simulate ----------------------------------------------------------------------------------

def test_json_keys(all_orders_json, profile_file):
    report = all_orders_json
    assert (report["_type"], report["_version"]) == ("chaincomp.Simulation", 1)
    assert report["profile"]["path"] == str(profile_file)
    assert report["profile"]["base_accuracy"] == BASE_ACCURACY
    assert report["budgets"] == [3.0, 6.0, 10.0]
    assert set(report["budget_table"]) == set(ALL_ORDERS)
    assert all(len(row) == 3 for row in report["budget_table"].values())
    assert sorted(r["order"] for r in report["ranking"]) == sorted(ALL_ORDERS)
    scores = [r["score"] for r in report["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert set(report["orders"]) == set(ALL_ORDERS)
    # the default grid: the profile's values, P densified to 13 ratios from 0.25 to 0.75
    assert len(report["grid"]["P"]) == 13 and (report["grid"]["P"][0], report["grid"]["P"][-1]) == (0.25, 0.75)
    assert report["grid"]["Q"] == [1, 2, 4, 8] and report["grid"]["D"] == ["resnet8"]
    for order, entry in report["orders"].items():
        assert entry["combinations"] == 13 * 4 * 3
        assert entry["outside_measured_range"] == 0
        assert entry["front"], order
        for point in entry["front"]:
            assert set(point) == POINT_KEYS
            assert [s["stage"] for s in point["settings"]] == list(order)


def test_fronts_are_staircases(all_orders_json):
    for entry in all_orders_json["orders"].values():
        crs = [p["bitops_cr"] for p in entry["front"]]
        accuracies = [p["accuracy"] for p in entry["front"]]
        assert crs == sorted(crs) and accuracies == sorted(accuracies, reverse=True)


def test_budget_cells_come_from_the_fronts(all_orders_json):
    report = all_orders_json
    for order, row in report["budget_table"].items():
        front = report["orders"][order]["front"]
        for budget, cell in zip(report["budgets"], row):
            within = [p["bitops_cr"] for p in front if BASE_ACCURACY - p["accuracy"] <= budget + 1e-12]
            assert cell == (max(within) if within else None)
        assert next(r["score"] for r in report["ranking"] if r["order"] == order) == pytest.approx(score(row))


def test_a_front_point_equals_the_calculator(all_orders_json):
    """DPQE's most compressed point, rebuilt from its settings by hand and priced by bitops.evaluate."""
    point = all_orders_json["orders"]["DPQE"]["front"][-1]
    values = {s["stage"]: next(v for k, v in s.items() if k != "stage") for s in point["settings"]}
    student = load_model_table(ModelSpec(values["D"], input_shape=(3, 16, 16), num_classes=10)).with_exits(
        ["layer1", "layer2"])
    rates = {e: dict(zip((0.5, 0.8, 0.95), r)) for e, r in (("layer1", (0.5, 0.25, 0.125)),
                                                            ("layer2", (0.25, 0.25, 0.125)))}
    config = Config(w_bits=np.full(student.num_layers, values["Q"]), a_bits=np.full(student.num_layers, 8),
                    kept=heads_follow_stages(student, kept_from_ratio(student, 1.0 - values["P"])),
                    exit_probs=np.array([rates["layer1"][values["E"]], rates["layer2"][values["E"]]]))
    totals = evaluate(student, config).totals
    reference = reference_totals(load_model_table(ModelSpec("resnet20", input_shape=(3, 16, 16), num_classes=10)))
    assert point["bitops"] == totals.bitops
    assert point["bitops_cr"] == reference.bitops / totals.bitops
    assert point["cr"] == reference.storage_bits / totals.storage_bits
    deltas = {"P": {0.75: -4.0}, "Q": {1: -6.0}, "E": {0.5: -3.0, 0.8: -1.0, 0.95: -0.25}}
    assert values["P"] == 0.75 and values["Q"] == 1  # the most compressed point prunes and quantizes most
    assert point["accuracy"] == BASE_ACCURACY - 2.0 - 4.0 - 6.0 + deltas["E"][values["E"]]


def test_text_report_agrees_with_json(capsys, profile_file, all_orders_json):
    code, out, err = run(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS)
    assert code == 0 and err == ""
    lines = out.splitlines()
    ranking = [r["order"] for r in all_orders_json["ranking"]]
    header = next(line for line in lines if line.startswith("loss"))
    assert header.split()[1:] == ranking
    row = next(line for line in lines if line.startswith("<=10%")).split()[1:]
    assert row == [f"{all_orders_json['budget_table'][o][2]:.0f}x" for o in ranking]
    assert f"Pareto front of {ranking[0]}" in out
    assert "note: the profile has no interaction terms" in out
    named = next(line for line in lines if line.startswith("ranking of 24 orders"))
    assert "the top 8 shown, every order in --json" in named
    assert [item.split()[1] for item in named.split("): ", 1)[1].split(", ")] == ranking[:8]


def test_text_front_shows_points_within_the_largest_budget(capsys, profile_file, all_orders_json):
    """The text front: at most 8 points, all within the largest budget, its two ends among them,
    and the counts of what is hidden equal to those of the JSON front."""
    _, out, _ = run(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS)
    lines = out.splitlines()
    best = all_orders_json["ranking"][0]["order"]
    front = all_orders_json["orders"][best]["front"]
    within = [p for p in front if BASE_ACCURACY - p["accuracy"] <= 10 + 1e-12]
    start = lines.index(next(line for line in lines if line.startswith(f"Pareto front of {best} within")))
    shown = [line for line in lines[start + 1:] if line.startswith("  ") and line.strip()[0].isdigit()]
    crs = [float(line.split()[0].rstrip("x")) for line in shown]
    assert 2 <= len(shown) == min(8, len(within))
    assert crs == sorted(crs)
    assert crs[0] == pytest.approx(within[0]["bitops_cr"], abs=0.05)
    assert crs[-1] == pytest.approx(within[-1]["bitops_cr"], abs=0.05)
    accuracies = [float(line.split()[1].rstrip("%")) for line in shown]
    assert all(BASE_ACCURACY - a <= 10 + 0.005 for a in accuracies)
    if len(front) > len(shown):
        assert (f"({len(shown)} of {len(front)} points shown: {len(within) - len(shown)} more within the budget, "
                f"{len(front) - len(within)} beyond it; all in --json)") in out


def test_confidence_asks_the_spread_to_fit_the_budget(capsys, profile_file):
    """At confidence 0.9 a budget cell is the largest BitOpsCR whose predicted accuracy less 1.2816
    spreads (the normal 90% quantile, written out) loses at most the budget; the points are the
    JSON front's, which holds every candidate such a cell can come from."""
    plain = run_json(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS)
    sure = run_json(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS, "--confidence", "0.9")
    assert sure["confidence"] == 0.9 and plain["confidence"] == 0.5
    from simulator.simulate import simulate

    z = 1.2815515655446004
    changed = 0
    for p in simulate(str(profile_file), budgets=BUDGETS).predictions:  # every combination, not just fronts
        for b, budget in enumerate(plain["budgets"]):
            ok = BASE_ACCURACY - (p.accuracy - z * p.accuracy_std) <= budget + 1e-12
            expected = float(p.bitops_cr[ok].max()) if ok.any() else None
            assert sure["budget_table"][p.order][b] == (pytest.approx(expected, rel=1e-12) if expected else None)
            changed += sure["budget_table"][p.order][b] != plain["budget_table"][p.order][b]
    assert changed > 0  # the hand profile's spreads move some cells
    _, out, _ = run(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS, "--confidence", "0.9")
    assert "at confidence 0.9: predicted accuracy - 1.28 std within the budget" in out


def test_front_points_spread_evenly():
    from simulator.report import front_points

    front = [{"accuracy": 100.0 - i, "bitops_cr": float(i)} for i in range(30)]
    picked, within = front_points(front, 100.0, 20.0, 8)
    assert within == 21
    assert [p["bitops_cr"] for p in picked] == [0.0, 3.0, 6.0, 9.0, 11.0, 14.0, 17.0, 20.0]
    assert front_points(front, 100.0, 3.0, 8) == (front[:4], 4)
    assert front_points(front, 200.0, 3.0, 8) == ([front[0]], 0)  # none within: the most accurate alone


def test_orders_option(capsys, profile_file):
    report = run_json(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE,PQ")
    assert set(report["orders"]) == set(report["budget_table"]) == {"DPQE", "PQ"}
    assert [s["stage"] for s in report["orders"]["PQ"]["front"][0]["settings"]] == ["P", "Q"]


def test_repeats_on_request(capsys, profile_file):
    report = run_json(capsys, "simulate", "--profile", str(profile_file), "--orders", "PP", "--allow-repeat",
                      "--grid", "P=0.5")
    (point,) = report["orders"]["PP"]["front"]
    assert point["accuracy"] == BASE_ACCURACY - 1.5 - 1.5


def test_grid_option(capsys, profile_file):
    report = run_json(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE",
                      "--grid", "P=0.1:0.7:7;Q=1,4")
    assert report["grid"]["P"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], abs=1e-12)
    assert report["grid"]["Q"] == [1, 4]
    assert report["grid"]["E"] == [0.5, 0.8, 0.95] and report["grid"]["D"] == ["resnet8"]  # from the profile
    entry = report["orders"]["DPQE"]
    assert entry["combinations"] == 7 * 2 * 3
    assert entry["outside_measured_range"] == 2 * 2 * 3  # P 0.1 and 0.2 lie below the measured 0.25
    for point in entry["front"]:
        ratio = next(s["prune_ratio"] for s in point["settings"] if s["stage"] == "P")
        assert point["outside_measured_range"] == (ratio < 0.25)


def test_plot_writes_a_png(capsys, profile_file, tmp_path):
    target = tmp_path / "fronts.png"
    code, out, err = run(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE,PQ,QP",
                         "--plot", str(target))
    assert code == 0, err
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fronts.png"]  # written atomically, no temp left


def test_confirm_plot_labels_do_not_overlap(tmp_path):
    """Ten orders crowded into a small range: the labels' rendered boxes (matplotlib's own extents,
    not the placement's estimate) overlap neither each other nor a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.confirm_report import place_labels

    rng = np.random.default_rng(3)
    points = [(95 + x, 95 + y) for x, y in rng.random((10, 2))]
    labels = ["".join(p) for p in list(permutations("DPQE"))[:10]]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(*zip(*points))
    ax.set_xlim(94.5, 96.5)
    ax.set_ylim(94.5, 96.5)
    fig.tight_layout()
    place_labels(ax, points, labels)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == labels
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), labels[i]
        assert not any(a.contains(*ax.transData.transform(p)) for p in points), labels[i]
    plt.close(fig)


# ---- orders ------------------------------------------------------------------------------------

def test_orders_json(capsys, profile_file):
    report = run_json(capsys, "orders", "--profile", str(profile_file), "--budget", BUDGETS)
    assert (report["_type"], report["_version"]) == ("chaincomp.OrderAnalysis", 1)
    assert [p["methods"] for p in report["pairs"]] == ["DP", "DQ", "DE", "PQ", "PE", "QE"]
    # No interaction terms: order changes only the cost. P or Q before D never reaches the final
    # model (DESIGN.md "Order semantics"), so D first wins those pairs; every other pair ends with
    # the same model and ties (no edge).
    assert report["edges"] == ["DP", "DQ"]
    assert [p["winner"] for p in report["pairs"]] == ["DP", "DQ", "", "", "", ""]
    assert (report["topological_order"][0], report["cycles"], report["unique"]) == ("D", [], False)
    assert sorted(report["topological_order"]) == sorted("DPQE")
    for row in report["insertion"]:
        assert set(row) == {"pair", "inserted", "orders", "survives"}
        kept, flipped = row["orders"]
        assert row["survives"] == (row["orders"][kept] >= row["orders"][flipped])
    # a pair's scores are simulate's scores of its two orders
    pq = next(p for p in report["pairs"] if p["methods"] == "PQ")
    simulated = run_json(capsys, "simulate", "--profile", str(profile_file), "--budget", BUDGETS, "--orders", "PQ,QP")
    assert pq["scores"] == {r["order"]: pytest.approx(r["score"], rel=1e-12) for r in simulated["ranking"]}


def test_orders_reports_a_cycle(capsys, tmp_path):
    data = hand_profile()
    # each penalty sinks one order of a pair below every budget: PQ, QE and EP win, a cycle P -> Q -> E -> P
    data["interactions"] = [{"before": b, "after": a, "accuracy": -20.0, "source": "hand"}
                            for b, a in (("Q", "P"), ("E", "Q"), ("P", "E"))]
    path = write_profile(tmp_path / "cycle.json", data)
    report = run_json(capsys, "orders", "--profile", str(path), "--budget", BUDGETS)
    assert report["edges"] == ["DP", "DQ", "PQ", "EP", "QE"]
    assert (report["cycles"], report["topological_order"], report["unique"]) == (["EPQ"], "D", False)
    code, out, err = run(capsys, "orders", "--profile", str(path), "--budget", BUDGETS)
    assert code == 0, err
    assert "cycles: E -> P -> Q -> E" in out
    assert "topological sort (methods outside the cycles): D" in out


def test_orders_text(capsys, profile_file):
    code, out, err = run(capsys, "orders", "--profile", str(profile_file), "--budget", BUDGETS)
    assert code == 0 and err == ""
    assert out.startswith("pairwise orders")
    assert "precedence graph: " in out and "insertion check: " in out


def test_neither_command_imports_torch(profile_file, tmp_path):
    script = textwrap.dedent(f"""\
        import contextlib, io, sys
        from chaincomp.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["simulate", "--profile", {str(profile_file)!r}, "--json",
                         "--plot", {str(tmp_path / 'f.png')!r}]) == 0
            assert main(["orders", "--profile", {str(profile_file)!r}]) == 0
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, f"simulate/orders imported {{loaded[:5]}}"
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- bad input ---------------------------------------------------------------------------------

def _profile_without_e() -> dict:
    data = hand_profile()
    del data["methods"]["E"]
    return data


def _profile_version_2() -> dict:
    data = hand_profile()
    data["_version"] = 2
    return data


# case: (profile content (None: the good one; str: raw text; "missing": no file), argv, message fragment)
BAD_INPUT = {
    "profile-missing": ("missing", [], "cannot read (No such file or directory)"),
    "profile-not-json": ("{not json", [], "not valid JSON"),
    "profile-version": (_profile_version_2(), [], "_version must be 1, got 2"),
    "order-letters": (None, ["--orders", "DPQX"], "--orders: an order must use the letters D, P, Q, E, got 'DPQX'"),
    "order-empty": (None, ["--orders", ","], "--orders must be 'all' or a comma list"),
    "order-repeat": (None, ["--orders", "PP"], "repeats a letter; repeats of D, P, Q need --allow-repeat"),
    "order-EE": (None, ["--orders", "EE", "--allow-repeat"], "E (early exit) can appear once"),
    "grid-empty": (None, ["--grid", "P="], "--grid P="),
    "grid-empty-range": (None, ["--grid", "P=0.1:0.5:0"], "--grid P= is empty"),
    "grid-P-1": (None, ["--grid", "P=1.0"], "--grid P= must be in [0, 1), got 1.0"),
    "grid-Q-0": (None, ["--grid", "Q=0"], "--grid Q= must be an integer in 1..32, got 0"),
    "grid-Q-fraction": (None, ["--grid", "Q=2.5"], "integer weight bits in 1..32, got 2.5"),
    "grid-E-0": (None, ["--grid", "E=0"], "--grid E= must be in (0, 1], got 0.0"),
    "grid-unknown-method": (None, ["--grid", "X=1"], "--grid entries must look like"),
    "grid-no-equals": (None, ["--grid", "P"], "--grid entries must look like"),
    "grid-two-letters": (None, ["--grid", "PQ=1"], "--grid entries must look like"),
    "grid-not-numbers": (None, ["--grid", "P=a,b"], "--grid P= must be numbers"),
    "grid-no-student": (None, ["--grid", "D=,"], "--grid D= must list at least one student"),
    "grid-unknown-student": (None, ["--grid", "D=resnet9"], "'resnet9'"),
    "grid-keeps-nothing": (None, ["--grid", "P=0.99"], "keeps 0 channels"),
    "budget-0": (None, ["--budget", "0"], "--budget must be accuracy losses in (0, 100] points, got 0"),
    "budget-101": (None, ["--budget", "1,101"], "got 101"),
    "budget-negative": (None, ["--budget=-1"], "got -1"),
    "budget-nan": (None, ["--budget", "nan"], "(0, 100] points, got nan"),
    "budget-abc": (None, ["--budget", "abc"], "--budget must be comma-separated numbers, got 'abc'"),
    "method-not-profiled": (_profile_without_e(), ["--orders", "DPQE"], "for E"),
    "method-not-profiled-grid-given": (_profile_without_e(), ["--orders", "DPQE", "--grid", "E=0.9"],
                                       "the profile has no measurements for E"),
}


@pytest.mark.parametrize(("content", "argv", "message"), list(BAD_INPUT.values()), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, content, argv, message):
    path = tmp_path / "profile.json"
    if content is None:
        write_profile(path, hand_profile())
    elif isinstance(content, str):
        if content != "missing":
            path.write_text(content, encoding="utf-8")
    else:
        write_profile(path, content)
    plot = tmp_path / "fronts.png"
    code, out, err = run(capsys, "simulate", "--profile", str(path), *argv, "--plot", str(plot))
    assert code == 2
    assert out == ""
    assert err.startswith("chaincomp simulate: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert message in err
    assert not plot.exists()


def test_all_orders_are_those_of_the_profiled_methods(capsys, tmp_path):
    path = write_profile(tmp_path / "no-e.json", _profile_without_e())
    report = run_json(capsys, "simulate", "--profile", str(path))
    assert set(report["orders"]) == {"".join(p) for p in permutations("DPQ")}


def test_plot_into_a_missing_folder_fails_before_work(capsys, profile_file, tmp_path):
    code, out, err = run(capsys, "simulate", "--profile", str(profile_file), "--plot", str(tmp_path / "no" / "f.png"))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "--plot: cannot write" in err and "does not exist" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--budget", "0"], "got 0"),
    (["--grid", "E=1.5"], "--grid E= must be in (0, 1], got 1.5"),
])
def test_orders_bad_input(capsys, profile_file, argv, message):
    code, out, err = run(capsys, "orders", "--profile", str(profile_file), *argv)
    assert (code, out) == (2, "")
    assert err.startswith("chaincomp orders: error: ") and err.count("\n") == 1 and message in err


def test_orders_needs_two_methods(capsys, tmp_path):
    data = hand_profile()
    data["methods"] = {"P": data["methods"]["P"]}
    path = write_profile(tmp_path / "p-only.json", data)
    code, out, err = run(capsys, "orders", "--profile", str(path))
    assert (code, out) == (2, "")
    assert "pairwise orders need at least two methods" in err


def test_an_all_empty_budget_table_says_what_loss_is_reachable(capsys, profile_file):
    """With budgets nothing meets, the text names the smallest loss any front reaches (from the JSON)."""
    data = run_json(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE,PQ", "--budget", "0.001",
                    "--json")
    assert all(v is None for row in data["budget_table"].values() for v in row)
    best = max(p["accuracy"] for o in data["orders"].values() for p in o["front"])
    code, out, _ = run(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE,PQ", "--budget", "0.001")
    assert code == 0
    assert f"the smallest loss any order reaches is {BASE_ACCURACY - best:.2f} points" in out
    code, out, _ = run(capsys, "simulate", "--profile", str(profile_file), "--orders", "DPQE,PQ", "--budget", "100")
    assert "no combination stays within these budgets" not in out
