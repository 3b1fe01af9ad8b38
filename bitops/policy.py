"""Counting conventions: the choices that move a reported BitOpsCR by 2-5x.

Every report echoes the policy it was computed under (:meth:`Policy.describe`), because an audit
is only as good as the conventions it names. Defaults follow DESIGN.md ("Conventions"):

* one multiply-accumulate counts 1 (fvcore's MACs); ``ops="flops"`` counts 2;
* BitOps of a MAC layer = MACs x weight bits x input-activation bits (Li et al. 2019, Liu et al.
  2021, as the paper's section 3.1 says); full precision is 32 x 32;
  ``bitops_formula="accumulator"`` adds Baskin et al.'s accumulator term,
  MACs x (bw*ba + bw + ba + log2(fan_in));
* BN folded into the conv (no cost); activations, adds and pools free; a policy may count them
  at ``nonmac_bits`` x ``nonmac_bits`` per element (each element one multiply-add equivalent);
* first conv / last linear at the same bits as the rest, or pinned (8 or 32) by ``first_last_bits``;
* the network input at the first conv's activation bits, or pinned (8 or 32) by ``input_bits``;
* a product of two activations (attention's Q K^T and softmax(.) V, a ``bmm``/``matmul``/``einsum``
  with no weight) at the row's activation bits on both sides, a_bits x a_bits; ``matmul_bits=
  "weight"`` counts its second operand at the row's weight bits instead, as a layer;
* biases and BN parameters stored at ``aux_bits`` (32; 0 leaves them out of the storage count,
  the reference's included).

The reference of BitOpsCR and CR is always the original full-precision model (no exits, no
pruning, 32-bit everything, counted under the same ops/formula/BN/elementwise choices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from bitops.errors import InputError
from bitops.rules import MAX_BITS, check_bits

__all__ = ["BITOPS_FORMULAS", "BN_MODES", "ELEMENTWISE_MODES", "FULL_PRECISION_BITS", "MATMUL_MODES", "OPS_UNITS", "Policy"]

FULL_PRECISION_BITS = MAX_BITS  # 32: a float32 weight or activation
OPS_UNITS = ("macs", "flops")
BITOPS_FORMULAS = ("product", "accumulator")
BN_MODES = ("folded", "counted")
ELEMENTWISE_MODES = ("free", "counted")
MATMUL_MODES = ("activation", "weight")


@dataclass(frozen=True)
class Policy:
    """The counting conventions of one report; checked on construction."""

    ops: Literal["macs", "flops"] = "macs"  # fvcore counts one MAC as 1
    bitops_formula: Literal["product", "accumulator"] = "product"  # MACs x bw x ba
    first_last_bits: int | None = None  # None: first conv / last linear use the layer's own bits
    input_bits: int | None = None  # None: the image is fed at the first conv's activation bits
    bn: Literal["folded", "counted"] = "folded"  # BN folded into the preceding conv at inference
    elementwise: Literal["free", "counted"] = "free"  # ReLU / add / pool: not counted by default
    nonmac_bits: int = FULL_PRECISION_BITS  # operand width of a counted BN/elementwise op
    aux_bits: int = FULL_PRECISION_BITS  # storage width of biases and BN parameters
    matmul_bits: Literal["activation", "weight"] = "activation"  # activation x activation rows: a x a

    def __post_init__(self) -> None:
        if self.ops not in OPS_UNITS:
            raise InputError(f"ops must be one of {', '.join(OPS_UNITS)}, got {self.ops!r}")
        if self.bitops_formula not in BITOPS_FORMULAS:
            raise InputError(f"bitops_formula must be one of {', '.join(BITOPS_FORMULAS)}, got {self.bitops_formula!r}")
        for name, modes in (("bn", BN_MODES), ("elementwise", ELEMENTWISE_MODES), ("matmul_bits", MATMUL_MODES)):
            if getattr(self, name) not in modes:
                raise InputError(f"{name} must be one of {', '.join(modes)}, got {getattr(self, name)!r}")
        check_bits("first_last_bits", self.first_last_bits, optional=True)
        check_bits("input_bits", self.input_bits, optional=True)
        check_bits("nonmac_bits", self.nonmac_bits)
        check_bits("aux_bits", self.aux_bits, allow_zero=True)

    @property
    def ops_per_mac(self) -> int:
        return 2 if self.ops == "flops" else 1

    def counts_category(self, category: str) -> bool:
        """Whether a non-MAC op of this category ("bn", "act", "add", "pool", "other") costs BitOps."""
        if category == "bn":
            return self.bn == "counted"
        return self.elementwise == "counted"

    def for_reference(self) -> Policy:
        """The same counting rules with no bit-width overrides: the full-precision original."""
        return replace(self, first_last_bits=None, input_bits=None)

    def describe(self) -> dict[str, Any]:
        """The conventions in words a report prints and a JSON reader can match on."""
        return {
            "ops": self.ops,
            "bitops_formula": self.bitops_formula,
            "full_precision": f"{FULL_PRECISION_BITS}x{FULL_PRECISION_BITS}",
            "first_last_bits": "same" if self.first_last_bits is None else self.first_last_bits,
            "input_bits": "same" if self.input_bits is None else self.input_bits,
            "bn": self.bn,
            "elementwise": self.elementwise,
            "nonmac_bits": self.nonmac_bits,
            "aux_bits": self.aux_bits,
            "matmul_bits": self.matmul_bits,
            "reference": "original model, full precision, no pruning, no exits",
        }
