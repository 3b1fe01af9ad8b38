"""``chaincomp confirm``: simulate, train the best order and rivals for real, compare (the loop the
paper closes by hand in section 5 / Table 1).

1. Rank the orders as ``simulate`` does at one accuracy-loss budget (max BitOpsCR within it).
2. Take K of them spread evenly over the ranking: the best, the predicted worst, and K-2 between.
3. For each, the hyperparameters of its Pareto-front point with the largest BitOpsCR within the
   budget; when none is within it, its most accurate point (and the report says so).
4. Train each with the trainer in the profile's setup, as a campaign (:func:`measure`: the orders
   share their stage prefixes, and run on ``--jobs`` processes or a Ray cluster); ``DIR/ORDER.json``
   holds its run record, and a complete record already there with the same settings is reused, so
   an interrupted confirm continues.
5. Predicted vs measured accuracy and BitOpsCR per order, their errors, and Kendall's tau between
   the predicted and the measured values over the orders: by accuracy, by BitOpsCR, and by the
   ranking's own score (the order's BitOpsCR when its loss is within the budget, 1 when not: the
   simulator's score from the prediction, the same rule applied to the measured run).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitops.errors import InputError
from simulator.model import Prediction
from simulator.profile import Profile
from simulator.search import budget_table, pareto_front, rank_orders
from trainer.config import ChainConfig
from trainer.record import read_record

__all__ = ["Candidate", "best_point", "chain_config", "compare", "measure",
           "select", "spread_over"]

TIE_TOLERANCE = 1e-9  # relative: values closer than this are one rank (as simulator.search ties scores)


@dataclass(frozen=True)
class Candidate:
    """An order chosen for training, with the grid point it is trained at and what was predicted."""

    order: str
    rank: int  # 1-based place in the predicted ranking
    score: float  # the ranking's score: max BitOpsCR within the budget (1 when unreachable)
    settings: dict[str, Any]  # method -> hyperparameter (orders here do not repeat a letter)
    within_budget: bool
    accuracy: float
    accuracy_std: float
    bitops_cr: float
    cr: float
    outside: bool  # some hyperparameter lies outside the profile's measured range


def spread_over(count: int, k: int) -> list[int]:
    """``k`` distinct positions in ``range(count)``, evenly spread, always the first and the last.

    ``floor(x + 0.5)`` rather than ``round``: positions at least 1 apart stay distinct (banker's
    rounding sends 1.5 and 2.5 both to 2).
    """
    if k == 1:
        return [0]
    return [int(math.floor(x + 0.5)) for x in np.linspace(0, count - 1, k)]


def best_point(prediction: Prediction, base_accuracy: float, budget: float) -> tuple[int, bool]:
    """(index, within budget): the front point of max BitOpsCR losing at most ``budget`` points,
    else the most accurate point."""
    front = pareto_front(prediction)  # rising BitOpsCR, falling accuracy
    within = [i for i in front if base_accuracy - prediction.accuracy[i] <= budget + 1e-12]
    return (int(within[-1]), True) if within else (int(front[0]), False)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def select(predictions: Sequence[Prediction], base_accuracy: float, budget: float, top: int) -> list[Candidate]:
    """The ``top`` orders to train (best first), each at its best-within-budget point."""
    if not 1 <= top <= len(predictions):
        raise InputError(f"top must be in 1..{len(predictions)} (the number of orders), got {top}")
    by_order = {p.order: p for p in predictions}
    ranking = rank_orders(budget_table(predictions, base_accuracy, [budget]))
    chosen = []
    for place in spread_over(len(ranking), top):
        order, score = ranking[place]
        p = by_order[order]
        i, within = best_point(p, base_accuracy, budget)
        settings = {order[pos]: _plain(values[i]) for pos, values in p.settings.items()}
        chosen.append(Candidate(order, place + 1, score, settings, within, float(p.accuracy[i]),
                                float(p.accuracy_std[i]), float(p.bitops_cr[i]), float(p.cr[i]), bool(p.outside[i])))
    return chosen


def chain_config(template: ChainConfig, candidate: Candidate, profile: Profile) -> ChainConfig:
    """The trainer's ChainConfig of a candidate: ``template`` (a ChainConfig carrying the profile's
    setup and the training options) with the order and the candidate's hyperparameters.

    Q's activation and first/last-layer bits and E's exit points are the profile's, so the run
    is the one the profile predicts; E measures every threshold the profile measured.
    """
    s = candidate.settings
    changes: dict[str, Any] = {"order": candidate.order}
    if "D" in s:
        changes["distill"] = replace(template.distill, student=s["D"])
    if "P" in s:
        changes["prune"] = replace(template.prune, ratio=float(s["P"]))
    if "Q" in s:
        q = profile.curve("Q").extra
        changes["quant"] = replace(template.quant, w_bits=int(s["Q"]), a_bits=int(q.get("a_bits", template.quant.a_bits)),
                                   first_last_bits=q.get("first_last_bits"))
    if "E" in s:
        curve = profile.curve("E")
        threshold = float(s["E"])
        exits = curve.extra.get("exits")
        changes["exits"] = replace(template.exits, exits=tuple(exits) if exits else None, threshold=threshold,
                                   thresholds=tuple(sorted({*map(float, curve.values), threshold})))
    return replace(template, **changes)


def measure(candidates: Sequence[Candidate], configs: Sequence[ChainConfig], out_dir: Path, num_classes: int,
            log: Callable[[str], None] = lambda message: None, execution: Any = None
            ) -> list[tuple[dict[str, Any], bool]]:
    """(run record, reused) per candidate: the orders are a campaign in ``out_dir`` (``ORDER.json``
    each; :mod:`trainer.campaign`), run on ``execution``'s executor (a
    :class:`trainer.executors.Execution`; default: one at a time, here): a complete record with the
    same settings is reused, one of other settings refused before anything trains, and the stage
    prefixes the orders share are trained once. Every config is checked against the models first."""
    from trainer.campaign import run_campaign
    from trainer.campaign_format import Campaign, CampaignRun, write_campaign
    from trainer.executors import Execution

    for config in configs:
        config.check_before_training(num_classes)
    execution = execution or Execution()
    campaign = Campaign(tuple(CampaignRun(c.order, f"{c.order}.json", config) for c, config in zip(candidates, configs)),
                        command="chaincomp confirm")
    path = out_dir / ".confirm.campaign.json"  # hidden: `chaincomp fit DIR/*.json` reads the records only
    write_campaign(campaign, path)
    result = run_campaign(campaign, path, execution.executor(), retries=execution.retries, log=log)
    failed = [row for row in result.data["runs"] if row["status"] == "failed"]
    if failed:
        raise InputError(f"{len(failed)} of the {len(configs)} orders failed to train ({failed[0]['name']}: "
                         f"{failed[0]['error']}); the finished ones are kept in {str(out_dir)!r}: run the same "
                         "command again to continue")
    return [(read_record(out_dir / run.record), row["status"] == "skipped")
            for run, row in zip(campaign.runs, result.data["runs"])]


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Dense ranks with values equal to a relative 1e-9 tied: predictions summed in another order
    of stages differ in the last bits, and must not be ranked on that."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    rank = 0
    for n, i in enumerate(order):
        if n and not math.isclose(x[i], x[order[n - 1]], rel_tol=TIE_TOLERANCE, abs_tol=TIE_TOLERANCE):
            rank += 1
        ranks[i] = rank
    return ranks


def _tau(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float | None]:
    """Kendall's tau-b and its p-value; None where undefined (fewer than 2 orders, constant values)."""
    from scipy.stats import kendalltau

    if len(predicted) < 2:
        return {"tau": None, "p_value": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns nan
        result = kendalltau(_ranks(predicted), _ranks(measured))
    tau, p = float(result.statistic), float(result.pvalue)
    return {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p}


def compare(candidates: Sequence[Candidate], results: Sequence[tuple[dict[str, Any], bool]], base_accuracy: float,
            budget: float, out_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per trained order, predicted vs measured (accuracy, loss, BitOpsCR, CR, the ranking score) and
    their errors; over the orders, the error summary and Kendall's tau of each."""
    rows = []
    for c, (record, reused) in zip(candidates, results):
        base, final = record["stages"][0], record["stages"][-1]
        exited = None if "exit" not in final else 1 - final["exit"]["rates"]["final"]
        measured = {"accuracy": final["accuracy"], "base_accuracy": base["accuracy"],
                    "loss": base["accuracy"] - final["accuracy"], "bitops_cr": final["cost"]["bitops_cr"],
                    "cr": final["cost"]["cr"], "exited": exited}
        rows.append({
            "order": c.order, "rank": c.rank, "score": c.score, "settings": c.settings,
            "within_budget": c.within_budget, "outside_measured_range": c.outside,
            "predicted": {"accuracy": c.accuracy, "accuracy_std": c.accuracy_std,
                          "loss": base_accuracy - c.accuracy, "bitops_cr": c.bitops_cr, "cr": c.cr},
            "measured": measured,
            "measured_score": measured["bitops_cr"] if measured["loss"] <= budget else 1.0,
            "error": {"accuracy": measured["accuracy"] - c.accuracy, "bitops_cr_ratio": measured["bitops_cr"] / c.bitops_cr,
                      "cr_ratio": measured["cr"] / c.cr},
            "record": str(out_dir / f"{c.order}.json"), "reused": reused, "status": record.get("status"),
        })
    acc_err = np.array([r["error"]["accuracy"] for r in rows])
    log_ratio = np.log([r["error"]["bitops_cr_ratio"] for r in rows])
    summary = {
        "accuracy": {"mean_abs_error": float(np.mean(np.abs(acc_err))), "bias": float(np.mean(acc_err)),
                     "rmse": float(np.sqrt(np.mean(acc_err ** 2))), "max_abs_error": float(np.max(np.abs(acc_err))),
                     "kendall": _tau([r["predicted"]["accuracy"] for r in rows],
                                     [r["measured"]["accuracy"] for r in rows])},
        "bitops_cr": {"geometric_mean_ratio": float(np.exp(np.mean(log_ratio))),
                      "min_ratio": float(np.exp(log_ratio.min())), "max_ratio": float(np.exp(log_ratio.max())),
                      "kendall": _tau([r["predicted"]["bitops_cr"] for r in rows],
                                      [r["measured"]["bitops_cr"] for r in rows])},
        "ranking": {"within_budget_predicted": sum(r["within_budget"] for r in rows),
                    "within_budget_measured": sum(r["measured"]["loss"] <= budget for r in rows),
                    "kendall": _tau([r["score"] for r in rows], [r["measured_score"] for r in rows])},
    }
    return rows, summary
