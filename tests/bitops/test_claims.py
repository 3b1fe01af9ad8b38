"""Claims files: the precision interval of a reported ratio, one ``pytest.raises`` per rule, and the
shipped example against the paper itself.

The shipped ``bitops/claims/paper.toml`` is checked against the paper's text
(``shared/paper/chain_of_compression.txt``): its Tables 2-5 are parsed here, and every DPQE row
must appear as a claim with the same numbers, the bits Table 5's footnotes state, and no bits where
Tables 2-4 state none. The numbers are read from the paper, not retyped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bitops import InputError
from bitops.claims import EXAMPLES, Claim, Reported, load_claims
from bitops.models import zoo_names

ROOT = Path(__file__).resolve().parents[2]
# The paper text lives in the shared folder beside the checkout (or inside it, on a copied tree).
PAPER = next((p for p in (ROOT.parent / "shared" / "paper" / "chain_of_compression.txt",
                          ROOT / "shared" / "paper" / "chain_of_compression.txt") if p.exists()), None)
PAPER_MODELS = {"VGG19": "vgg19_cifar", "ResNet34": "resnet34_cifar", "MobileNetV2": "mobilenetv2_cifar"}

VALID = """\
[[claim]]
name = "ok"
reference = "resnet34_cifar"
student = "resnet18_cifar"
order = "DPQE"
bitops_cr = "859"
cr = 114
"""


# ---- Reported: the interval a printed number stands for --------------------------------------

@pytest.mark.parametrize("raw, text, low, high", [
    ("114", "114", 113.5, 114.5),
    (114, "114", 113.5, 114.5),
    ("113.85", "113.85", 113.845, 113.855),
    ("858.70", "858.70", 858.695, 858.705),  # a string keeps the trailing zero: 2 decimals
    (113.85, "113.85", 113.845, 113.855),
    ("859x", "859", 858.5, 859.5),
    ("859X", "859", 858.5, 859.5),
    ("500×", "500", 499.5, 500.5),  # as the paper's Tables 2-4 print it
    (" 0.5 ", "0.5", 0.45, 0.55),
])
def test_reported_interval_follows_the_printed_precision(raw, text, low, high):
    reported = Reported.parse(raw, "bitops_cr")
    assert reported.text == text
    assert reported.value == pytest.approx((low + high) / 2, abs=1e-12)
    assert reported.low == pytest.approx(low, abs=1e-12)
    assert reported.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("raw, message", [
    ("0", "positive"), (0, "positive"), ("-3", "positive"), (-3.5, "positive"), ("abc", "must be a number"),
    ("", "must be a number"), ("inf", "positive"), ("nan", "positive"), (True, "must be a number"),
    ([114], "must be a number"),
])
def test_reported_rejects(raw, message):
    with pytest.raises(InputError, match=message) as err:
        Reported.parse(raw, "claim #1.cr")
    assert "claim #1.cr" in str(err.value)


# ---- load_claims: one test per rule -----------------------------------------------------------

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "claims.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str) -> list[Claim]:
    return load_claims(_write(tmp_path, text), zoo_names())


def _claim(**fields: object) -> str:
    """A one-claim file: VALID's fields with ``fields`` replacing (None: removing) some."""
    entry = {"name": '"ok"', "reference": '"resnet34_cifar"', "student": '"resnet18_cifar"', "order": '"DPQE"',
             "bitops_cr": '"859"', "cr": "114"}
    for key, value in fields.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return "[[claim]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items())


def test_valid_claim_loads_with_defaults(tmp_path):
    (claim,) = _load(tmp_path, VALID)
    assert claim.name == "ok"
    assert (claim.reference, claim.student, claim.order) == ("resnet34_cifar", "resnet18_cifar", "DPQE")
    assert (claim.num_classes, claim.input_shape, claim.student_width_mult) == (10, (3, 32, 32), 1.0)
    assert claim.w_bits is None and claim.a_bits is None and claim.keep_ratio is None and claim.exits is None
    assert (claim.cr.low, claim.cr.high) == (113.5, 114.5)
    assert claim.has_exits and not claim.heads_pruned


def test_an_omitted_order_is_refused_for_either_kind_of_claim(tmp_path):
    # Issue 11: the order used to default to DPQE (student) / PQE, with early exit; it is never guessed now.
    for claim in (_claim(order=None), _claim(order=None, student=None)):
        with pytest.raises(InputError, match=r"\.order is not stated"):
            _load(tmp_path, claim)


def test_heads_pruned_when_e_comes_before_p(tmp_path):
    (claim,) = _load(tmp_path, _claim(order='"DEPQ"'))
    assert claim.heads_pruned


