"""Audit reported BitOpsCR / CR claims: reachable at all, under which conventions, implying what.

For one claim and one student assumption the audit:

1. enumerates every combination of the conventions the claim leaves open (first/last-layer bits,
   network-input bits, BN counted or folded, biases/BN stored or not, reference = teacher or
   student, and the bits themselves when unstated);
2. evaluates the exact cost model on every keep ratio at which some channel group changes width
   (the pruning step function is evaluated, not interpolated);
3. pins the keep ratio by the reported CR (storage does not depend on exits), then solves for the
   early-exit rate that makes the reported BitOpsCR true (``scipy.optimize.brentq``): a constant
   per-exit hazard ``h`` (a fraction ``h`` of the samples still running leave at each exit), so
   ``q_k = h (1-h)^k`` and the cost is a polynomial in ``h``;
4. says in words whether the claim is consistent, consistent only under some conventions, or
   unreachable, and why (with the numbers).

BitOps are counted as MACs x w_bits x a_bits (the paper's section 3.1 follows Li et al. 2019 and
Liu et al. 2021); ratios do not depend on counting a MAC as 1 or 2 ops, so that is not enumerated.
Exit heads follow the order semantics of DESIGN.md as the trainer realises them: when P comes before
E the heads are built for the pruned backbone (their own channels follow the stage they read, not
pruned again); E before P prunes them with the backbone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

from bitops.claims import Claim, Reported
from bitops.config import heads_follow_stages, kept_channels_array
from bitops.cost import Totals, quantities, reach_probabilities, reference_totals, resolved_bits
from bitops.errors import InputError
from bitops.policy import FULL_PRECISION_BITS, Policy
from bitops.table import LayerTable

__all__ = ["OPEN_BITS", "ClaimAudit", "ComboResult", "Convention", "audit_claim", "claim_combos"]

OPEN_BITS = (1, 2, 4, 8)  # candidate weight/activation bits when the source does not state them
OPEN_FIRST_LAST = (None, 8, 32)
OPEN_INPUT = (None, 8, 32)
OPEN_BN = ("folded", "counted")
OPEN_AUX = (FULL_PRECISION_BITS, 0)
DEFAULTS = {"first_last_bits": None, "input_bits": None, "bn": "folded", "aux_bits": FULL_PRECISION_BITS,
            "reference": "teacher"}

# (zoo name, num_classes, width_mult, input shape) -> table
TableLoader = Callable[[str, int, float, tuple[int, int, int]], LayerTable]


@dataclass(frozen=True)
class Convention:
    """One full set of counting conventions and bits under which a claim is evaluated."""

    w_bits: int
    a_bits: int
    first_last_bits: int | None = None
    input_bits: int | None = None
    bn: str = "folded"
    aux_bits: int = FULL_PRECISION_BITS
    reference: str = "teacher"  # or "student": the CR/BitOpsCR taken against the distilled model

    def policy(self) -> Policy:
        return Policy(first_last_bits=self.first_last_bits, input_bits=self.input_bits, bn=self.bn, aux_bits=self.aux_bits)

    def describe(self) -> dict[str, Any]:
        same = lambda v: "same" if v is None else v  # noqa: E731 - a two-use formatter
        return {"w_bits": self.w_bits, "a_bits": self.a_bits, "first_last_bits": same(self.first_last_bits),
                "input_bits": same(self.input_bits), "bn": self.bn, "aux_bits": self.aux_bits,
                "reference": self.reference}

    def matches(self, baseline: dict[str, Any]) -> bool:
        """Whether every convention equals the baseline (the claim's stated values, else the defaults)."""
        return all(getattr(self, k) == v for k, v in baseline.items())


def _pinned(value: Any) -> Any:
    return None if value == "same" else value


def claim_combos(claim: Claim, pins: dict[str, Any] | None = None) -> list[Convention]:
    """Every convention combination the claim (and the user's ``--convention`` pins) leaves open."""
    pins = pins or {}

    def options(key: str, stated: Any, open_values: Sequence[Any]) -> Sequence[Any]:
        if key in pins:
            return (pins[key],)
        return (_pinned(stated),) if stated is not None else open_values

    references = ("teacher", "student") if claim.student else ("teacher",)
    return [Convention(*combo) for combo in itertools.product(
        options("w_bits", claim.w_bits, OPEN_BITS), options("a_bits", claim.a_bits, OPEN_BITS),
        options("first_last_bits", claim.first_last_bits, OPEN_FIRST_LAST),
        options("input_bits", claim.input_bits, OPEN_INPUT), options("bn", claim.bn, OPEN_BN),
        options("aux_bits", claim.aux_bits, OPEN_AUX), options("reference", None, references))]


@dataclass
class ComboResult:
    """What one convention combination makes of the claim."""

    convention: Convention
    consistent: bool
    reason: str
    cr_reachable: tuple[float, float]  # CR at the smallest keep ratio .. at keep 1 (max, min)
    keep: tuple[float, float] | None = None  # implied keep ratios (first, last consistent grid point)
    bitops_cr_reachable: tuple[float, float] | None = None  # at the implied keep: no exit .. all at the first exit
    exit_hazard: tuple[float, float] | None = None
    exit_saving: tuple[float, float] | None = None  # fraction of the exit-less model's BitOps saved
    reach_final: tuple[float, float] | None = None  # fraction of samples reaching the final classifier
    backbone_depth: tuple[float, float] | None = None  # mean fraction of backbone BitOps a sample runs
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"conventions": self.convention.describe(), "consistent": self.consistent, "reason": self.reason,
                "note": self.note, "cr_reachable": list(self.cr_reachable),
                **{k: None if v is None else list(v) for k, v in (
                    ("keep_ratio", self.keep), ("bitops_cr_reachable", self.bitops_cr_reachable),
                    ("exit_hazard", self.exit_hazard), ("exit_saving", self.exit_saving),
                    ("reach_final", self.reach_final), ("backbone_depth", self.backbone_depth))}}


