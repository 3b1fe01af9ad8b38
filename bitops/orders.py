"""The methods of "Chain of Compression" and the rules every order of them obeys, shared by the
trainer and the simulator.

An order is a string of the letters D, P, Q, E; E (early exit, a run-time policy) appears at most
once, and D, P, Q repeat only when the caller allows it (paper section 6).
"""

from __future__ import annotations

from bitops.errors import InputError

__all__ = ["CONFIG_FIELDS", "EXIT_TRIPLES", "METHODS", "PARAMETERS", "exit_value", "is_triple", "validate_order"]

# Distillation, Pruning, Quantization, Early exit: the letters of an order, in this canonical order.
METHODS = "DPQE"
# Each method's hyperparameter as stage profiles and reports name it (the axis a profile measures).
PARAMETERS = {"D": "student", "P": "prune_ratio", "Q": "w_bits", "E": "threshold"}
# The field of each method's stage config (trainer.config) that holds that hyperparameter.
CONFIG_FIELDS = {"D": "student", "P": "ratio", "Q": "w_bits", "E": "threshold"}
# Exit-rate terms of three stages: E before the last D, with a P or Q anywhere. The heads are
# carried through distillation and then compressed (EDP, EDQ: the student's inherited heads are
# pruned or quantized), or a compressed teacher's heads are distilled into the student (EPD, EQD,
# and PED, QED where the heads were trained on the compressed teacher). Pair scales alone miss
# these: the rates of a distilled student's heads collapse under a later Q or P, where a teacher's
# barely move.
EXIT_TRIPLES = ("EDP", "EDQ", "EPD", "EQD", "PED", "QED")


def validate_order(order: str, allow_repeat: bool = False) -> str:
    """The order as given, or an InputError naming the rule it breaks and the value."""
    bad = [c for c in order if c not in METHODS]
    if not order or bad:
        detail = f" ({bad[0]!r} is not one of D, P, Q or E)" if bad else ""
        raise InputError(f"an order must use the letters D, P, Q, E, got {order!r}{detail}")
    if order.count("E") > 1:
        raise InputError(f"E (early exit) can appear once in an order, got {order!r} (paper section 6)")
    if not allow_repeat and len(set(order)) != len(order):
        raise InputError(f"order {order!r} repeats a letter; repeats of D, P, Q need `allow_repeat`")
    return order


def is_triple(letters: str) -> bool:
    """Whether ``letters`` name a three-method term: three different methods, the later two not D
    (a term is interpolated along their hyperparameters, and students are not)."""
    return len(letters) == 3 and len(set(letters)) == 3 and all(m in METHODS for m in letters) and "D" not in letters[1:]


def exit_value(letters: str) -> str:
    """The method whose hyperparameter an exit-rate term is measured over: the one that is neither E
    nor D if there is one (P's ratio, Q's bits), else D (the student)."""
    others = [m for m in letters if m != "E"]
    return next((m for m in others if m != "D"), others[0])
