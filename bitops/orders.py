"""The rule every order of D, P, Q, E obeys, shared by the trainer and the simulator.

An order is a string of the letters D, P, Q, E; E (early exit, a run-time policy) appears at most
once, and D, P, Q repeat only when the caller allows it (paper section 6).
"""

from __future__ import annotations

from bitops.errors import InputError

__all__ = ["ORDER_LETTERS", "validate_order"]

ORDER_LETTERS = "DPQE"


def validate_order(order: str, allow_repeat: bool = False) -> str:
    """The order as given, or an InputError naming the rule it breaks and the value."""
    bad = [c for c in order if c not in ORDER_LETTERS]
    if not order or bad:
        detail = f" ({bad[0]!r} is not one of D, P, Q or E)" if bad else ""
        raise InputError(f"an order must use the letters D, P, Q, E, got {order!r}{detail}")
    if order.count("E") > 1:
        raise InputError(f"E (early exit) can appear once in an order, got {order!r} (paper section 6)")
    if not allow_repeat and len(set(order)) != len(order):
        raise InputError(f"order {order!r} repeats a letter; repeats of D, P, Q need --allow-repeat")
    return order
