"""`chaincomp audit` end to end, through `chaincomp.cli.main` and as a subprocess.

The shipped paper example is audited twice per module (text with a plot in-process, JSON in a fresh
interpreter that must not import torch), and the two reports are checked against each other and
against the claims file itself. Bad input is checked one rule per case: exit code 2, one line on
stderr naming the argument and the value, no traceback, no plot left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitops.claims import EXAMPLES
from bitops.claims import load_claims
from bitops.models import zoo_names
from chaincomp.cli import main
from tests.cli.helpers import SMALL_CLAIM

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STATUSES = ("consistent", "conditional", "unreachable")
VERDICT_START = {"consistent": "consistent", "conditional": "consistent only if ",
                 "unreachable": "unreachable because "}

def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def paper_claims():
    return load_claims(EXAMPLES["paper"], zoo_names())


@pytest.fixture(scope="module")
def paper_text(tmp_path_factory):
    """The text report of the paper example, with --plot into an otherwise empty folder."""
    folder = tmp_path_factory.mktemp("audit-plot")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["audit", "--example", "paper", "--plot", str(folder / "audit.png")])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "folder": folder}


@pytest.fixture(scope="module")
def paper_json():
    """The JSON report of the paper example from a fresh interpreter, which checks torch stays out."""
    script = textwrap.dedent("""\
        import sys
        from chaincomp.cli import main
        code = main(["audit", "--example", "paper", "--json"])
        assert code == 0, code
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, f"an audit over shipped tables imported {loaded[:5]}"
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return proc


def test_paper_example_does_not_import_torch(paper_json):
    assert paper_json.returncode == 0, paper_json.stderr[-2000:]


def test_paper_example_prints_a_verdict_per_claim(paper_text, paper_claims):
    assert paper_text["code"] == 0, paper_text["err"]
    assert paper_text["err"] == ""  # the progress bar is silent when stderr is not a terminal
    blocks = paper_text["out"].split("\n== ")[1:]
    assert [block.splitlines()[0] for block in blocks] == [c.name for c in paper_claims]
    for block, claim in zip(blocks, paper_claims):
        verdicts = [line for line in block.splitlines() if line.startswith("   verdict    ")]
        assert len(verdicts) == 1, block
        status, _, text = verdicts[0].removeprefix("   verdict    ").partition(": ")
        assert status.lower() in STATUSES and text.startswith(VERDICT_START[status.lower()])
        assert sum(line.startswith("   if student ") for line in block.splitlines()) == len(claim.student_alternatives)
    assert paper_text["out"].rstrip().splitlines()[-1].startswith(f"{len(paper_claims)} claims: ")


def test_paper_json_has_status_verdict_headline_alternatives(paper_json, paper_claims):
    report = json.loads(paper_json.stdout)
    assert (report["_type"], report["_version"], report["pinned_conventions"]) == ("chaincomp.AuditReport", 1, {})
    assert [c["name"] for c in report["claims"]] == [c.name for c in paper_claims]
    for entry, claim in zip(report["claims"], paper_claims):
        status = entry["status"]
        assert status in STATUSES
        assert entry["verdict"].startswith(VERDICT_START[status])
        assert entry["headline"]["consistent"] == (status != "unreachable")
        assert {"conventions", "consistent", "reason", "keep_ratio", "exit_hazard", "cr_reachable"} <= set(
            entry["headline"])
        assert entry["conventions_evaluated"] == len(entry["combinations"])
        assert entry["conventions_consistent"] == sum(c["consistent"] for c in entry["combinations"])
        assert (entry["conventions_consistent"] > 0) == (status != "unreachable")
        assert entry["bits"] == {"w_bits": claim.w_bits, "a_bits": claim.a_bits}
        alternatives = entry["alternatives"]
        assert [a["student"] for a in alternatives] == [
            name if width == 1.0 else f"{name}@{width:g}" for name, width in claim.student_alternatives]
        for alt in alternatives:
            assert alt["status"] in STATUSES and alt["verdict"].startswith(VERDICT_START[alt["status"]])


def test_text_and_json_reports_agree(paper_text, paper_json):
    report = json.loads(paper_json.stdout)
    for entry in report["claims"]:
        assert f"   verdict    {entry['status'].upper()}: {entry['verdict']}\n" in paper_text["out"]
    statuses = [c["status"] for c in report["claims"]]
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses)
    assert paper_text["out"].rstrip().endswith(f"{len(statuses)} claims: {summary}")