def test_student_alternatives_parse_widths(tmp_path):
    (claim,) = _load(tmp_path, _claim(student_alternatives='["resnet20", "mobilenetv2_cifar@0.5"]'))
    assert claim.student_alternatives == (("resnet20", 1.0), ("mobilenetv2_cifar", 0.5))


def test_exit_probs_with_exits_load(tmp_path):
    (claim,) = _load(tmp_path, _claim(exits='["layer1", "layer3"]', exit_probs="[0.2, 0.8]"))
    assert claim.exits == ("layer1", "layer3")
    assert claim.exit_probs == (0.2, 0.8)


def _rejects(tmp_path: Path, text: str, *fragments: str) -> str:
    with pytest.raises(InputError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert "claims file" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_claims(tmp_path / "absent.toml", zoo_names())


def test_rejects_text_that_is_not_toml(tmp_path):
    _rejects(tmp_path, "[[claim]\nname = ", "not valid TOML")


def test_rejects_a_file_without_claims(tmp_path):
    _rejects(tmp_path, "# nothing here\n", "no [[claim]] tables")


def test_rejects_top_level_tables_other_than_claim(tmp_path):
    _rejects(tmp_path, VALID + "[settings]\nx = 1\n", "only [[claim]]", "'settings'")


def test_rejects_claim_that_is_not_a_table_array(tmp_path):
    _rejects(tmp_path, 'claim = "resnet34"\n', "no [[claim]] tables")


def test_rejects_unknown_key(tmp_path):
    _rejects(tmp_path, _claim(colour='"red"'), "unknown key 'colour'", "'ok'")


@pytest.mark.parametrize("key", ["name", "reference"])
def test_rejects_missing_required_string(tmp_path, key):
    _rejects(tmp_path, _claim(**{key: None}), f"'{key}' is required")


@pytest.mark.parametrize("key", ["name", "reference"])
def test_rejects_empty_required_string(tmp_path, key):
    _rejects(tmp_path, _claim(**{key: '""'}), f"'{key}' is required")


def test_rejects_a_list_as_name(tmp_path):
    _rejects(tmp_path, _claim(name='["ok"]'), "'name' is required and must be a non-empty string")


def test_rejects_claim_with_no_ratio(tmp_path):
    _rejects(tmp_path, _claim(bitops_cr=None, cr=None), "'bitops_cr'", "'cr'")


@pytest.mark.parametrize("key, value, fragment", [
    ("w_bits", '"1"', "w_bits has the wrong type"),
    ("a_bits", "8.0", "a_bits has the wrong type"),
    ("w_bits", "true", "w_bits has the wrong type"),
    ("student", "1", "student has the wrong type"),
    ("order", '["D", "P"]', "order has the wrong type"),
    ("input", '"3,32,32"', "input has the wrong type"),
    ("num_classes", '"10"', "num_classes has the wrong type"),
    ("keep_ratio", '"0.5"', "keep_ratio has the wrong type"),
    ("exits", '"layer1"', "exits has the wrong type"),
    ("bn", "1", "bn has the wrong type"),
    ("source", "3", "source has the wrong type"),
    ("accuracy", '"93.3"', "accuracy has the wrong type"),
    ("student_alternatives", '"resnet20"', "student_alternatives has the wrong type"),
    ("bitops_cr", "[859]", "bitops_cr must be a number"),
    ("cr", "true", "cr must be a number"),
])
def test_rejects_wrong_types(tmp_path, key, value, fragment):
    _rejects(tmp_path, _claim(**{key: value}), fragment)


@pytest.mark.parametrize("key, value, fragment", [
    ("w_bits", "0", "w_bits must be an integer in 1..32, got 0"),
    ("a_bits", "33", "a_bits must be an integer in 1..32, got 33"),
    ("first_last_bits", "0", "first_last_bits must be an integer in 1..32, got 0"),
    ("first_last_bits", '"eight"', "first_last_bits must be 'same' or an integer in 1..32, got 'eight'"),
    ("input_bits", "64", "input_bits must be an integer in 1..32, got 64"),
    ("aux_bits", "-1", "aux_bits must be an integer in 0..32"),
    ("aux_bits", '"same"', "aux_bits has the wrong type"),
])
def test_rejects_bits_out_of_range(tmp_path, key, value, fragment):
    _rejects(tmp_path, _claim(**{key: value}), fragment)


def test_accepts_same_and_zero_aux_bits(tmp_path):
    (claim,) = _load(tmp_path, _claim(first_last_bits='"same"', input_bits="8", aux_bits="0", bn='"counted"'))
    assert (claim.first_last_bits, claim.input_bits, claim.aux_bits, claim.bn) == ("same", 8, 0, "counted")


@pytest.mark.parametrize("field", [
    {"reference": '"resnet99"'},
    {"student": '"resnet99"'},
    {"student_alternatives": '["resnet20", "resnet99@0.5"]'},
])
def test_rejects_unknown_model(tmp_path, field):
    _rejects(tmp_path, _claim(**field), "unknown model 'resnet99'", "resnet34_cifar")  # lists the zoo


@pytest.mark.parametrize("order", ['"DPXQ"', '"DPPQ"', '"dpq"', '""'])
def test_rejects_bad_order(tmp_path, order):
    _rejects(tmp_path, _claim(order=order), "order must be distinct letters from DPQE")


def test_rejects_student_without_d(tmp_path):
    _rejects(tmp_path, _claim(order='"PQE"'), "student is given but order 'PQE' has no D")


@pytest.mark.parametrize("shape", ["[3, 32]", "[3, 32, 32, 1]", "[3, 32, 0]", "[3, 32, 32.0]", "[3, true, 32]"])
def test_rejects_bad_input_shape(tmp_path, shape):
    _rejects(tmp_path, _claim(input=shape), "input must be [C, H, W] with positive integers")


def test_rejects_zero_classes(tmp_path):
    _rejects(tmp_path, _claim(num_classes="0"), "num_classes must be >= 1, got 0")


def test_rejects_nonpositive_student_width(tmp_path):
    _rejects(tmp_path, _claim(student_width_mult="0"), "student_width_mult must be > 0")


@pytest.mark.parametrize("keep", ["0", "0.0", "1.5", "-0.2"])
def test_rejects_keep_ratio_outside_unit_interval(tmp_path, keep):
    _rejects(tmp_path, _claim(keep_ratio=keep), "keep_ratio must be in (0, 1]")


def test_rejects_unknown_bn_mode(tmp_path):
    _rejects(tmp_path, _claim(bn='"maybe"'), "bn must be 'folded' or 'counted'", "'maybe'")


def test_rejects_exits_that_are_not_names(tmp_path):
    _rejects(tmp_path, _claim(exits='["layer1", 2]'), "exits must be a list of exit point names")


@pytest.mark.parametrize("probs, fragment", [("[0.6, 0.5]", "exit_probs must sum to at most 1"),
                                             ("[-0.1, 0.2]", "exit_probs must be finite and >= 0"),
                                             ('["0.1", 0.2]', "exit_probs must be finite and >= 0")])
def test_rejects_bad_exit_probs(tmp_path, probs, fragment):
    _rejects(tmp_path, _claim(exits='["layer1", "layer2"]', exit_probs=probs), fragment)


def test_rejects_exit_probs_without_exits(tmp_path):
    _rejects(tmp_path, _claim(exit_probs="[0.2]"), "exit_probs needs 'exits'")


def test_rejects_exit_probs_of_another_length(tmp_path):
    _rejects(tmp_path, _claim(exits='["layer1", "layer2"]', exit_probs="[0.2]"), "exit_probs needs 'exits'")


def test_rejects_duplicate_claim_names(tmp_path):
    _rejects(tmp_path, VALID + "\n" + VALID, "claim names must be unique", "'ok'")


@pytest.mark.parametrize("alternative, fragment", [
    ('"resnet20@abc"', "width in 'resnet20@abc' must be a number"),
    ('"resnet20@0"', "width in 'resnet20@0' must be > 0"),
    ('""', "student_alternatives must list zoo names"),
    ("3", "student_alternatives must list zoo names"),
])
def test_rejects_bad_student_alternative(tmp_path, alternative, fragment):
    _rejects(tmp_path, _claim(student_alternatives=f"[{alternative}]"), fragment)


def test_error_names_the_claim_by_index_and_name(tmp_path):
    text = VALID + "\n" + _claim(name='"second"', w_bits="0")
    _rejects(tmp_path, text, "claim #2 ('second').w_bits")


def test_rejects_repeated_exit_names(tmp_path):
    _rejects(tmp_path, _claim(exits='["layer1", "layer1"]', exit_probs="[0.3, 0.4]"), "exits")


def test_rejects_exits_on_an_order_without_e(tmp_path):
    _rejects(tmp_path, _claim(order='"DPQ"', exits='["layer1"]'), "exits")


# ---- the shipped example against the paper's text ---------------------------------------------

def _paper_lines() -> list[str]:
    if PAPER is None:
        pytest.skip("the paper text (shared/paper/chain_of_compression.txt) is not in this checkout")
    return PAPER.read_text(encoding="utf-8").splitlines()


def _ratio_text(cell: str) -> str:
    return cell.strip().rstrip("×").strip()


def paper_tables_2_to_4() -> list[dict[str, str]]:
    """Rows of Tables 2-4: {table, model, dataset, accuracy, bitops_cr, cr} as printed."""
    rows, table, model = [], None, None
    for line in _paper_lines():
        header = re.match(r"Table ([234])\. .* on (\w+)\.$", line)
        if header:
            table, model = header.group(1), header.group(2)
            continue
        cells = line.split("\t")
        if table and len(cells) == 5 and cells[0] != "Dataset":
            rows.append({"table": table, "model": model, "dataset": cells[0], "accuracy": cells[2].split("(")[0],
                         "bitops_cr": _ratio_text(cells[3]), "cr": _ratio_text(cells[4])})
        elif table and not line.strip() and rows and rows[-1]["table"] == table:
            table = None
    return rows


def paper_table_5_dpqe() -> list[dict[str, object]]:
    """The "Ours. DPQE" rows of Table 5 with the bits its footnotes give them."""
    lines = _paper_lines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Table 5."))
    text = "\n".join(lines)
    marked = re.search(r"⁴ DPQE in this line applies (\d+)w(\d+)a", text)
    others = re.search(r"Other lines of DPQE in this table apply (\d+)w(\d+)a", text)
    assert marked and others, "Table 5's bit footnote not found in the paper text"
    rows, model = [], None
    for line in lines[start + 1:]:
        if line.startswith("¹"):
            break
        cells = line.split("\t")
        if len(cells) < 6:
            continue
        model = cells[1] or model
        if "Ours. DPQE" in cells[2]:
            bits = marked if "⁴" in cells[2] else others
            rows.append({"model": model, "accuracy": cells[3].split("(")[0], "bitops_cr": cells[4], "cr": cells[5],
                         "w_bits": int(bits.group(1)), "a_bits": int(bits.group(2))})
    return rows


@pytest.fixture(scope="module")
def paper_claims() -> list[Claim]:
    return load_claims(EXAMPLES["paper"], zoo_names())


def test_paper_parsers_find_the_tables():
    """The parsers below read what the tables hold (12 rows in Tables 2-4, 5 DPQE rows in Table 5)."""
    assert len(paper_tables_2_to_4()) == 12
    assert len(paper_table_5_dpqe()) == 5


def test_shipped_example_loads_17_claims(paper_claims):
    assert len(paper_claims) == 17
    assert all(c.order == "DPQE" and c.student for c in paper_claims)


def test_table_5_claims_carry_the_footnote_bits(paper_claims):
    table5 = [c for c in paper_claims if "(Table 5)" in c.name]
    rows = paper_table_5_dpqe()
    assert len(table5) == len(rows)
    for row in rows:
        matches = [c for c in table5 if c.bitops_cr.text == row["bitops_cr"] and c.cr.text == row["cr"]]
        assert len(matches) == 1, f"no unique Table 5 claim for {row}"
        claim = matches[0]
        assert claim.reference == PAPER_MODELS[row["model"]]
        assert (claim.w_bits, claim.a_bits) == (row["w_bits"], row["a_bits"])
        assert claim.accuracy == float(row["accuracy"])
    assert {(c.w_bits, c.a_bits) for c in table5} == {(1, 8), (4, 8)}


def test_tables_2_to_4_claims_leave_the_bits_open(paper_claims):
    open_claims = [c for c in paper_claims if "(Table 5)" not in c.name]
    rows = paper_tables_2_to_4()
    assert len(open_claims) == len(rows)
    for row in rows:
        matches = [c for c in open_claims if f"(Table {row['table']})" in c.name and c.dataset == row["dataset"]]
        assert len(matches) == 1, f"no unique claim for {row}"
        claim = matches[0]
        assert claim.reference == PAPER_MODELS[row["model"]]
        assert (claim.bitops_cr.text, claim.cr.text) == (row["bitops_cr"], row["cr"])
        assert claim.accuracy == float(row["accuracy"])
        assert claim.w_bits is None and claim.a_bits is None


def test_an_omitted_order_is_refused_not_guessed(tmp_path):
    # Issue 11: without `order` a claim used to be audited as PQE/DPQE, with early exit, which can turn
    # an unreachable ratio into a consistent one; the order is now a required statement.
    path = tmp_path / "c.toml"
    path.write_text('[[claim]]\nname = "no order"\nreference = "resnet20"\nw_bits = 2\na_bits = 4\n'
                    'bitops_cr = "150"\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"claim #1 \('no order'\)\.order is not stated: give the methods"):
        load_claims(path, zoo_names())