@dataclass
class ClaimAudit:
    """The audit of one claim under one student assumption."""

    claim: Claim
    student: str | None
    student_width_mult: float
    exits: tuple[str, ...]
    combos: list[ComboResult] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))  # stated or pinned, else default
    grid: _Grid | None = field(default=None, repr=False)
    ref_totals: dict[tuple[str, str, bool], Totals] = field(default_factory=dict, repr=False)

    @property
    def status(self) -> str:
        consistent = [c for c in self.combos if c.consistent]
        if any(c.convention.matches(self.baseline) for c in consistent):
            return "consistent"
        return "conditional" if consistent else "unreachable"

    def headline(self) -> ComboResult:
        """The combination a verdict quotes: the default conventions if consistent, else the closest."""
        consistent = [c for c in self.combos if c.consistent]
        pool = consistent or self.combos
        defaults = [c for c in pool if c.convention.matches(self.baseline)]
        return (defaults or pool)[0]

    def verdict(self) -> str:
        head = self.headline()
        implied = _implied_text(head)
        if self.status == "consistent":
            stated = [f"{k}={'same' if v is None else v}" for k, v in self.baseline.items() if DEFAULTS[k] != v]
            under = f" under the stated {' and '.join(stated)}" if stated else ""
            within = " to within one pruning step" if head.note else ""
            return f"consistent{within}{under}{self._bits_text()}{implied}"
        if self.status == "conditional":
            return f"consistent only if {_condition_text(self.combos, self.baseline)}{implied}"
        return f"unreachable because {head.reason}"

    def _bits_text(self) -> str:
        """Where the claim leaves the bits open: which bit pairs fit under the default conventions."""
        if self.claim.w_bits is not None and self.claim.a_bits is not None:
            return ""
        pairs = sorted({(c.convention.w_bits, c.convention.a_bits) for c in self.combos
                        if c.consistent and c.convention.matches(self.baseline)})
        return " at " + ", ".join(f"{w}w{a}a" for w, a in pairs)

    def curves(self) -> dict[str, np.ndarray]:
        """Reachable (CR, BitOpsCR) over the keep grid under the headline conventions, for plots."""
        head = self.headline().convention
        grid = self.grid
        assert grid is not None
        ref = self.ref_totals[(head.reference, head.bn, head.aux_bits > 0)]
        bits = _role_bits(grid.table, head)
        seg = _segment_costs(grid, bits, head.bn, backbone_only=False)
        return {"keep": grid.keep, "cr": ref.storage_bits / _storage(grid, bits, head.aux_bits),
                "bitops_cr_no_exit": ref.bitops / seg.sum(axis=1), "bitops_cr_all_exit": ref.bitops / seg[:, 0]}


