"""trainer.measure.measure_cost against counts that do not go through bitops.

The model is the hardest case the chain produces: quantized (first/last layers pinned), then
physically pruned by torch-pruning with QAT on (QP), carrying exit heads. The expected numbers
come from forward hooks on that very model (MACs of each call, the exit heads that ran before
it), the modules' own bits, and torch's parameter count.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch_pruning as tp
from torch import nn

from bitops import InputError, LayerTable, zoo
from bitops.trace import output_layers, trace_model
from trainer.measure import measure_cost
from trainer.quant import QConv2d, QLinear, quantize_model

INPUT = zoo.DEFAULT_INPUT_SHAPE
EXIT_PROBS = {"layer1": 0.3, "layer2": 0.25}


@functools.cache
def reference() -> tuple[nn.Module, LayerTable]:
    """The original resnet8: full precision, unpruned, no exits."""
    model = zoo.build("resnet8")
    return model, trace_model(copy.deepcopy(model), INPUT, name="resnet8")


def compressed() -> nn.Module:
    """Quantized (2w4a, first/last 8), then pruned to half the channels with QAT on, with exit heads."""
    torch.manual_seed(0)
    model = zoo.build("resnet8", exits=True)
    quantize_model(model, w_bits=2, a_bits=4, first_last_bits=8, example_input=torch.randn(2, *INPUT))
    pruner = tp.pruner.MagnitudePruner(model, torch.zeros(1, *INPUT), importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=output_layers(model))
    pruner.step()
    return model


def hooked_bitops(model: nn.Module, exit_probs: dict[str, float]) -> tuple[float, float]:
    """(expected MACs, expected BitOps): per Conv2d/Linear call, MACs x w_bits x a_bits x P(reach).

    The segment of a backbone layer is the number of exit heads that finished before it ran; a
    head's layers run for every sample that reaches that head. Float layers count 32 x 32.
    """
    names = list(model.exits.keys())
    reach = [1.0]
    for name in names:
        reach.append(reach[-1] - exit_probs.get(name, 0.0))
    heads_done = [0]
    totals = [0.0, 0.0]

    def on_layer(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs = output.numel() * module.in_channels // module.groups * kh * kw
            else:
                macs = output.numel() * module.in_features
            head = name.split(".")[1] if name.startswith("exits.") else None
            p = reach[names.index(head)] if head else reach[heads_done[0]]
            bits = (module.w_bits * module.a_bits) if isinstance(module, (QConv2d, QLinear)) else 32 * 32
            totals[0] += macs * p
            totals[1] += macs * bits * p
        return hook

    def on_head(*_: object) -> None:
        heads_done[0] += 1

    handles = [m.register_forward_hook(on_layer(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [head.register_forward_hook(on_head) for head in model.exits.values()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *INPUT))
    finally:
        for handle in handles:
            handle.remove()
    return totals[0], totals[1]


def weight_storage_bits(model: nn.Module) -> int:
    """Weights at their bits, every other parameter (biases, BN) at 32 bits."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    weights = sum(m.weight.numel() for m in layers)
    others = sum(p.numel() for p in model.parameters()) - weights
    return sum(m.weight.numel() * getattr(m, "w_bits", 32) for m in layers) + 32 * others


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_measured_cost_equals_an_independent_count() -> None:
    model = compressed()
    ref_model, ref_table = reference()
    assert model.layer1[0].conv1.out_channels == 8  # pruned from 16: the count must see it
    cost = measure_cost(model, INPUT, ref_table, EXIT_PROBS)

    macs, bitops = hooked_bitops(model, EXIT_PROBS)
    assert cost["macs"] == pytest.approx(macs, rel=1e-12)
    assert cost["bitops"] == pytest.approx(bitops, rel=1e-12)
    assert cost["params"] == n_params(model)
    assert cost["storage_bits"] == weight_storage_bits(model)

    _, ref_bitops = hooked_bitops(ref_model, {})
    assert cost["reference_bitops"] == pytest.approx(ref_bitops, rel=1e-12)
    assert cost["reference_storage_bits"] == 32 * n_params(ref_model)
    assert cost["bitops_cr"] == pytest.approx(ref_bitops / bitops, rel=1e-12)
    assert cost["cr"] == pytest.approx(32 * n_params(ref_model) / weight_storage_bits(model), rel=1e-12)
    assert cost["bitops_cr"] > 1 and cost["cr"] > 1

    assert cost["exits"] == ["layer1", "layer2"]
    assert cost["exit_probs"] == [0.3, 0.25]
    assert cost["layer_bits"]["stem.conv"] == [8, 8] and cost["layer_bits"]["fc"] == [8, 8]
    assert cost["layer_bits"]["exits.layer1.fc"] == [2, 4] and cost["layer_bits"]["layer2.0.conv1"] == [2, 4]


def test_missing_exit_probs_are_zero_and_unknown_exits_are_rejected() -> None:
    model = compressed()
    _, ref_table = reference()
    none = measure_cost(model, INPUT, ref_table)
    partial = measure_cost(model, INPUT, ref_table, {"layer2": 0.4})
    assert none["exit_probs"] == [0.0, 0.0] and partial["exit_probs"] == [0.0, 0.4]
    assert partial["bitops"] < none["bitops"]
    assert none["bitops"] == pytest.approx(hooked_bitops(model, {})[1], rel=1e-12)
    assert partial["bitops"] == pytest.approx(hooked_bitops(model, {"layer2": 0.4})[1], rel=1e-12)
    with pytest.raises(InputError, match="exit_probs: unknown exit 'layer3'"):
        measure_cost(model, INPUT, ref_table, {"layer3": 0.1})
    with pytest.raises(InputError, match="sum to at most 1"):
        measure_cost(model, INPUT, ref_table, {"layer1": 0.7, "layer2": 0.5})


def test_an_unquantized_unpruned_model_measures_the_reference() -> None:
    ref_model, ref_table = reference()
    cost = measure_cost(ref_model, INPUT, ref_table)
    assert cost["bitops_cr"] == 1 and cost["cr"] == 1
    assert set(map(tuple, cost["layer_bits"].values())) == {(32, 32)}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_measure_cost_leaves_the_model_as_it_was(training: bool) -> None:
    model = compressed().train(training)
    model.fc.train(not training)  # mixed modes survive too
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    measure_cost(model, INPUT, reference()[1], EXIT_PROBS)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(m.fake_quant for m in model.modules() if isinstance(m, (QConv2d, QLinear)))
