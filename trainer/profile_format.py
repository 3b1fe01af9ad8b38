"""The stage profile: the one owner of its format (type, version, reader with validation, writer). No torch.

``chaincomp profile`` (:mod:`trainer.profile`) writes it, ``chaincomp fit`` rewrites its
interactions, and the simulator (:mod:`simulator.profile`) reads it into interpolating curves.
Format (``_type`` ``chaincomp.StageProfile``, ``_version`` 1)::

    provenance   how it was made: {"source": "measured", "command": ..., "versions": ..., "seeds": [...]}
                 or {"source": "hand", "citation": ...} for profiles entered by hand
    setup        teacher, student, dataset, input_shape, num_classes, exit_head (the design of E's
                 heads, ``bitops.architectures.EXIT_HEADS``; "conv" when absent)
    base         {"model", "accuracy", "accuracy_std"}: the base (teacher) model's test accuracy
    methods      per letter: {"parameter": name, "points": [{"value", "accuracy", "accuracy_std",
                 "delta"} ...]}; D's value is a student name, P's the pruning ratio, Q's the weight
                 bits (with "a_bits" and "first_last_bits" beside "parameter"), E's the threshold,
                 each E point also with "exit_rates" {exit: rate, ..., "final": rate} and E with "exits"
    spread       optional {"floor": a, "per_point": b, "source": ...}: the simulator adds the noise of a
                 new training, a + b x the predicted loss (points, a, b >= 0; b absent: 0), in quadrature to
                 every predicted spread (``fit --select`` calibrates it on held-out runs; absent: none)
    interactions order-interaction terms (empty when only single methods were measured; the
                 simulator's ``fit`` estimates them from run records), each with a "source":
                 {"before": i, "after": j, "accuracy": x}: method j gains x points (loses when
                 x < 0) when it runs after method i, whatever j's hyperparameter;
                 {"before": i, "after": j, "points": [{"value": h, "accuracy": x, "std_error": s}, ...]}:
                 the same as a curve over j's hyperparameter; a term of E with a later method may give
                 each point E's "threshold" too (every point then): a curve over j's value per threshold,
                 interpolated linearly between thresholds (clamped and flagged outside);
                 {"before": i, "after": j, "exit_scale": s}: the early-exit rates are multiplied by
                 s when i runs before j, one of them being E;
                 {"first": i, "before": j, "after": k, "points": [{"before_value": h_j, "value": h_k,
                 "accuracy": x, "std_error": s}, ...]}: what k gains after j beyond the pair terms
                 when both follow i, a full grid over both hyperparameters (j and k are P, Q or E);
                 {"before": i, "after": j[, "first": h], "parameter": p, "smoothing": eps,
                 "exit_scales": [{"value": h, "threshold": t, "exit": x, "scale": s, "log_std_error": e},
                 ...]}: the exit rates measured by ``fit`` per value of the term's other method (P's
                 ratio, Q's bits, else D's student: ``bitops.orders.exit_value``), threshold and exit,
                 a full grid; a pair has E, a triple is one of ``bitops.orders.EXIT_TRIPLES``. Where it
                 applies, the rate r at an exit becomes (r + eps) x s - eps (at least 0): scales
                 multiply the rate smoothed by eps (half a test sample), so a measured rate of 0 has
                 a logarithm and counts in the fit

Accuracies are top-1 % on the test split, averaged over the seeds; ``delta`` is the point's accuracy
minus the base accuracy of the same seed, averaged. Hyperparameter values follow the rules of
:mod:`bitops.rules` (pruning ratio, weight bits, threshold).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bitops.architectures import check_exit_head
from bitops.errors import InputError
from bitops.jsonio import read_json, write_json_atomic
from bitops.orders import EXIT_TRIPLES, METHODS, PARAMETERS, exit_value, is_triple
from bitops.rules import check_bits, check_prune_ratio, check_threshold

__all__ = ["PROFILE_TYPE", "PROFILE_VERSION", "check_profile", "read_profile", "write_profile"]

PROFILE_TYPE = "chaincomp.StageProfile"
PROFILE_VERSION = 1
# Exit rates of an E point are a distribution over the exits and "final": they sum to 1 up to this.
RATES_SUM_TOLERANCE = 1e-6


def check_profile(data: Any, where: str = "stage profile") -> dict[str, Any]:
    """``data`` when it is a stage profile of this version; else an InputError ``WHERE: FIELD ...``."""
    try:
        _check(data)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None
    return data


def read_profile(path: str | Path, where: str | None = None) -> dict[str, Any]:
    """Read and check the stage profile at ``path``; errors start with ``where`` (default: the file)."""
    where = where or f"stage profile {str(path)!r}"
    return check_profile(read_json(path, where), where)


def write_profile(data: dict[str, Any], path: str | Path) -> None:
    """Check ``data`` (what we write must read back), then write it atomically."""
    check_profile(data, f"stage profile {str(path)!r}")
    write_json_atomic(data, path)


# ---- the checks ----------------------------------------------------------------------------------

def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _check_value(method: str, value: Any, field: str) -> None:
    """One hyperparameter value of P, Q or E by its rule."""
    _number(value, field)
    if method == "P":
        check_prune_ratio(field, value)
    elif method == "Q":
        if not float(value).is_integer():
            raise InputError(f"{field} must be whole weight bits, got {value!r}")
        check_bits(field, int(value))
    else:
        check_threshold(field, value)


def _check_points(method: str, points: list[dict[str, Any]], where: str, accuracy_key: str, std_key: str) -> None:
    """Values (each by its method's rule, none twice), accuracies and spreads of a curve's points."""
    values = [p["value"] for p in points]
    if method == "D":
        if not all(isinstance(v, str) and v for v in values):
            raise InputError(f"{where}: D values must be student model names, got {values}")
    else:
        for i, value in enumerate(values):
            _check_value(method, value, f"{where}.points[{i}].value")
    if len(set(values)) != len(values):
        raise InputError(f"{where}: a value appears twice in points ({values})")
    for i, point in enumerate(points):
        _number(point[accuracy_key], f"{where}.points[{i}].{accuracy_key}")
        if point.get(std_key) is not None:
            _number(point[std_key], f"{where}.points[{i}].{std_key}")


def _check_method(method: str, entry: Any, where: str) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("points"), list) or not entry["points"]:
        raise InputError(f"{where} must be an object with a non-empty 'points' list")
    points = entry["points"]
    if entry.get("parameter") != PARAMETERS[method]:
        raise InputError(f"{where}.parameter must be {PARAMETERS[method]!r}, got {entry.get('parameter')!r}")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or "value" not in point or "delta" not in point:
            raise InputError(f"{where}.points[{i}] needs 'value' and 'delta'")
    _check_points(method, points, where, "delta", "accuracy_std")
    if method == "E":
        exits = entry.get("exits")
        if not isinstance(exits, list) or not all(isinstance(e, str) for e in exits):
            raise InputError(f"{where}.exits must list the exit point names")
        for i, point in enumerate(points):
            rates = point.get("exit_rates")
            if not isinstance(rates, dict) or set(rates) != {*exits, "final"}:
                raise InputError(f"{where}.points[{i}].exit_rates must give a rate for each of {exits} and 'final'")
            total = sum(_number(v, f"{where}.points[{i}].exit_rates") for v in rates.values())
            if min(rates.values()) < 0 or abs(total - 1) > RATES_SUM_TOLERANCE:
                raise InputError(f"{where}.points[{i}].exit_rates must be >= 0 and sum to 1, got sum {total:.6g}")
    if method == "Q":
        if "a_bits" in entry:
            check_bits(f"{where}.a_bits", entry["a_bits"])
        check_bits(f"{where}.first_last_bits", entry.get("first_last_bits"), optional=True)


def _check_term_points(pair: tuple[str, str], term: dict[str, Any], where: str) -> None:
    """An accuracy term given per value of the later method's hyperparameter, checked like a curve."""
    after = pair[1]
    points = term["points"]
    if not isinstance(points, list) or not points:
        raise InputError(f"{where}.points must be a non-empty list")
    parameter = term.get("parameter", PARAMETERS[after])
    if parameter != PARAMETERS[after]:
        raise InputError(f"{where}.parameter must be {PARAMETERS[after]!r} (the axis of {after}), got {parameter!r}")
    for i, point in enumerate(points):
        if not isinstance(point, dict) or "value" not in point or "accuracy" not in point:
            raise InputError(f"{where}.points[{i}] needs 'value' and 'accuracy'")
    with_threshold = ["threshold" in point for point in points]
    if not any(with_threshold):
        _check_points(after, points, where, "accuracy", "std_error")
        return
    if pair[0] != "E" or not all(with_threshold):
        raise InputError(f"{where}: a 'threshold' per point belongs to a term of E with a later method, and then "
                         "to every point" + ("" if pair[0] == "E" else f" (this term's 'before' is {pair[0]!r})"))
    rows: dict[float, list[dict[str, Any]]] = {}
    for i, point in enumerate(points):
        _check_value("E", point["threshold"], f"{where}.points[{i}].threshold")
        rows.setdefault(float(point["threshold"]), []).append(point)
    for threshold, row in sorted(rows.items()):
        _check_points(after, row, f"{where} at threshold {threshold:g}", "accuracy", "std_error")


def _check_triple(term: dict[str, Any], where: str) -> None:
    """A three-method term: distinct letters, j and k not D, a full grid of points over their values."""
    key = (term.get("first"), term.get("before"), term.get("after"))
    if not all(isinstance(m, str) and m in METHODS for m in key) or len(set(key)) != 3:
        raise InputError(f"{where} needs 'first', 'before' and 'after', three different letters of D, P, Q, E")
    if not is_triple("".join(key)):
        raise InputError(f"{where}: a three-method term's 'before' and 'after' are P, Q or E (D is not interpolated)")
    if "accuracy" in term or "exit_scale" in term:
        raise InputError(f"{where}: a three-method term is given by 'points' only")
    points = term.get("points")
    if not isinstance(points, list) or not points:
        raise InputError(f"{where}.points must be a non-empty list")
    rows: dict[float, list[Any]] = {}
    for n, point in enumerate(points):
        if not isinstance(point, dict) or not {"before_value", "value", "accuracy"} <= set(point):
            raise InputError(f"{where}.points[{n}] needs 'before_value', 'value' and 'accuracy'")
        _check_value(key[1], point["before_value"], f"{where}.points[{n}].before_value")
        _check_value(key[2], point["value"], f"{where}.points[{n}].value")
        _number(point["accuracy"], f"{where}.points[{n}].accuracy")
        if point.get("std_error") is not None:
            _number(point["std_error"], f"{where}.points[{n}].std_error")
        rows.setdefault(float(point["before_value"]), []).append(point["value"])
    for before, values in rows.items():
        if len(set(values)) != len(values):
            raise InputError(f"{where}: a value appears twice in points at before_value {before:g} ({values})")
    grid = [sorted(rows[before]) for before in sorted(rows)]
    if any(values != grid[0] for values in grid):
        raise InputError(f"{where}.points must form a full grid: every before_value with the same values "
                         f"(got {grid})")


def _check_exit_table(term: dict[str, Any], letters: str, where: str) -> None:
    """Exit scales over a full grid of (value of the term's other method, threshold, exit)."""
    if "E" not in letters or (len(letters) == 3 and letters not in EXIT_TRIPLES):
        raise InputError(f"{where}: exit_scales apply to a pair with E or to one of {', '.join(EXIT_TRIPLES)}, "
                         f"got {letters}")
    extra = sorted({"accuracy", "points", "exit_scale"} & set(term))
    if extra:
        raise InputError(f"{where}: an entry with exit_scales holds nothing else, got {extra[0]!r} too")
    method = exit_value(letters)
    parameter = term.get("parameter", PARAMETERS[method])
    if parameter != PARAMETERS[method]:
        raise InputError(f"{where}.parameter must be {PARAMETERS[method]!r} (the axis of {method}), got {parameter!r}")
    smoothing = _number(term.get("smoothing", 0.0), f"{where}.smoothing")
    if not 0 <= smoothing < 1:
        raise InputError(f"{where}.smoothing must be in [0, 1), got {smoothing}")
    points = term["exit_scales"]
    if not isinstance(points, list) or not points:
        raise InputError(f"{where}.exit_scales must be a non-empty list")
    cells = set()
    for n, point in enumerate(points):
        at = f"{where}.exit_scales[{n}]"
        if not isinstance(point, dict) or not {"value", "threshold", "exit", "scale"} <= set(point):
            raise InputError(f"{at} needs 'value', 'threshold', 'exit' and 'scale'")
        if method == "D":
            if not isinstance(point["value"], str) or not point["value"]:
                raise InputError(f"{at}.value must be a student's name, got {point['value']!r}")
        else:
            _check_value(method, point["value"], f"{at}.value")
        check_threshold(f"{at}.threshold", point["threshold"])
        if not isinstance(point["exit"], str) or not point["exit"]:
            raise InputError(f"{at}.exit must be an exit point's name, got {point['exit']!r}")
        if _number(point["scale"], f"{at}.scale") < 0:
            raise InputError(f"{at}.scale must be >= 0, got {point['scale']!r}")
        if point.get("log_std_error") is not None:
            _number(point["log_std_error"], f"{at}.log_std_error")
        cell = (point["value"], float(point["threshold"]), point["exit"])
        if cell in cells:
            raise InputError(f"{at}: value {cell[0]!r}, threshold {cell[1]:g}, exit {cell[2]!r} is given twice")
        cells.add(cell)
    axes = [{c[k] for c in cells} for k in range(3)]
    if len(cells) != len(axes[0]) * len(axes[1]) * len(axes[2]):
        raise InputError(f"{where}.exit_scales must form a full grid: every value at every threshold and exit "
                         f"({len(axes[0])} x {len(axes[1])} x {len(axes[2])} cells, got {len(cells)})")


def _check_interaction(term: Any, where: str) -> None:
    if isinstance(term, dict) and "exit_scales" in term:
        key = (term.get("first", ""), term.get("before"), term.get("after"))
        if not all(isinstance(m, str) and len(m) <= 1 and m in METHODS for m in key) or len(set(key)) != 3 \
                or not key[1] or not key[2]:
            raise InputError(f"{where} needs 'before' and 'after' (and 'first' for three stages), "
                             "different letters of D, P, Q, E")
        _check_exit_table(term, "".join(key), where)
        return
    if isinstance(term, dict) and "first" in term:
        _check_triple(term, where)
        return
    letters = (term.get("before"), term.get("after")) if isinstance(term, dict) else (None, None)
    if not all(isinstance(m, str) and m in METHODS and len(m) == 1 for m in letters) or letters[0] == letters[1]:
        raise InputError(f"{where} needs 'before' and 'after', two different letters of D, P, Q, E")
    if "accuracy" in term and "points" in term:
        raise InputError(f"{where} gives both 'accuracy' and 'points'; an accuracy term is one or the other")
    if "accuracy" in term:
        _number(term["accuracy"], f"{where}.accuracy")
    if "points" in term:
        _check_term_points(letters, term, where)
    if "exit_scale" in term:
        if "E" not in letters:
            raise InputError(f"{where}: exit_scale applies to pairs with E, got {letters}")
        scale = _number(term["exit_scale"], f"{where}.exit_scale")
        if scale < 0:
            raise InputError(f"{where}.exit_scale must be >= 0, got {scale}")
    if "accuracy" not in term and "points" not in term and "exit_scale" not in term:
        raise InputError(f"{where} needs 'accuracy' (or 'points') and/or 'exit_scale'")


def _check(data: Any) -> None:
    if not isinstance(data, dict):
        raise InputError(f"a stage profile must be a JSON object, got {type(data).__name__}")
    if data.get("_type") != PROFILE_TYPE:
        raise InputError(f"_type must be {PROFILE_TYPE!r}, got {data.get('_type')!r}")
    if isinstance(data.get("_version"), bool) or data.get("_version") != PROFILE_VERSION:
        raise InputError(f"_version must be {PROFILE_VERSION}, got {data.get('_version')!r}")
    for key in ("provenance", "setup", "base", "methods"):
        if not isinstance(data.get(key), dict):
            raise InputError(f"{key!r} must be an object")
    if "exit_head" in data["setup"]:
        check_exit_head("setup.exit_head", data["setup"]["exit_head"])
    base = data["base"]
    _number(base.get("accuracy"), "base.accuracy")
    if base.get("accuracy_std") is not None:
        _number(base["accuracy_std"], "base.accuracy_std")
    if "spread" in data:
        spread = data["spread"]
        if not isinstance(spread, dict):
            raise InputError("spread must be an object {\"floor\": s, \"source\": ...}")
        if _number(spread.get("floor"), "spread.floor") < 0:
            raise InputError(f"spread.floor must be >= 0, got {spread['floor']!r}")
        if "per_point" in spread and _number(spread["per_point"], "spread.per_point") < 0:
            raise InputError(f"spread.per_point must be >= 0, got {spread['per_point']!r}")
    unknown = sorted(set(data["methods"]) - set(METHODS))
    if unknown:
        raise InputError(f"methods: unknown method {unknown[0]!r}; methods are D, P, Q, E")
    for method in METHODS:
        if method in data["methods"]:
            _check_method(method, data["methods"][method], f"methods.{method}")
    terms = data.get("interactions", [])
    if not isinstance(terms, list):
        raise InputError("interactions must be a list")
    for i, term in enumerate(terms):
        _check_interaction(term, f"interactions[{i}]")