def _implied_text(result: ComboResult) -> str:
    parts = []
    if result.keep is not None:
        lo, hi = result.keep
        parts.append(f"keep ratio {lo:.3f}" if abs(hi - lo) < 5e-4 else f"keep ratio {lo:.3f}-{hi:.3f}")
    if result.exit_saving is not None:
        lo, hi = result.exit_saving
        what = (f"early exit saving {_percent(lo, hi)} of the exit-less model's BitOps" if hi >= 0 else
                f"exit heads costing {_percent(-hi, -lo)} more BitOps than they save")
        if result.exit_hazard is None:
            parts.append(f"{what} at the stated exit probabilities")
        else:
            lo_h, hi_h = result.exit_hazard
            hazard = f"{lo_h:.3f}" if abs(hi_h - lo_h) < 5e-4 else f"{lo_h:.3f}-{hi_h:.3f}"
            parts.append(f"{what} (hazard h={hazard}, {100 * result.reach_final[1]:.0f}% of samples reach the final "
                         "classifier)")
    if result.note:
        parts.append(result.note)
    return f" ({'; '.join(parts)})" if parts else ""


def _percent(lo: float, hi: float) -> str:
    return f"{100 * lo:.1f}%" if abs(hi - lo) < 5e-4 else f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _condition_text(combos: Sequence[ComboResult], baseline: dict[str, Any]) -> str:
    """Departures from the baseline that every consistent combination shares."""
    consistent = [c.convention for c in combos if c.consistent]
    shown = [c.describe() for c in consistent]
    forced = [f"{k}={shown[0][k]}" for k, v in baseline.items()
              if all(getattr(c, k) == getattr(consistent[0], k) for c in consistent) and getattr(consistent[0], k) != v]
    if forced:
        return " and ".join(forced)
    example = ", ".join(f"{k}={v}" for k, v in shown[0].items())
    return (f"one of {len(consistent)} of the {len(combos)} convention sets holds (no departure from the defaults "
            f"shared by all), e.g. {example}")


