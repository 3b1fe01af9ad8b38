"""Which stages of an order reach its final model, and which pair terms apply: the accuracy
model's reading of the trainer's order semantics, shared by ``simulator.model`` (prediction) and
``simulator.fit`` (the equations the terms are fitted from), so both see the same chain.

No numpy, no torch: cheap to import. Which three letters make a three-method term is
``bitops.orders.is_triple``, the rule the stage-profile format checks too.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from bitops.orders import EXIT_TRIPLES, is_triple

__all__ = ["Structure", "structure"]


@dataclass(frozen=True)
class Structure:
    """Which stages of an order reach the final model and which pair terms apply (positions)."""

    kept: tuple[int, ...]  # stages whose own delta applies: the last D, what follows it, and every E
    pairs: tuple[tuple[int, int], ...]  # (i, j), i before j: the term of method i before method j, at j's value
    exit_pairs: tuple[tuple[int, int], ...]  # (i, j), one of them E: the exit-rate scales that apply
    triples: tuple[tuple[int, int, int], ...] = ()  # (i, j, k) kept, i before j before k, j and k not D
    exit_triples: tuple[tuple[int, int, int], ...] = ()  # E before the last D, and a P or Q (EXIT_TRIPLES)


def structure(order: str) -> Structure:
    """The accuracy model's view of ``order`` under the trainer's semantics.

    D builds a fresh student, so P and Q (and an earlier D) before the last D do not reach the
    final model: they lose their own delta and keep only their term with that D (a teacher that
    was pruned or quantized distils differently). E before D is kept: its heads carry over. Every
    other ordered pair of kept stages with different letters adds its term.

    A three-method term applies to three kept stages with different letters, the later two not D.
    A three-stage exit term (``bitops.orders.EXIT_TRIPLES``) applies to E before the last D and
    each P or Q, wherever it runs (before E, between E and D, or after D).

    Exit rates follow the heads: an E before the last D trains heads on the model every earlier
    stage made, and the student's heads distil from them, so every pair of E with another stage
    scales the exit rates; an E after the last D builds heads for the student, so only the pairs of
    E with kept stages do.
    """
    last_d = order.rfind("D")
    kept = tuple(p for p, m in enumerate(order) if p >= last_d or m == "E")
    pairs = tuple((i, j) for i, j in itertools.combinations(range(len(order)), 2)
                  if order[i] != order[j] and j in kept and (i in kept or j == last_d))
    e = order.find("E")
    exit_pairs = tuple((min(x, e), max(x, e)) for x in range(len(order))
                       if e >= 0 and order[x] != "E" and (x in kept or e < last_d))
    triples = tuple((i, j, k) for i, j, k in itertools.combinations(kept, 3)
                    if is_triple(order[i] + order[j] + order[k]))
    exit_triples = tuple(t for t in itertools.combinations(range(len(order)), 3)
                         if e in t and last_d in t and e < last_d and "".join(order[p] for p in t) in EXIT_TRIPLES)
    return Structure(kept=kept, pairs=pairs, exit_pairs=tuple(sorted(exit_pairs)), triples=triples,
                     exit_triples=exit_triples)
