"""The claim audit, checked by round trips through the exact calculator.

Each synthetic claim starts from a known configuration (teacher, student, bits, a uniform keep
ratio, exit probabilities from a constant per-exit hazard h, q_k = h (1-h)^k, and counting
conventions). Its BitOpsCR and CR are computed with ``bitops.evaluate`` and
``bitops.reference_totals`` on a ``Config`` built here, one row at a time: a route independent of
the audit's vectorised per-segment sums. The ratios are written with 6 decimals, the keep ratio and
exit rates are hidden, and the audit must find the true conventions consistent, recover the kept
channels and h, and say so in its verdict. Unreachable claims must be reported as such, with the
numbers, and a claim that fits only a non-default convention must name that convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from bitops import Config, InputError, Policy, evaluate, kept_channels, kept_from_ratio, reference_totals
from bitops.audit import (DEFAULTS, OPEN_AUX, OPEN_BITS, OPEN_BN, OPEN_FIRST_LAST, OPEN_INPUT, ClaimAudit, ComboResult,
                          Convention, audit_claim, claim_combos)
from bitops.claims import Claim, parse_claims
from bitops.models import ModelSpec, load_model_table, zoo_names
from bitops.table import LayerTable

DECIMALS = 6  # reported ratios are written this precisely, so the rounding interval is ~1e-6 wide
HAZARD_TOL = 1e-6


def load(name: str, num_classes: int, width_mult: float, input_shape: tuple[int, int, int] = (3, 32, 32)) -> LayerTable:
    return load_model_table(ModelSpec(name, input_shape=input_shape, num_classes=num_classes, width_mult=width_mult))


def make_claim(**entry: Any) -> Claim:
    return parse_claims({"claim": [{"name": "synthetic", **entry}]}, zoo_names())[0]


def _ratio(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


# ---- the known configuration, costed independently ---------------------------------------------

@dataclass(frozen=True)
class Truth:
    """A compressed model whose ratios a synthetic claim reports."""

    reference: str
    student: str | None
    order: str
    w_bits: int
    a_bits: int
    keep: float
    hazard: float | None = None  # constant per-exit hazard (exits at every exit point)
    exits: tuple[str, ...] | None = None  # or: stated exits with stated probabilities
    exit_probs: tuple[float, ...] | None = None
    policy: Policy = Policy()
    width_mult: float = 1.0
    hide_bits: bool = False
    stated: dict[str, Any] = field(default_factory=dict)  # conventions the claim states

    @property
    def heads_pruned(self) -> bool:
        """DESIGN.md, order semantics: E before P prunes the heads with the backbone."""
        return "E" in self.order and "P" in self.order and self.order.index("E") < self.order.index("P")

    def table(self) -> LayerTable:
        full = load(self.student or self.reference, 10, self.width_mult)
        if "E" not in self.order:
            return full.with_exits([])
        return full.with_exits(list(self.exits)) if self.exits is not None else full

    def kept(self, table: LayerTable, keep: float) -> np.ndarray:
        """Kept channels at ``keep``: every group when heads are pruned (EP); when heads come after
        pruning (PE) each head is the zoo head built for its pruned stage, so its own channels equal
        the kept channels of the stage its conv reads (as the trainer builds it)."""
        kept = kept_from_ratio(table, keep)
        if self.heads_pruned:
            return kept
        names, lay = table.layers["name"], table.layers
        for label_index, label in enumerate(table.group_labels):
            if label.startswith("exits."):
                head_conv = names.index(label)  # the head's first conv produces (and names) its group
                kept[label_index] = kept[lay["in_group"][head_conv]]
        return kept

    def probs(self, table: LayerTable) -> np.ndarray:
        if self.exit_probs is not None:
            by_name = dict(zip(self.exits, self.exit_probs))
            return np.array([by_name[n] for n in table.exit_names])
        if self.hazard is not None:
            return np.array([self.hazard * (1 - self.hazard) ** k for k in range(table.num_exits)])
        return np.zeros(table.num_exits)

    def config(self, table: LayerTable, exit_probs: np.ndarray | None = None) -> Config:
        return Config(w_bits=np.full(table.num_layers, self.w_bits), a_bits=np.full(table.num_layers, self.a_bits),
                      kept=self.kept(table, self.keep),
                      exit_probs=self.probs(table) if exit_probs is None else exit_probs)

    def ratios(self) -> tuple[float, float]:
        """(BitOpsCR, CR) against the full-precision teacher."""
        table = self.table()
        totals = evaluate(table, self.config(table), self.policy).totals
        ref = reference_totals(load(self.reference, 10, 1.0), self.policy)
        return ref.bitops / totals.bitops, ref.storage_bits / totals.storage_bits

    def exit_saving(self) -> float:
        """1 - BitOps with exits / BitOps of the same backbone with no exit heads at all."""
        table = self.table()
        with_exits = evaluate(table, self.config(table), self.policy).totals.bitops
        bare = table.with_exits([])
        return 1 - with_exits / evaluate(bare, self.config(bare), self.policy).totals.bitops

    def convention(self) -> Convention:
        return Convention(self.w_bits, self.a_bits, self.policy.first_last_bits, self.policy.input_bits,
                          self.policy.bn, self.policy.aux_bits, "teacher")

    def pins(self) -> dict[str, Any]:
        conv = self.convention()
        return {k: getattr(conv, k) for k in ("w_bits", "a_bits", "first_last_bits", "input_bits", "bn", "aux_bits",
                                              "reference")}

    def claim(self, **extra: Any) -> Claim:
        bitops_cr, cr = self.ratios()
        entry: dict[str, Any] = {"reference": self.reference, "order": self.order,
                                 "bitops_cr": _ratio(bitops_cr), "cr": _ratio(cr), **self.stated, **extra}
        if self.student:
            entry.update(student=self.student, student_width_mult=self.width_mult)
        if not self.hide_bits:
            entry.update(w_bits=self.w_bits, a_bits=self.a_bits)
        if self.exit_probs is not None:
            entry.update(exits=list(self.exits), exit_probs=list(self.exit_probs))
        return make_claim(**entry)


def combo(audit: ClaimAudit, convention: Convention) -> ComboResult:
    (result,) = [c for c in audit.combos if c.convention == convention]
    return result


ROUND_TRIPS = {
    "resnet34->resnet18 DPQE 1w8a first_last=32 bn=counted": Truth(
        "resnet34_cifar", "resnet18_cifar", "DPQE", 1, 8, keep=0.55, hazard=0.3,
        policy=Policy(first_last_bits=32, bn="counted")),
    "resnet20 alone PQE 2w4a defaults": Truth("resnet20", None, "PQE", 2, 4, keep=0.6, hazard=0.25),
    "resnet34->resnet18 DPQ no exits 4w8a input=8 aux=0": Truth(
        "resnet34_cifar", "resnet18_cifar", "DPQ", 4, 8, keep=0.7, policy=Policy(input_bits=8, aux_bits=0)),
    "resnet34->resnet18 DPQE stated exit_probs (depth order reversed)": Truth(
        "resnet34_cifar", "resnet18_cifar", "DPQE", 2, 8, keep=0.35, exits=("layer3", "layer1"),
        exit_probs=(0.15, 0.35)),
    "resnet20->resnet8 DPQE bits hidden": Truth(
        "resnet20", "resnet8", "DPQE", 2, 4, keep=0.42, hazard=0.15, hide_bits=True),
    "resnet34->resnet18 DEPQ heads pruned 4w4a bn=counted": Truth(
        "resnet34_cifar", "resnet18_cifar", "DEPQ", 4, 4, keep=0.45, hazard=0.2, policy=Policy(bn="counted")),
    "resnet34->resnet18 DPQE first_last=8 stated": Truth(
        "resnet34_cifar", "resnet18_cifar", "DPQE", 1, 8, keep=0.8, hazard=0.1,
        policy=Policy(first_last_bits=8), stated={"first_last_bits": 8}),
}


@pytest.mark.parametrize("truth", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_round_trip_recovers_keep_and_hazard(truth: Truth):
    claim = truth.claim()
    audit = audit_claim(claim, load)
    table = truth.table()
    assert audit.exits == table.exit_names
    result = combo(audit, truth.convention())
    assert result.consistent, result.reason
    assert result.note == ""
    # The recovered keep interval is the grid step of the true keep: the same kept channels.
    true_kept = truth.kept(table, truth.keep)
    for keep in result.keep:
        np.testing.assert_array_equal(truth.kept(table, keep), true_kept)
    low, high = result.bitops_cr_reachable
    assert low <= claim.bitops_cr.high and high >= claim.bitops_cr.low
    assert result.cr_reachable[1] <= claim.cr.value <= result.cr_reachable[0]

    if truth.hazard is not None and table.num_exits:
        assert result.exit_hazard[0] == pytest.approx(truth.hazard, abs=HAZARD_TOL)
        assert result.exit_hazard[1] == pytest.approx(truth.hazard, abs=HAZARD_TOL)
        reach_final = (1 - truth.hazard) ** table.num_exits
        assert result.reach_final[0] == pytest.approx(reach_final, abs=HAZARD_TOL)
        assert result.reach_final[1] == pytest.approx(reach_final, abs=HAZARD_TOL)
    else:
        assert result.exit_hazard is None and result.reach_final is None  # nothing to solve
    if table.num_exits:
        assert result.exit_saving[0] == pytest.approx(truth.exit_saving(), abs=HAZARD_TOL)
        assert result.exit_saving[1] == pytest.approx(truth.exit_saving(), abs=HAZARD_TOL)
    else:
        assert result.exit_saving is None


@pytest.mark.parametrize("truth", [pytest.param(t, id=name) for name, t in ROUND_TRIPS.items()])
def test_round_trip_verdict_quotes_keep_and_hazard(truth: Truth):
    """Pinned to the true conventions, the verdict quotes the recovered keep ratio and hazard."""
    audit = audit_claim(truth.claim(), load, pins=truth.pins())
    assert len(audit.combos) == 1
    result = audit.combos[0]
    # Pinned conventions are the baseline the verdict is judged against: consistent under them.
    assert audit.status == "consistent"
    verdict = audit.verdict()
    assert verdict.startswith("consistent")
    assert f"keep ratio {result.keep[0]:.3f}" in verdict
    if truth.hazard is not None and truth.table().num_exits:
        assert f"h={truth.hazard:.3f}" in verdict
        assert f"{100 * (1 - truth.hazard) ** truth.table().num_exits:.0f}% of samples reach" in verdict
    else:
        assert "h=" not in verdict


def test_default_conventions_give_status_consistent():
    truth = ROUND_TRIPS["resnet20 alone PQE 2w4a defaults"]
    audit = audit_claim(truth.claim(), load)
    assert audit.status == "consistent"
    assert audit.headline().convention == truth.convention()
    verdict = audit.verdict()
    assert f"keep ratio {audit.headline().keep[0]:.3f}" in verdict and f"h={truth.hazard:.3f}" in verdict


def test_hidden_bits_are_among_the_consistent_pairs():
    truth = ROUND_TRIPS["resnet20->resnet8 DPQE bits hidden"]
    audit = audit_claim(truth.claim(), load)
    assert len(audit.combos) == len(OPEN_BITS) ** 2 * len(claim_combos(truth.claim(w_bits=1, a_bits=1)))
    pairs = {(c.convention.w_bits, c.convention.a_bits) for c in audit.combos
             if c.consistent and c.convention.matches(DEFAULTS)}
    assert (truth.w_bits, truth.a_bits) in pairs
    assert audit.status == "consistent"
    assert f"{truth.w_bits}w{truth.a_bits}a" in audit.verdict()


def test_stated_conventions_are_the_only_ones_evaluated():
    truth = ROUND_TRIPS["resnet34->resnet18 DPQE first_last=8 stated"]
    audit = audit_claim(truth.claim(), load)
    assert {c.convention.first_last_bits for c in audit.combos} == {8}
    assert len(audit.combos) == len(OPEN_INPUT) * len(OPEN_BN) * len(OPEN_AUX) * 2  # teacher or student reference


# ---- combinations ------------------------------------------------------------------------------

def test_claim_combos_enumerate_what_the_claim_leaves_open():
    open_claim = make_claim(reference="resnet34_cifar", student="resnet18_cifar", order="DPQE", bitops_cr="859")
    combos = claim_combos(open_claim)
    assert len(combos) == (len(OPEN_BITS) ** 2 * len(OPEN_FIRST_LAST) * len(OPEN_INPUT) * len(OPEN_BN)
                           * len(OPEN_AUX) * 2)
    assert len(set(combos)) == len(combos)
    stated = make_claim(reference="resnet20", order="PQE", bitops_cr="50", w_bits=1, a_bits=8,
                        first_last_bits="same", input_bits=32, bn="counted", aux_bits=0)
    assert claim_combos(stated) == [Convention(1, 8, None, 32, "counted", 0, "teacher")]
    pinned = claim_combos(open_claim, pins={"first_last_bits": 32, "reference": "teacher"})
    assert len(pinned) == len(combos) // (len(OPEN_FIRST_LAST) * 2)
    assert {(c.first_last_bits, c.reference) for c in pinned} == {(32, "teacher")}


# ---- unreachable claims ------------------------------------------------------------------------

def test_cr_beyond_one_channel_per_group_is_unreachable():
    truth = Truth("resnet34_cifar", "resnet18_cifar", "DPQE", 1, 1, keep=1 / 64)  # 1 channel in a 64-wide group
    claim = make_claim(reference="resnet34_cifar", student="resnet18_cifar", order="DPQE", w_bits=1, a_bits=1, cr="1000000000")
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    assert not any(c.consistent for c in audit.combos)
    _, min_keep_cr = truth.ratios()
    reason = combo(audit, truth.convention()).reason
    assert "CR 1000000000 needs at most" in reason and "MiB" in reason
    assert f"(CR {min_keep_cr:.2f})" in reason
    assert "keeping 0.0156 of the channels" in reason
    assert audit.verdict() == f"unreachable because {reason}"


def test_cr_below_the_unpruned_model_is_unreachable():
    truth = Truth("resnet34_cifar", "resnet18_cifar", "DPQE", 1, 8, keep=1.0)
    claim = make_claim(reference="resnet34_cifar", student="resnet18_cifar", order="DPQE", w_bits=1, a_bits=8, cr="2",
                       bitops_cr="100")
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    _, unpruned_cr = truth.ratios()
    reason = combo(audit, truth.convention()).reason
    assert f"already has CR {unpruned_cr:.2f} > the reported 2" in reason
    assert audit.verdict().startswith("unreachable because the unpruned model at these bits already has CR")


def test_bitops_cr_beyond_everyone_leaving_at_the_first_exit_is_unreachable():
    truth = Truth("resnet20", None, "PQE", 1, 8, keep=0.5, exit_probs=(1.0, 0.0), exits=("layer1", "layer2"))
    first_exit_bitops_cr, _ = truth.ratios()
    claimed = f"{5 * first_exit_bitops_cr:.2f}"  # above the first exit, below the first conv alone
    claim = make_claim(reference="resnet20", order="PQE", w_bits=1, a_bits=8, keep_ratio=0.5, bitops_cr=claimed)
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    reason = audit.headline().reason
    assert audit.headline().convention == truth.convention()
    assert "if every sample left at the first exit (layer1)" in reason
    assert f"(BitOpsCR {first_exit_bitops_cr:.2f}," in reason and f"a BitOpsCR of {claimed} allows" in reason
    assert "first conv" not in reason
    assert audit.verdict() == f"unreachable because {reason}"


def test_bitops_cr_beyond_the_first_conv_alone_is_unreachable():
    claim = make_claim(reference="resnet20", order="PQE", w_bits=1, a_bits=8, first_last_bits=32,
                       bitops_cr="1000000")
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    assert all("first conv alone costs" in c.reason for c in audit.combos)
    # The first conv at the smallest keep (1 of the stem's 16 channels), at 32x32 bits, row by row.
    table = load("resnet20", 10, 1.0)
    truth = Truth("resnet20", None, "PQE", 1, 8, keep=1 / 16, policy=Policy(first_last_bits=32))
    report = evaluate(table, truth.config(table), truth.policy)
    first_conv_bitops = report.layer_bitops[table.first_layer]
    assert table.layers["name"][table.first_layer] == "stem.conv"
    head = audit.headline()
    assert head.convention.first_last_bits == 32 and head.convention.input_bits is None
    assert f"the first conv alone costs {first_conv_bitops:.4g} BitOps at 32x32 bits" in head.reason
    assert "a BitOpsCR of 1000000 allows" in head.reason
    assert "first conv" in audit.verdict()


def test_bitops_cr_below_the_no_exit_model_is_unreachable():
    truth = Truth("resnet20", None, "PQE", 1, 8, keep=0.5, hazard=0.0)
    no_exit_bitops_cr, _ = truth.ratios()
    claim = make_claim(reference="resnet20", order="PQE", w_bits=1, a_bits=8, keep_ratio=0.5, bitops_cr="2")
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    reason = combo(audit, truth.convention()).reason
    assert "with no sample leaving early the model already costs only" in reason
    assert f"(BitOpsCR {no_exit_bitops_cr:.2f})" in reason


# ---- conditional claims ------------------------------------------------------------------------

def test_claim_fitting_only_first_last_32_is_conditional():
    """Generated with first/last layers at 32 bits, bits stated, keep solved from CR, no exits.

    With the first conv and the classifier pinned to 32 bits, ``input_bits`` "same" and 32 feed
    the first conv identically, so both of those fit; every other setting must be the true one.
    """
    truth = Truth("resnet20", None, "PQ", 1, 8, keep=0.55, policy=Policy(first_last_bits=32))
    audit = audit_claim(truth.claim(), load)
    consistent = {c.convention for c in audit.combos if c.consistent}
    assert consistent == {truth.convention(), Convention(1, 8, 32, 32, "folded", 32, "teacher")}
    assert audit.status == "conditional"
    verdict = audit.verdict()
    condition = verdict.split(" (")[0]
    # The only departure from the default conventions every consistent combination shares.
    assert condition == "consistent only if first_last_bits=32"
    assert f"keep ratio {combo(audit, truth.convention()).keep[0]:.3f}" in verdict


def test_pinning_a_non_default_convention_makes_it_the_baseline():
    """Pinning the true convention narrows the combinations and is judged as stated: consistent."""
    truth = Truth("resnet20", None, "PQ", 1, 8, keep=0.55, policy=Policy(first_last_bits=32))
    audit = audit_claim(truth.claim(), load, pins={"first_last_bits": 32})
    assert audit.status == "consistent"
    assert {c.convention.first_last_bits for c in audit.combos} == {32}


# ---- reported bugs -----------------------------------------------------------------------------

def test_round_trip_on_mobilenet_widths():
    truth = Truth("mobilenetv2_cifar", "mobilenetv2_cifar", "DPQ", 4, 8, keep=0.49, width_mult=0.5)
    audit = audit_claim(truth.claim(), load)
    result = combo(audit, truth.convention())
    assert result.consistent and result.note == "", result.reason or result.note
    table = truth.table()
    np.testing.assert_array_equal(truth.kept(table, result.keep[0]), truth.kept(table, truth.keep))


def test_verdict_names_stated_non_default_conventions():
    truth = Truth("resnet20", None, "PQ", 1, 8, keep=0.55, policy=Policy(first_last_bits=32, bn="counted"),
                  stated={"first_last_bits": 32, "input_bits": 32, "bn": "counted", "aux_bits": 32})
    audit = audit_claim(truth.claim(), load)
    assert [c.consistent for c in audit.combos] == [True]
    verdict = audit.verdict()
    assert "first_last_bits=32" in verdict and "bn=counted" in verdict
    assert "no setting shared by all" not in verdict


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_stated_keep_ratio_keeping_no_channel_is_rejected():
    claim = make_claim(reference="resnet20", order="PQ", w_bits=1, a_bits=1, keep_ratio=0.01, cr="20")
    with pytest.raises(InputError, match="keep_ratio"):
        audit_claim(claim, load)


def test_cr_reason_at_a_stated_keep_does_not_say_unpruned():
    claim = make_claim(reference="resnet20", order="PQ", w_bits=1, a_bits=1, keep_ratio=0.5, cr="2")
    audit = audit_claim(claim, load)
    assert audit.status == "unreachable"
    assert "unpruned" not in audit.headline().reason


def test_claim_input_shape_is_used_or_rejected():
    common = dict(reference="resnet20", order="PQ", w_bits=1, a_bits=8, bitops_cr="100")
    small = audit_claim(make_claim(**common), load)
    try:
        large = audit_claim(make_claim(input=[3, 64, 64], **common), load)
    except InputError as err:
        assert "input" in str(err)
        return
    # Conv MACs grow 4x at 64x64 while the classifier's do not, so the reachable BitOpsCR moves.
    assert large.headline().bitops_cr_reachable != small.headline().bitops_cr_reachable


def test_near_miss_reason_shows_the_gap():
    truth = Truth("resnet20", None, "PQ", 2, 4, keep=0.5)
    bitops_cr, _ = truth.ratios()
    claim = make_claim(reference="resnet20", order="PQ", w_bits=2, a_bits=4, keep_ratio=0.5,
                       bitops_cr=_ratio(bitops_cr * (1 + 1e-5)))
    audit = audit_claim(claim, load, pins=truth.pins())
    assert audit.status == "unreachable"
    costs, allowed = re.search(r"costs ([0-9.e+]+) BitOps.*above the ([0-9.e+]+)", audit.headline().reason).groups()
    assert costs != allowed


def test_reason_at_stated_exit_probs_does_not_assume_everyone_leaves_first():
    truth = Truth("resnet20", None, "PQE", 2, 4, keep=0.5, exits=("layer1",), exit_probs=(0.3,))
    bitops_cr, _ = truth.ratios()
    claim = make_claim(reference="resnet20", order="PQE", w_bits=2, a_bits=4, keep_ratio=0.5, exits=["layer1"],
                       exit_probs=[0.3], bitops_cr=f"{2 * bitops_cr:.1f}")
    audit = audit_claim(claim, load, pins=truth.pins())
    assert audit.status == "unreachable"
    reason = audit.headline().reason
    assert f"(BitOpsCR {bitops_cr:.2f}," in reason  # the cost at the stated probabilities
    assert "every sample left at the first exit" not in reason


def _pruning_steps(truth: Truth) -> list[float]:
    """The distinct CRs uniform pruning reaches, from a fine scan of keep ratios (resnet20's groups
    have 16, 32 and 64 channels, so a step of 1/1000 sees every one)."""
    from dataclasses import replace

    return sorted({round(replace(truth, keep=k / 1000).ratios()[1], 9) for k in range(300, 1001)})


def test_cr_between_two_pruning_steps_says_which_step_it_takes():
    truth = Truth("resnet20", None, "PQ", 2, 4, keep=0.5)
    steps = _pruning_steps(truth)
    low, high = steps[len(steps) // 2], steps[len(steps) // 2 + 1]
    reported = low + 0.4 * (high - low)  # nearer the lower step, on neither
    claim = make_claim(reference="resnet20", order="PQ", w_bits=2, a_bits=4, cr=_ratio(reported))
    audit = audit_claim(claim, load, pins=truth.pins())
    verdict = audit.verdict()
    assert audit.status == "consistent"
    assert verdict.startswith("consistent to within one pruning step")
    assert f"taken at the nearest, CR {low:.2f} ({100 * (low / reported - 1):+.2f}%)" in verdict
    assert "no keep ratio" not in verdict  # the old wording read as a contradiction of "consistent"


def test_cr_on_a_pruning_step_is_plainly_consistent():
    truth = Truth("resnet20", None, "PQ", 2, 4, keep=0.5)
    claim = make_claim(reference="resnet20", order="PQ", w_bits=2, a_bits=4, cr=_ratio(truth.ratios()[1]))
    verdict = audit_claim(claim, load, pins=truth.pins()).verdict()
    assert verdict.startswith("consistent (") and "pruning step" not in verdict


@pytest.mark.parametrize("order, band", [("PQ", False), ("PQE", True)])
def test_plot_legend_lists_only_what_the_panel_draws(order, band):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from bitops.audit_report import draw_claim

    truth = Truth("resnet20", None, order, 2, 4, keep=0.5, hazard=0.2 if band else None)
    audit = audit_claim(truth.claim(), load, pins=truth.pins())
    fig, ax = plt.subplots()
    try:
        draw_claim(ax, audit)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        drawn_bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    finally:
        plt.close(fig)
    assert ("reachable with early exit" in labels) == band == bool(drawn_bands)
    assert labels[-1] == "claim"