# ---- the cost of a claim's model over a grid of keep ratios ------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Bit-independent sums over the counted table at every keep ratio of the grid.

    Costs are bilinear in the bits, and only the first and last layers can have bits of their own,
    so MACs are summed per role (first layer, last layer, the rest) and per exit segment, once;
    every convention is then a few multiply-adds of (M,)-arrays.
    """

    table: LayerTable
    keep: np.ndarray  # (M,)
    macs: dict[tuple[str, bool], np.ndarray]  # (role, backbone only) -> (M, K+1) MACs per segment
    weights: dict[str, np.ndarray]  # role -> (M,)
    bn_elements: dict[bool, np.ndarray]  # backbone only -> (M, K+1) BN elements per segment
    aux_params: np.ndarray  # (M,) biases + BN/other per-channel params + extra params
    first_layer_macs: np.ndarray  # (M,)


def _keep_grid(table: LayerTable, prunable: np.ndarray, stated: float | None, claim_name: str) -> np.ndarray:
    """Every keep ratio at which some prunable group changes width, from the smallest that keeps a channel.

    ``j / C`` in floating point can fall a hair below the step it names (``int(C * j/C)`` gives
    ``j - 1``), so the next float up is tried too and points with identical kept channels merged.
    """
    widths, parts = table.group_channels[prunable], table.group_divisions[prunable]
    if stated is not None:
        kept = kept_channels_array(widths, stated, parts)
        if np.any(kept < 1):
            raise InputError(f"claim {claim_name!r}: keep_ratio {stated} keeps 0 of the {int(widths[kept < 1][0])} "
                             "channels of a group; it must keep at least 1")
        return np.array([stated])
    steps = np.concatenate([np.arange(1, c + 1) / c for c in np.unique(widths // parts)] + [np.array([1.0])])
    points = np.unique(np.concatenate([steps, np.nextafter(steps, 2.0)]))
    points = points[points <= 1.0]
    kept = kept_channels_array(widths[None, :], points[:, None], parts[None, :])
    valid = np.all(kept >= 1, axis=1)
    points, kept = points[valid], kept[valid]
    _, first = np.unique(kept, axis=0, return_index=True)
    return points[np.sort(first)]


def _grid(table: LayerTable, heads_pruned: bool, stated_keep: float | None, claim_name: str) -> _Grid:
    lay, ops = table.layers, table.ops
    prunable = ~table.concatenations if heads_pruned else ~(table.head_only_groups | table.concatenations)
    keep = _keep_grid(table, prunable, stated_keep, claim_name)
    kept = kept_channels_array(table.group_channels[None, :], keep[:, None], table.group_divisions[None, :])
    if not heads_pruned:  # P before E: heads are built for the pruned stages they read
        kept = heads_follow_stages(table, kept)
    q = quantities(table, kept)
    rows = np.arange(table.num_layers)
    roles = {"first": rows == table.first_layer,
             "last": (rows == table.last_layer) & (rows != table.first_layer)}
    roles["rest"] = ~(roles["first"] | roles["last"])
    is_bn = np.array([c == "bn" for c in ops["category"]], dtype=bool)
    segments = range(table.num_exits + 1)

    def per_segment(values: np.ndarray, select: np.ndarray, seg_col: np.ndarray, head: np.ndarray,
                    backbone_only: bool) -> np.ndarray:
        return np.stack([values[:, select & (seg_col == s) & (~head if backbone_only else True)].sum(axis=1)
                         for s in segments], axis=1)

    head_rows, head_ops = lay["exit_index"] >= 0, ops["exit_index"] >= 0
    return _Grid(
        table=table, keep=keep,
        macs={(role, bb): per_segment(q.macs, mask, lay["segment"], head_rows, bb)
              for role, mask in roles.items() for bb in (False, True)},
        weights={role: q.weights[:, mask].sum(axis=1) for role, mask in roles.items()},
        bn_elements={bb: per_segment(q.op_elements, is_bn, ops["segment"], head_ops, bb) for bb in (False, True)},
        aux_params=q.bias.sum(axis=1) + q.op_params.sum(axis=1) + table.extra_params,
        first_layer_macs=q.macs[:, table.first_layer],
    )


def _role_bits(table: LayerTable, convention: Convention) -> dict[str, tuple[int, int]]:
    """(w_bits, a_bits) of the first layer, the last layer and the rest under ``convention``."""
    w, a = resolved_bits(table, np.full(table.num_layers, convention.w_bits),
                         np.full(table.num_layers, convention.a_bits), convention.policy())
    return {"first": (int(w[table.first_layer]), int(a[table.first_layer])),
            "last": (int(w[table.last_layer]), int(a[table.last_layer])),
            "rest": (convention.w_bits, convention.a_bits)}


def _segment_costs(grid: _Grid, bits: dict[str, tuple[int, int]], bn: str, backbone_only: bool) -> np.ndarray:
    """(M, K+1) BitOps of each exit segment (backbone rows and, unless ``backbone_only``, its head)."""
    cost = sum(grid.macs[(role, backbone_only)] * (wb * ab) for role, (wb, ab) in bits.items())
    if bn == "counted":
        cost = cost + grid.bn_elements[backbone_only] * FULL_PRECISION_BITS ** 2
    return cost


def _storage(grid: _Grid, bits: dict[str, tuple[int, int]], aux_bits: int) -> np.ndarray:
    return sum(grid.weights[role] * wb for role, (wb, _) in bits.items()) + grid.aux_params * aux_bits


def _reach(h: float, n_exits: int) -> np.ndarray:
    """P(reach segment s) under a constant per-exit hazard h: (1-h)^s."""
    return (1.0 - h) ** np.arange(n_exits + 1)


def _solve_hazard(seg: np.ndarray, target: float) -> float:
    """The hazard h in [0, 1] whose expected cost sum_s seg_s (1-h)^s equals ``target`` (clamped)."""
    cost = lambda h: float(seg @ _reach(h, len(seg) - 1)) - target  # noqa: E731
    if cost(0.0) <= 0:
        return 0.0
    if cost(1.0) >= 0:
        return 1.0
    return float(brentq(cost, 0.0, 1.0, xtol=1e-12))


# ---- one combination --------------------------------------------------------------------------
def _evaluate_combo(claim: Claim, grid: _Grid, ref: Totals, convention: Convention,
                    fixed_reach: np.ndarray | None) -> ComboResult:
    """Consistency of ``claim`` under one convention set, with the implied keep ratio and exit rate."""
    bits = _role_bits(grid.table, convention)
    storage = _storage(grid, bits, convention.aux_bits)
    cr = ref.storage_bits / storage
    cr_reachable = (float(cr[0]), float(cr[-1]))
    mask = np.ones(len(grid.keep), dtype=bool)
    note = ""
    if claim.cr is not None:
        mask = (cr >= claim.cr.low) & (cr <= claim.cr.high)
        if not mask.any():
            reason = _cr_reason(claim.cr, cr, grid, ref.storage_bits)
            if reason:
                return ComboResult(convention, False, reason, cr_reachable)
            nearest = int(np.argmin(np.abs(cr - claim.cr.value)))
            mask[nearest] = True
            note = _between_steps("CR", claim.cr, f"CR {cr[nearest]:.2f}", float(cr[nearest]))

    seg = _segment_costs(grid, bits, convention.bn, backbone_only=False)
    seg_bb = _segment_costs(grid, bits, convention.bn, backbone_only=True)
    n_exits = grid.table.num_exits
    if fixed_reach is not None:
        b_max = b_min = seg @ fixed_reach
    else:
        b_max, b_min = seg.sum(axis=1), seg[:, 0]
    keep_idx = np.flatnonzero(mask)
    result = ComboResult(convention, True, "", cr_reachable, note=note,
                         keep=(float(grid.keep[keep_idx[0]]), float(grid.keep[keep_idx[-1]])))
    if claim.bitops_cr is None:
        return result
    t_lo, t_hi = ref.bitops / claim.bitops_cr.high, ref.bitops / claim.bitops_cr.low
    feasible = keep_idx[(b_min[keep_idx] <= t_hi) & (b_max[keep_idx] >= t_lo)]
    i_lo, i_hi = keep_idx[0], keep_idx[-1]
    result.bitops_cr_reachable = (float(ref.bitops / b_max[i_hi]), float(ref.bitops / b_min[i_lo]))
    if feasible.size == 0:
        if b_min[i_lo] > t_hi or b_max[i_hi] < t_lo:
            result.consistent = False
            result.reason = _bitops_reason(claim, grid, bits, b_min, b_max, keep_idx, t_lo, t_hi, ref.bitops)
            return result
        # The reported window falls between two pruning steps: take the nearest step, and say so.
        gap = np.maximum(b_min[keep_idx] - t_hi, 0) + np.maximum(t_lo - b_max[keep_idx], 0)
        nearest = keep_idx[int(np.argmin(gap))]
        feasible = np.array([nearest])
        step = f"BitOpsCR {ref.bitops / b_max[nearest]:.2f}" + (
            "" if b_max[nearest] == b_min[nearest] else f"..{ref.bitops / b_min[nearest]:.2f}")
        closest = ref.bitops / min(max(ref.bitops / claim.bitops_cr.value, b_min[nearest]), b_max[nearest])
        note = "; ".join(filter(None, [note, _between_steps("BitOpsCR", claim.bitops_cr, step, float(closest))]))
        result.note = note
    result.keep = (float(grid.keep[feasible[0]]), float(grid.keep[feasible[-1]]))
    target = ref.bitops / claim.bitops_cr.value
    if n_exits and fixed_reach is None:
        hazards = [_solve_hazard(seg[i], target) for i in (feasible[0], feasible[-1])]
        result.exit_hazard = (min(hazards), max(hazards))
        reach = [_reach(h, n_exits) for h in hazards]
        result.reach_final = (min(r[-1] for r in reach), max(r[-1] for r in reach))
        depth = [float(seg_bb[i] @ r / seg_bb[i].sum()) for i, r in zip((feasible[0], feasible[-1]), reach)]
        result.backbone_depth = (min(depth), max(depth))
    if n_exits:
        savings = [1 - target / seg_bb[i].sum() for i in (feasible[0], feasible[-1])]
        result.exit_saving = (min(savings), max(savings))
    return result


def _between_steps(what: str, reported: Reported, step: str, nearest: float) -> str:
    """The note of a claim whose printed ratio falls between two pruning steps: which range the
    printed digits allow, and which step (and how far off) the audit takes instead."""
    off = 100 * (nearest / reported.value - 1)
    return (f"{what} {reported.text} (as printed: {reported.low:g} to {reported.high:g}) falls between two pruning "
            f"steps; taken at the nearest, {step} ({off:+.2f}%)")


def _cr_reason(reported: Reported, cr: np.ndarray, grid: _Grid, ref_storage: float) -> str:
    if cr[-1] > reported.high:
        which = "the unpruned model" if grid.keep[-1] == 1.0 else f"the model at keep ratio {grid.keep[-1]:g}"
        return (f"{which} at these bits already has CR {cr[-1]:.2f} > the reported {reported.text}: "
                f"the claim implies more storage than this configuration has")
    if cr[0] < reported.low:
        return (f"CR {reported.text} needs at most {ref_storage / reported.value / 8 / 2**20:.3f} MiB, but even "
                f"keeping {grid.keep[0]:.4f} of the channels (1 channel in the narrowest group) the model needs "
                f"{ref_storage / cr[0] / 8 / 2**20:.3f} MiB (CR {cr[0]:.2f})")
    return ""


def _bitops_reason(claim: Claim, grid: _Grid, bits: dict[str, tuple[int, int]], b_min: np.ndarray, b_max: np.ndarray,
                   keep_idx: np.ndarray, t_lo: float, t_hi: float, ref_bitops: float) -> str:
    table = grid.table
    i_lo, i_hi = keep_idx[0], keep_idx[-1]
    keep_text = (f"at keep ratio {grid.keep[i_lo]:.3f}" if claim.cr is not None or claim.keep_ratio is not None
                 else f"even at keep ratio {grid.keep[i_lo]:.4f}")
    if b_min[i_lo] > t_hi:
        wf, af = bits["first"]
        first_cost = float(grid.first_layer_macs[i_lo] * wf * af)
        if first_cost > t_hi:
            return (f"the first conv alone costs {first_cost:.4g} BitOps at {wf}x{af} bits, more than the "
                    f"{t_hi:.4g} a BitOpsCR of {claim.bitops_cr.text} allows (reference {ref_bitops:.4g})")
        if claim.exit_probs is not None:
            where = "at the stated exit probabilities"
        elif table.num_exits:
            where = f"if every sample left at the first exit ({table.exit_names[0]})"
        else:
            where = "with no exits"
        return (f"{keep_text}, {where} the model costs {b_min[i_lo]:.6g} BitOps (BitOpsCR "
                f"{ref_bitops / b_min[i_lo]:.2f}, {100 * (b_min[i_lo] / t_hi - 1):.3g}% over), above the {t_hi:.6g} "
                f"a BitOpsCR of {claim.bitops_cr.text} allows")
    leaving = "at the stated exit probabilities" if claim.exit_probs is not None else "with no sample leaving early"
    return (f"at keep ratio {grid.keep[i_hi]:.3f}, {leaving} the model already costs only "
            f"{b_max[i_hi]:.6g} BitOps (BitOpsCR {ref_bitops / b_max[i_hi]:.2f}), below the {t_lo:.6g} a BitOpsCR of "
            f"{claim.bitops_cr.text} implies")


# ---- the whole claim --------------------------------------------------------------------------
def audit_claim(claim: Claim, load: TableLoader, *, student: str | None = None, width_mult: float | None = None,
                pins: dict[str, Any] | None = None) -> ClaimAudit:
    """Audit ``claim`` with its own student, or with ``student``/``width_mult`` instead."""
    student = claim.student if student is None else student
    width = claim.student_width_mult if width_mult is None else width_mult
    teacher = load(claim.reference, claim.num_classes, 1.0, claim.input_shape)
    counted_full = load(student, claim.num_classes, width, claim.input_shape) if student else teacher
    exits: tuple[str, ...] = ()
    if claim.has_exits:
        exits = claim.exits if claim.exits is not None else counted_full.exit_names
        unknown = [e for e in exits if e not in counted_full.exit_names]
        if unknown:
            raise InputError(f"claim {claim.name!r}: exits names {unknown[0]!r}, not an exit point of "
                             f"{counted_full.model} ({', '.join(counted_full.exit_names)})")
    counted = counted_full.with_exits(list(exits))
    fixed_reach = None
    if claim.exit_probs is not None:
        order = {n: i for i, n in enumerate(claim.exits or ())}
        fixed_reach = np.array(reach_probabilities([claim.exit_probs[order[n]] for n in counted.exit_names]))
    grid = _grid(counted, claim.heads_pruned, claim.keep_ratio, claim.name)
    stated = {"first_last_bits": _pinned(claim.first_last_bits), "input_bits": _pinned(claim.input_bits),
              "bn": claim.bn, "aux_bits": claim.aux_bits}
    baseline = {k: (pins or {}).get(k, stated.get(k) if stated.get(k) is not None else v) for k, v in DEFAULTS.items()}
    audit = ClaimAudit(claim=claim, student=student, student_width_mult=width, exits=tuple(counted.exit_names),
                       baseline=baseline, grid=grid)
    references = {"teacher": teacher, "student": counted_full if student else teacher}
    ref_totals = audit.ref_totals  # the reference depends on (reference, bn, aux stored) only
    for convention in claim_combos(claim, pins):
        key = (convention.reference, convention.bn, convention.aux_bits > 0)
        if key not in ref_totals:
            ref_totals[key] = reference_totals(references[convention.reference], convention.policy())
        audit.combos.append(_evaluate_combo(claim, grid, ref_totals[key], convention, fixed_reach))
    if not audit.combos:
        raise InputError(f"claim {claim.name!r}: --convention pins leave no convention to evaluate")
    return audit
