"""Counting a model someone brings: ``chaincomp count torchvision:resnet50`` against fvcore alone.

Run: ``.venv/bin/python -m pytest benches/bench_count_models.py --benchmark-only``.

Group ``torchvision:resnet50 at 224x224``, side by side in one run, each in this process (imports
done, one warm-up round, medians of ``ROUNDS``):

* (a) fvcore alone: ``FlopCountAnalysis(model, x).total()`` on a ResNet-50 built beforehand (the
  build is left out of (a), so the ratio below is an upper bound);
* (b) the count: ``bitops.models.load_model_table`` of ``torchvision:resnet50``, what ``chaincomp
  count`` runs before the arithmetic: the build (initialisers skipped) and the trace under an
  address-space cap (no memory-estimate pass unless an allocation fails), torch-pruning's channel
  groups in a forked child on a meta copy (torch's batch-norm meta kernel replaced there by one
  that only makes shapes) while the parent traces on one torch thread fewer until the child has
  finished, and the fvcore trace with our op handles. It records its MACs against (a) (they must agree) and the ratio
  of the medians, (b) / (a). Target: <= 1.3x.
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


@pytest.mark.benchmark(group=GROUP)
def test_b_chaincomp_count(benchmark) -> None:
    from bitops import evaluate, uniform_config
    from bitops.models import ModelSpec, load_model_table

    table = benchmark.pedantic(load_model_table, args=(ModelSpec("torchvision:resnet50"),), warmup_rounds=1,
                               rounds=ROUNDS)
    macs = evaluate(table, uniform_config(table)).totals.macs
    assert table.num_groups > 0 and not table.ungrouped  # the analysis ran, it was not skipped
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(macs=macs, load_avg_1min=os.getloadavg()[0], groups=table.num_groups)
    if "fvcore" in _MEDIANS:
        assert macs == _MEDIANS["fvcore_macs"]
        benchmark.extra_info.update(ratio_to_fvcore=median / _MEDIANS["fvcore"], target=TARGET_RATIO)
