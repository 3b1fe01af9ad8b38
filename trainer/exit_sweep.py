"""Early exit at any threshold from what a run measured once (torch-free).

A model with exit heads is measured on the test split once: per sample, the largest softmax
probability of every head (``confidence``, float32 as the model computed it) and whether each
head and the final classifier got it right (``correct``). Max-softmax early exit at threshold t
sends a sample out at the first head (in depth order) whose confidence is at least t, else to the
final classifier, so every threshold's exit rates and accuracy follow from those arrays
(:func:`sweep`); the trainer's own per-threshold rows are computed this way, from the same arrays
the record keeps (``exit.samples``).

The expected BitOps are linear in the exit rates: a sample leaving at exit e costs the BitOps of
the path to e (the backbone up to e's point plus e's head, and the heads it passed), one reaching
the final classifier the whole model plus every head. ``exit.path_bitops`` records each path's
BitOps (measured by bitops with all the probability at that exit), so BitOps and BitOpsCR at any
threshold are ``sum_e rate_e x path_e`` and ``reference / that`` (:func:`sweep_costs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from bitops.jsonio import check_plot, write_checked
from bitops.result import Result
from bitops.rules import check_threshold

__all__ = ["SweepResult", "decode_samples", "encode_samples", "parse_thresholds", "sweep", "sweep_costs",
           "sweep_record", "sweep_run"]


def sweep(confidence: np.ndarray, correct: np.ndarray, names: Sequence[str],
          thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """One row per threshold: ``threshold``, ``accuracy`` (top-1 %, each sample judged where it
    left) and ``rates`` (the share leaving at each of ``names`` and at "final"; they sum to 1).

    ``confidence``: N x K (float32, K exits in depth order); ``correct``: N x (K + 1) booleans,
    the final classifier last. The comparison is in float32, as the model's own tensors compare."""
    confidence = np.asarray(confidence, dtype=np.float32)
    correct = np.asarray(correct, dtype=bool)
    n, k = confidence.shape
    if correct.shape != (n, k + 1) or len(names) != k:
        raise InputError(f"exit samples: {n} x {k} confidences need {n} x {k + 1} correct flags and {k} exit names, "
                         f"got {correct.shape} and {len(names)}")
    if n == 0:
        raise InputError("exit samples: no sample was measured")
    rows = []
    for threshold in thresholds:
        check_threshold("thresholds", threshold)
        confident = np.concatenate([confidence >= np.float32(threshold), np.ones((n, 1), dtype=bool)], axis=1)
        leave = confident.argmax(axis=1)  # the first True; the final column is always True
        counts = np.bincount(leave, minlength=k + 1)
        rows.append({"threshold": float(threshold),
                     "accuracy": 100.0 * float(correct[np.arange(n), leave].mean()),
                     "rates": {name: int(counts[i]) / n for i, name in enumerate([*names, "final"])}})
    return rows


def encode_samples(confidence: np.ndarray, correct: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The record's ``exit.samples``: per sample, each head's confidence (the shortest decimal that
    reads back as the same float32) and a string of 0/1 per head and the final classifier."""
    confidence = np.asarray(confidence, dtype=np.float32)
    return {"exits": list(names),
            "confidence": [[float(np.format_float_positional(c, unique=True)) for c in row] for row in confidence],
            "correct": ["".join("1" if c else "0" for c in row) for row in np.asarray(correct, dtype=bool)]}


def decode_samples(samples: Any, where: str = "exit.samples") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(confidence N x K float32, correct N x (K + 1), exit names) from a record's ``exit.samples``."""
    try:
        names = [str(n) for n in samples["exits"]]
        confidence = np.array(samples["confidence"], dtype=np.float64).reshape(-1, len(names)).astype(np.float32)
        correct = np.array([[c == "1" for c in row] for row in samples["correct"]], dtype=bool)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{where} must hold 'exits', 'confidence' (a row of numbers per sample) and 'correct' "
                         f"(a 0/1 string per sample): {err}") from None
    if correct.shape != (len(confidence), len(names) + 1):
        raise InputError(f"{where}: {len(confidence)} samples of {len(names)} exits need a {len(names) + 1}-character "
                         f"'correct' string each")
    return confidence, correct, names


def sweep_costs(rows: Sequence[dict[str, Any]], path_bitops: dict[str, float],
                reference_bitops: float) -> list[dict[str, Any]]:
    """``rows`` with ``bitops`` (expected per sample) and ``bitops_cr`` added from the path costs."""
    out = []
    for row in rows:
        bitops = math.fsum(rate * path_bitops[name] for name, rate in row["rates"].items())
        out.append({**row, "bitops": bitops, "bitops_cr": reference_bitops / bitops})
    return out


