"""Counting a model someone brings: ``chaincomp count torchvision:resnet50`` against fvcore alone.

Run: ``.venv/bin/python -m pytest benches/bench_count_models.py --benchmark-only``.

Group ``torchvision:resnet50 at 224x224``, side by side in one run, each in this process (imports
done, one warm-up round, medians of ``ROUNDS``):

* (a) fvcore alone: ``FlopCountAnalysis(model, x).total()`` on a ResNet-50 built beforehand (the
  build is left out of (a), so the ratio below is an upper bound);
* (b) the count: ``bitops.count.count(CountRequest("torchvision:resnet50"))``, what ``chaincomp
  count torchvision:resnet50`` runs after parsing: the build (initialisers skipped) and the trace
  under an address-space cap (no memory-estimate pass unless an allocation fails), the fvcore
  trace with our op handles, and the report's arithmetic. Nothing is pruned, so torch-pruning's
  channel-group analysis is left out. It records its MACs against (a) (they must agree) and the
  ratio of the medians, (b) / (a). Target: <= 1.3x.
* (c) the same count with ``--groups`` (what any count that prunes runs): torch-pruning's channel
  groups in a forked child on a meta copy (torch's batch-norm meta kernel replaced there by one
  that only makes shapes) while the parent traces on one torch thread fewer until the child has
  finished. Its ratio to (a) is recorded, with no target.
"""

from __future__ import annotations

import os
import warnings

import pytest

GROUP = "torchvision:resnet50 at 224x224"
ROUNDS = 9
TARGET_RATIO = 1.3
MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")  # fvcore's names
_MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def resnet50():
    import torch
    import torchvision

    return torchvision.models.resnet50().eval(), torch.zeros(1, 3, 224, 224)


@pytest.mark.benchmark(group=GROUP)
def test_a_fvcore_total_alone(benchmark, resnet50) -> None:
    from fvcore.nn import FlopCountAnalysis

    model, x = resnet50

    def total() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.total()
            return sum(analysis.by_operator().get(op, 0) for op in MAC_OPS)  # (its total adds BN and pools)

    macs = benchmark.pedantic(total, warmup_rounds=1, rounds=ROUNDS)
    _MEDIANS["fvcore"] = benchmark.stats.stats.median
    _MEDIANS["fvcore_macs"] = macs
    benchmark.extra_info.update(macs=macs, load_avg_1min=os.getloadavg()[0])


def _count(groups: bool) -> dict:
    from bitops.count import CountRequest, count

    return count(CountRequest("torchvision:resnet50", groups=groups)).to_dict()


def _record(benchmark, report: dict, target: float | None) -> None:
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(macs=report["macs"], load_avg_1min=os.getloadavg()[0])
    if "fvcore" in _MEDIANS:
        assert report["macs"] == _MEDIANS["fvcore_macs"]
        benchmark.extra_info["ratio_to_fvcore"] = median / _MEDIANS["fvcore"]
        if target is not None:
            benchmark.extra_info["target"] = target


@pytest.mark.benchmark(group=GROUP)
def test_b_chaincomp_count(benchmark) -> None:
    report = benchmark.pedantic(_count, args=(False,), warmup_rounds=1, rounds=ROUNDS)
    assert report["groups"] is None  # nothing pruned: the analysis was left out
    _record(benchmark, report, TARGET_RATIO)


@pytest.mark.benchmark(group=GROUP)
def test_c_chaincomp_count_with_groups(benchmark) -> None:
    report = benchmark.pedantic(_count, args=(True,), warmup_rounds=1, rounds=ROUNDS)
    assert len(report["groups"]) > 0 and not report["ungrouped"]  # the analysis ran, it was not skipped
    benchmark.extra_info["groups"] = len(report["groups"])
    _record(benchmark, report, None)