def test_plot_is_a_png_and_leaves_no_temp_files(paper_text):
    assert paper_text["code"] == 0
    folder = paper_text["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["audit.png"]
    assert (folder / "audit.png").read_bytes()[:8] == PNG_MAGIC


def test_convention_pin_narrows_the_combinations(capsys, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(SMALL_CLAIM, encoding="utf-8")
    code, out, err = run(capsys, str(claims), "--json")
    assert code == 0, err
    (free,) = json.loads(out)["claims"]
    code, out, err = run(capsys, str(claims), "--json", "--convention", "first_last_bits=32")
    assert code == 0, err
    report = json.loads(out)
    (pinned,) = report["claims"]
    assert report["pinned_conventions"] == {"first_last_bits": 32}
    assert pinned["conventions_evaluated"] * 3 == free["conventions_evaluated"]  # same, 8, 32 -> 32
    assert {c["conventions"]["first_last_bits"] for c in pinned["combinations"]} == {32}


def test_repeated_pins_combine_and_same_means_no_override(capsys, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(SMALL_CLAIM, encoding="utf-8")
    code, out, err = run(capsys, str(claims), "--json", "--convention", "first_last_bits=same",
                         "--convention", "bn=counted", "--convention", "aux_bits=0")
    assert code == 0, err
    (entry,) = json.loads(out)["claims"]
    assert {(c["conventions"]["first_last_bits"], c["conventions"]["bn"], c["conventions"]["aux_bits"])
            for c in entry["combinations"]} == {("same", "counted", 0)}


def test_all_conventions_lists_every_combination(capsys, tmp_path):
    claims = tmp_path / "claims.toml"
    claims.write_text(SMALL_CLAIM, encoding="utf-8")
    code, out, err = run(capsys, str(claims), "--all-conventions")
    assert code == 0, err
    code, js, _ = run(capsys, str(claims), "--json")
    (entry,) = json.loads(js)["claims"]
    rows = [line for line in out.splitlines() if line.rstrip().endswith("yes") or ("  no: " in line)]
    assert len(rows) == entry["conventions_evaluated"]


# ---- bad input: exit 2, one line naming the problem, no traceback, no plot ----------------------

def _claims_file(folder: Path, text: str) -> str:
    path = folder / "claims.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


BAD_INPUT = {
    "file and --example": (lambda d: [_claims_file(d, SMALL_CLAIM), "--example", "paper"], "exactly one"),
    "neither file nor --example": (lambda d: [], "exactly one"),
    "unknown convention key": (lambda d: ["--example", "paper", "--convention", "foo=1"], "'foo=1'"),
    "convention without a value": (lambda d: ["--example", "paper", "--convention", "w_bits"], "KEY=VALUE"),
    "w_bits 0": (lambda d: ["--example", "paper", "--convention", "w_bits=0"], "w_bits must be an integer in 1..32"),
    "aux_bits 33": (lambda d: ["--example", "paper", "--convention", "aux_bits=33"],
                    "aux_bits must be an integer in 0..32"),
    "bn maybe": (lambda d: ["--example", "paper", "--convention", "bn=maybe"],
                 "bn must be folded or counted, got 'maybe'"),
    "first_last_bits abc": (lambda d: ["--example", "paper", "--convention", "first_last_bits=abc"], "'abc'"),
    "reference nobody": (lambda d: ["--example", "paper", "--convention", "reference=nobody"], "'nobody'"),
    "unknown model in claims": (lambda d: [_claims_file(d, SMALL_CLAIM.replace('"resnet20"', '"resnet99"'))],
                                "unknown model 'resnet99'"),
    "claims file not TOML": (lambda d: [_claims_file(d, "[[claim]\n")], "not valid TOML"),
    "missing claims file": (lambda d: [str(d / "absent.toml")], "cannot read"),
}


@pytest.mark.parametrize("make_argv, fragment", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_exit_2(capsys, tmp_path, make_argv, fragment):
    code, out, err = run(capsys, *make_argv(tmp_path), "--plot", str(tmp_path / "out.png"))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("chaincomp audit: error: ") and fragment in lines[0]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*.png"))


def test_plot_into_a_missing_directory_is_one_line_exit_2(capsys, tmp_path):
    target = tmp_path / "missing" / "out.png"
    code, out, err = run(capsys, "--example", "paper", "--plot", str(target))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chaincomp audit: error: --plot")
    assert "does not exist" in lines[0] and str(target.parent) in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_plot_onto_a_directory_is_refused(capsys, tmp_path):
    code, _, err = run(capsys, "--example", "paper", "--plot", str(tmp_path))
    assert code == 2 and "is a directory" in err and "Traceback" not in err


# ---- reported bugs -----------------------------------------------------------------------------

def test_claim_with_stated_exit_probs_gets_a_verdict(capsys, tmp_path):
    # Without a CR the keep ratio is free, so BitOpsCR 150 is reachable with 30% leaving at layer1.
    claims = _claims_file(tmp_path, SMALL_CLAIM.replace('cr = "40"\n', 'exits = ["layer1"]\nexit_probs = [0.3]\n'))
    code, out, err = run(capsys, claims, "--json")
    assert code == 0, err
    (entry,) = json.loads(out)["claims"]
    assert entry["status"] == "consistent"


def test_unknown_exit_in_claims_names_the_claim_field(capsys, tmp_path):
    claims = _claims_file(tmp_path, SMALL_CLAIM + 'exits = ["layer9"]\n')
    code, _, err = run(capsys, claims)
    assert code == 2 and "Traceback" not in err and "'layer9'" in err
    assert "--exits" not in err and "resnet20 alone" in err and "exits" in err