def parse_thresholds(text: str) -> list[float]:
    """"0.5,0.9" or "A:B:N" (N evenly spaced from A to B); each a threshold in (0, 1]."""
    text = str(text).strip()
    try:
        if ":" in text:
            low, high, count = text.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            values = [float(low)] if n == 1 else list(np.linspace(float(low), float(high), n))
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"thresholds must be a comma list of numbers or A:B:N (N >= 1 values from A to B), "
                         f"got {text!r}") from None
    if not values:
        raise InputError("thresholds must list at least one threshold")
    for v in values:
        check_threshold("thresholds", v)
    return [round(float(v), 12) for v in values]


def sweep_record(record: dict[str, Any], thresholds: Sequence[float] | None = None,
                 stage: int | None = None) -> dict[str, Any]:
    """The threshold sweep of one stage of a run record (default: the last one with exit heads) at
    ``thresholds`` (default: the ones the run measured), from its stored samples and path costs."""
    stages = record["stages"]
    with_exits = [k for k, s in enumerate(stages) if isinstance(s, dict) and "exit" in s]
    if stage is None:
        if not with_exits:
            raise InputError("the run record has no stage with exit heads (E never ran)")
        stage = with_exits[-1]
    elif not 0 <= stage < len(stages) or stage not in with_exits:
        raise InputError(f"stage: {stage} is not a stage with exit heads; those are {with_exits or 'none'}")
    entry = stages[stage]["exit"]
    if "samples" not in entry or "path_bitops" not in entry:
        raise InputError(f"stage {stage}: the record keeps no per-sample exit measurements (made by an earlier "
                         "chaincomp; train again to sweep any threshold), only the thresholds it measured")
    confidence, correct, names = decode_samples(entry["samples"], f"stages[{stage}].exit.samples")
    chosen = list(thresholds) if thresholds is not None else [row["threshold"] for row in entry["thresholds"]]
    rows = sweep_costs(sweep(confidence, correct, names, chosen), entry["path_bitops"], entry["reference_bitops"])
    return {"stage": stage, "letter": stages[stage]["stage"], "operating_threshold": entry["threshold"],
            "exits": names, "samples": len(confidence), "rows": rows}


def format_sweep(report: dict[str, Any]) -> str:
    names = report["exits"]
    lines = [f"threshold sweep of stage {report['stage']} ({report['letter']}) of {report['run']}: {report['samples']} "
             f"test samples, the run's operating threshold {report['operating_threshold']:g}",
             f"{'threshold':>9} {'accuracy':>8} " + " ".join(f"{n:>8}" for n in names) + f" {'final':>6} "
             f"{'BitOps':>11} {'BitOpsCR':>9}"]
    for row in report["rows"]:
        lines.append(f"{row['threshold']:>9g} {row['accuracy']:>8.2f} "
                     + " ".join(f"{100 * row['rates'][n]:>7.1f}%" for n in names)
                     + f" {100 * row['rates']['final']:>5.1f}% {row['bitops']:>11.4g} {row['bitops_cr']:>8.1f}x")
    return "\n".join(lines)


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """Accuracy against BitOpsCR over the thresholds, each point labelled with its threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot([r["bitops_cr"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3, lw=1)
    step = max(1, len(rows) // 10)
    for r in rows[::step]:
        ax.annotate(f"{r['threshold']:g}", (r["bitops_cr"], r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel("BitOpsCR")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"early exit at each threshold: {Path(report['run']).name}, stage {report['stage']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class SweepResult(Result):
    """A threshold sweep; ``to_dict()`` is ``sweep --json``."""

    def format(self) -> str:
        return format_sweep(self.data)

    def plot(self, path: str | Path) -> None:
        """Draw accuracy against BitOpsCR over the thresholds (atomic PNG)."""
        check_plot("plot", path)
        write_checked("plot", path, lambda tmp: plot_sweep(self.data, tmp))


def sweep_run(run: str | Path, thresholds: str | Sequence[float] | None = None,
              stage: int | None = None) -> SweepResult:
    """``chaincomp sweep``: the threshold sweep of a run record (see :func:`sweep_record`);
    ``thresholds`` a list or "A:B:N" (default: the ones the run measured)."""
    from trainer.record import read_record

    chosen = None
    if thresholds is not None:
        chosen = parse_thresholds(thresholds) if isinstance(thresholds, str) else [float(t) for t in thresholds]
        for t in chosen:
            check_threshold("thresholds", t)
    if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int)):
        raise InputError(f"stage must be an integer, got {stage!r}")
    report = sweep_record(read_record(run), chosen, stage)
    return SweepResult({"_type": "chaincomp.Sweep", "_version": 1, "run": str(run), **report})
