"""The D, P, Q, E stages on tiny zoo models and an easy synthetic task (3x8x8 images, 4 classes).

Expected values come from routes other than the stage code:

* D: the KD loss written out in numpy; the student's size from ``zoo.build``; the accuracy of
  the same student untrained; the teacher's exit logits, caught by a forward hook, as the targets
  of the student's exits (ED);
* P: the traced tables of the model before and after pruning against bitops' rounding rule
  (``kept_from_ratio``), so the trainer and the cost model agree to the channel;
* E: exit rates and accuracy recomputed sample by sample from the model's outputs; the backbone's
  state dict before and after head training;
* Q: the layer types and bits ``trainer.quant`` reports, before and after P and E (QP, QE, EQ);
* every config rule: one ``pytest.raises`` each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bitops import InputError, kept_from_ratio, zoo
from bitops.architectures import exit_points
from bitops.trace import trace_model
from trainer import stages
from trainer.config import DistillConfig, ExitConfig, PruneConfig, QuantConfig, TrainConfig
from trainer.loop import evaluate_accuracy, resolve_device, train_epochs
from trainer.measure import measure_cost
from trainer.quant import QConv2d, QLinear, layer_bits
from trainer.stages import add_exits, distill, exit_report, kd_loss, prune, quantize, train_base

CPU = torch.device("cpu")
INPUT = (3, 8, 8)
CLASSES = 4
BASE_LR = 0.05


@dataclass
class Splits:
    """Stand-in for ``trainer.data.DataSplits``: the fields the stages read."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    num_classes: int
    input_shape: tuple[int, ...]


def easy_loader(n: int, seed: int, shuffle: bool) -> DataLoader:
    """Each class is a fixed random image (the same for every loader) under Gaussian noise."""
    patterns = torch.randn(CLASSES, *INPUT, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=gen)
    x = patterns[y] + 0.8 * torch.randn(n, *INPUT, generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def data() -> Splits:
    return Splits(easy_loader(512, 1, True), easy_loader(256, 2, False), easy_loader(256, 3, False), CLASSES, INPUT)


@pytest.fixture(scope="module")
def teacher(data: Splits) -> zoo.StagedNet:
    """A small trained ResNet20 (never modified by a test: stages work on copies)."""
    torch.manual_seed(0)
    model = zoo.build("resnet20", num_classes=CLASSES, width_mult=0.5)
    return train_base(model, TrainConfig(epochs=3, lr=BASE_LR), data, CPU, progress=False)


@pytest.fixture(scope="module")
def teacher_with_exits(teacher: zoo.StagedNet, data: Splits) -> zoo.StagedNet:
    torch.manual_seed(0)
    return add_exits(teacher, ExitConfig(epochs=3), data, CPU, BASE_LR, progress=False)


def tiny(exits: bool | tuple[str, ...] = False, width_mult: float = 0.5) -> zoo.StagedNet:
    torch.manual_seed(0)
    return zoo.build("resnet8", num_classes=CLASSES, width_mult=width_mult, exits=exits)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {name: (m.in_channels, m.out_channels) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def state_of(model: nn.Module, skip_exits: bool = False) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not (skip_exits and k.startswith("exits."))}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- D -------------------------------------------------------------------------------------------

def test_kd_loss_equals_the_formula_written_out():
    s = np.array([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]])
    t = np.array([[1.0, 0.0, 3.0], [-1.0, 2.0, 0.0]])
    y = np.array([0, 1])
    temperature, alpha = 2.0, 0.7

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_ps, log_pt = log_softmax(s / temperature), log_softmax(t / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()  # KL(p_teacher || p_student)
    ce = -log_softmax(s)[np.arange(2), y].mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce

    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temperature=temperature, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_distill_trains_a_fresh_zoo_student_that_learns(teacher, data):
    torch.manual_seed(1)
    untrained = evaluate_accuracy(zoo.build("resnet8", num_classes=CLASSES, width_mult=0.5), data.test, CPU)
    before = state_of(teacher)
    torch.manual_seed(1)  # the student's initial weights are the untrained model's
    student = distill(teacher, DistillConfig(student="resnet8", width_mult=0.5, epochs=3), data, CPU, BASE_LR,
                      progress=False)
    assert isinstance(student, zoo.StagedNet)
    assert n_params(student) == n_params(zoo.build("resnet8", num_classes=CLASSES, width_mult=0.5))
    assert len(student.exits) == 0
    accuracy = evaluate_accuracy(student, data.test, CPU)
    assert accuracy >= 90 and accuracy > untrained + 30, (untrained, accuracy)
    assert_same_state(before, state_of(teacher))


def test_distilled_student_is_unpruned_whatever_the_teacher(teacher, data):
    """PD: the pruned teacher's widths do not reach the student."""
    pruned = prune(teacher, PruneConfig(ratio=0.5, finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    student = distill(pruned, DistillConfig(student="resnet8", epochs=0), data, CPU, BASE_LR, progress=False)
    assert conv_widths(student) == conv_widths(zoo.build("resnet8", num_classes=CLASSES))


def test_ed_distills_each_student_exit_from_the_teacher_exit_at_the_same_point(teacher_with_exits, data, monkeypatch):
    teacher_outputs, pairs = [], []
    hook = teacher_with_exits.register_forward_hook(lambda module, inputs, output: teacher_outputs.append(output))
    real_kd_loss = stages.kd_loss

    def spy(student_logits, teacher_logits, targets, **kwargs):
        pairs.append((len(teacher_outputs), teacher_logits))
        return real_kd_loss(student_logits, teacher_logits, targets, **kwargs)

    monkeypatch.setattr(stages, "kd_loss", spy)
    try:
        student = distill(teacher_with_exits, DistillConfig(student="resnet8", epochs=1), data, CPU, BASE_LR,
                          progress=False)
    finally:
        hook.remove()
    assert tuple(student.exits) == tuple(teacher_with_exits.exits) == exit_points("resnet8")
    # One KD term per output, in order, each against the teacher's output of the same batch and place.
    outputs_per_batch = len(teacher_with_exits.exits) + 1
    assert len(pairs) == outputs_per_batch * len(teacher_outputs)
    for i, (calls, logits) in enumerate(pairs):
        assert calls == i // outputs_per_batch + 1
        assert logits is teacher_outputs[calls - 1][i % outputs_per_batch]


def test_ed_needs_the_teachers_exit_points_in_the_student(data):
    teacher = zoo.build("resnet18_cifar", num_classes=CLASSES, width_mult=0.125, exits=("layer3",))
    with pytest.raises(InputError, match="student.*layer3"):
        distill(teacher, DistillConfig(student="resnet8", epochs=0), data, CPU, BASE_LR, progress=False)


# ---- P -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.55, 0.85])
def test_pruned_widths_follow_bitops_rounding(ratio, data):
    """Every channel group, exit heads' included (EP), keeps what bitops says a keep ratio keeps."""
    model = tiny(exits=True)
    before = trace_model(model, INPUT)
    pruned = prune(model, PruneConfig(ratio=ratio, finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    after = trace_model(pruned, INPUT)
    assert after.group_labels == before.group_labels
    np.testing.assert_array_equal(after.group_channels, kept_from_ratio(before, 1 - ratio))


def test_prune_keeps_every_output_and_prunes_exit_head_convs(data):
    model = tiny(exits=True)
    original = conv_widths(model)
    pruned = prune(model, PruneConfig(ratio=0.5, finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    assert pruned.fc.out_features == CLASSES
    for point, head in pruned.exits.items():
        width = model.exits[point].conv.out_channels
        assert head.fc.out_features == CLASSES
        assert head.conv.out_channels == head.fc.in_features == width // 2
        assert head.conv.in_channels == getattr(pruned, point)[-1].conv2.out_channels
    assert conv_widths(model) == original  # the input model is left as it was


def test_prune_ratio_zero_keeps_widths_and_fine_tunes(data):
    model = tiny()
    pruned = prune(model, PruneConfig(ratio=0.0, finetune_epochs=1), data, CPU, BASE_LR, progress=False)
    assert conv_widths(pruned) == conv_widths(model)
    assert not torch.equal(pruned.fc.weight, model.fc.weight)


def test_prune_refuses_a_ratio_that_empties_a_group(data):
    with pytest.raises(InputError, match="ratio 0.9 keeps 0 of the 8 channels"):
        prune(tiny(), PruneConfig(ratio=0.9, finetune_epochs=0), data, CPU, BASE_LR, progress=False)


def test_pruned_teacher_recovers_by_fine_tuning(teacher, data):
    pruned = prune(teacher, PruneConfig(ratio=0.3, finetune_epochs=2), data, CPU, BASE_LR, progress=False)
    assert evaluate_accuracy(pruned, data.test, CPU) >= 90


def test_stages_train_at_the_base_rate_and_fine_tune_at_a_tenth(data, monkeypatch):
    """D and E train at base_lr; P and Q fine-tune at base_lr / 10 (the paper, section 3.1)."""
    seen = []

    def record(model, loader, *, lr, **kwargs):
        seen.append(lr)
        return []

    monkeypatch.setattr(stages, "train_epochs", record)
    distill(tiny(), DistillConfig(epochs=1), data, CPU, 0.2, progress=False)
    prune(tiny(), PruneConfig(finetune_epochs=1), data, CPU, 0.2, progress=False)
    quantize(tiny(), QuantConfig(finetune_epochs=1), data, CPU, 0.2, progress=False)
    add_exits(tiny(), ExitConfig(epochs=1), data, CPU, 0.2, progress=False)
    assert seen == [0.2, pytest.approx(0.02), pytest.approx(0.02), 0.2]


# ---- E -------------------------------------------------------------------------------------------

def test_heads_sit_at_the_requested_exit_points_in_depth_order(data):
    model = add_exits(tiny(), ExitConfig(exits=("layer2", "layer1"), epochs=0), data, CPU, BASE_LR, progress=False)
    assert list(model.exits) == ["layer1", "layer2"]
    every = add_exits(tiny(), ExitConfig(epochs=0), data, CPU, BASE_LR, progress=False)
    assert tuple(every.exits) == every.exit_points
    outputs = every(torch.zeros(2, *INPUT))
    assert len(outputs) == len(every.exit_points) + 1


def test_heads_after_pruning_take_the_pruned_widths_and_stay_unpruned(data):
    """PE: the heads are sized to the pruned stages; their own convs keep their input's width."""
    pruned = prune(tiny(), PruneConfig(ratio=0.5, finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    model = add_exits(pruned, ExitConfig(epochs=0, head="conv"), data, CPU, BASE_LR, progress=False)
    for point, head in model.exits.items():
        stage_width = getattr(pruned, point)[-1].conv2.out_channels
        assert stage_width < getattr(tiny(), point)[-1].conv2.out_channels
        assert head.conv.in_channels == head.conv.out_channels == head.fc.in_features == stage_width


def test_pool_heads_are_a_linear_on_the_pooled_stage_and_cost_what_the_formula_says(data):
    """E with ``head="pool"``: each head is global average pool + linear on its stage's (pruned)
    width; the traced head rows hold exactly C x classes MACs, and P then D (ED) keep the design."""
    pruned = prune(tiny(), PruneConfig(ratio=0.5, finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    model = add_exits(pruned, ExitConfig(epochs=1, head="pool"), data, CPU, BASE_LR, progress=False)
    assert stages.head_kind(model) == "pool" and stages.head_kind(pruned) == "conv"
    reference = trace_model(pruned, INPUT)
    head_macs = 0
    for point, head in model.exits.items():
        assert not any(isinstance(m, nn.Conv2d) for m in head.modules())
        width = getattr(pruned, point)[-1].conv2.out_channels
        assert head.fc.in_features == width
        head_macs += width * CLASSES
    # no sample leaves early: every head runs on every sample, and costs its linear alone
    assert measure_cost(model, INPUT, reference)["macs"] == measure_cost(pruned, INPUT, reference)["macs"] + head_macs
    student = distill(model, DistillConfig(student="resnet8", epochs=0), data, CPU, BASE_LR, progress=False)
    assert stages.head_kind(student) == "pool" and tuple(student.exits) == tuple(model.exits)
    quantized = quantize(model, QuantConfig(finetune_epochs=0), data, CPU, BASE_LR, progress=False)
    assert stages.head_kind(quantized) == "pool"


def test_an_unknown_head_design_is_refused():
    with pytest.raises(InputError, match="head must be one of conv, pool, pool4, got 'mlp'"):
        ExitConfig(head="mlp")


def test_exit_training_leaves_the_backbone_as_it_was(teacher, teacher_with_exits):
    assert_same_state(state_of(teacher), state_of(teacher_with_exits, skip_exits=True))


def test_trained_heads_beat_chance(teacher_with_exits, data):
    everything_leaves_first = exit_report(teacher_with_exits, data.test, (1e-6,), CPU)[0]
    assert everything_leaves_first["rates"]["layer1"] == 1.0
    assert everything_leaves_first["accuracy"] > 100 / CLASSES + 15


def test_exit_report_matches_a_sample_by_sample_recount(teacher_with_exits, data):
    thresholds = (0.5, 0.8, 0.95, 1.0)
    rows = exit_report(teacher_with_exits, data.test, thresholds, CPU)
    names = [*teacher_with_exits.exits, "final"]
    teacher_with_exits.eval()
    with torch.no_grad():
        samples = [(teacher_with_exits(x[None]), int(y)) for x, y in data.test.dataset]
    for threshold, row in zip(thresholds, rows, strict=True):
        left, correct = dict.fromkeys(names, 0), 0
        for outputs, label in samples:
            probs = [torch.softmax(out[0], dim=0) for out in outputs]
            at = next((k for k, p in enumerate(probs[:-1]) if p.max().item() >= threshold), len(probs) - 1)
            left[names[at]] += 1
            correct += int(probs[at].argmax().item() == label)
        assert row["threshold"] == threshold
        assert row["rates"] == pytest.approx({name: count / len(samples) for name, count in left.items()})
        assert row["accuracy"] == pytest.approx(100 * correct / len(samples))
        assert sum(row["rates"].values()) == pytest.approx(1.0)
    assert [r["rates"]["final"] for r in rows] == sorted(r["rates"]["final"] for r in rows)


def test_e_applies_once(teacher_with_exits, data):
    with pytest.raises(InputError, match="at most once"):
        add_exits(teacher_with_exits, ExitConfig(epochs=0), data, CPU, BASE_LR, progress=False)


def test_unknown_exit_point_is_an_input_error(data):
    with pytest.raises(InputError, match="exits must be exit points.*'layer3'"):
        add_exits(tiny(), ExitConfig(exits=("layer3",), epochs=0), data, CPU, BASE_LR, progress=False)


# ---- Q -------------------------------------------------------------------------------------------

def quantized_bits(module: nn.Module) -> dict[str, tuple[int, int]]:
    """(w_bits, a_bits) of the layers that are QConv2d/QLinear, by name."""
    return {name: (m.w_bits, m.a_bits) for name, m in module.named_modules() if isinstance(m, (QConv2d, QLinear))}


def test_quantize_quantizes_every_layer_heads_included_and_fine_tunes(data):
    """EQ: heads that exist are quantized with the backbone."""
    model = tiny(exits=True)
    quantized = quantize(model, QuantConfig(w_bits=2, a_bits=4, finetune_epochs=1), data, CPU, BASE_LR,
                         progress=False)
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert quantized_bits(quantized) == dict.fromkeys(layers, (2, 4))
    assert layer_bits(quantized) == quantized_bits(quantized)
    assert not quantized_bits(model)  # the input model is left as it was
    assert not torch.equal(quantized.fc.weight, model.fc.weight)  # QAT fine-tuning ran


def test_pruning_a_quantized_model_keeps_it_quantized(data):
    """QP: the pruned layers keep their bits, so the fine-tuning after P is QAT."""
    quantized = quantize(tiny(exits=True), QuantConfig(w_bits=2, a_bits=4, first_last_bits=8, finetune_epochs=0),
                         data, CPU, BASE_LR, progress=False)
    before = trace_model(quantized, INPUT)
    pruned = prune(quantized, PruneConfig(ratio=0.5, finetune_epochs=1), data, CPU, BASE_LR, progress=False)
    assert quantized_bits(pruned) == quantized_bits(quantized)
    np.testing.assert_array_equal(trace_model(pruned, INPUT).group_channels, kept_from_ratio(before, 0.5))


def test_heads_added_after_q_are_quantized_at_the_given_bits(data):
    """QE: new heads are quantized from the start; the backbone keeps its own bits."""
    quantized = quantize(tiny(), QuantConfig(w_bits=2, a_bits=4, finetune_epochs=0), data, CPU, BASE_LR,
                         progress=False)
    model = add_exits(quantized, ExitConfig(epochs=1, head="conv"), data, CPU, BASE_LR, head_bits=(3, 5),
                      progress=False)
    for head in model.exits.values():
        assert quantized_bits(head) == {"conv": (3, 5), "fc": (3, 5)}
    backbone = {k: v for k, v in quantized_bits(model).items() if not k.startswith("exits.")}
    assert backbone == quantized_bits(quantized)


# ---- the loop the stages share -------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="^device must be auto, cpu, cuda or cuda:N, got 'tpu'"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_cuda_device_is_an_input_error():
    with pytest.raises(InputError, match="^device cuda: no CUDA device is available"):
        resolve_device("cuda")


def test_train_epochs_trains_only_the_given_parameters_and_evaluation_restores_the_mode(data):
    model = tiny()
    frozen = state_of(model)
    losses = train_epochs(model, data.train, epochs=2, lr=BASE_LR, device=CPU, parameters=model.fc.parameters(),
                          progress=False)
    assert len(losses) == 2 and losses[1] < losses[0]
    changed = {k for k in frozen if not torch.equal(frozen[k], model.state_dict()[k])}
    # fc learns; BN statistics move in train mode; no other weight changes.
    assert {k for k in changed if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))} == {
        "fc.weight", "fc.bias"}
    model.train()
    evaluate_accuracy(model, data.test, CPU)
    assert model.training


# ---- config rules: one test each -----------------------------------------------------------------

@pytest.mark.parametrize(("make", "field"), [
    pytest.param(lambda: PruneConfig(ratio=1.0), "ratio", id="ratio-1"),
    pytest.param(lambda: PruneConfig(ratio=-0.1), "ratio", id="ratio-negative"),
    pytest.param(lambda: PruneConfig(finetune_epochs=-1), "finetune_epochs", id="prune-epochs-negative"),
    pytest.param(lambda: ExitConfig(threshold=0), "threshold", id="threshold-0"),
    pytest.param(lambda: ExitConfig(threshold=1.5), "threshold", id="threshold-1.5"),
    pytest.param(lambda: ExitConfig(thresholds=(0.5, 0.0)), "thresholds", id="thresholds-0"),
    pytest.param(lambda: ExitConfig(thresholds=()), "thresholds", id="thresholds-empty"),
    pytest.param(lambda: ExitConfig(exits=()), "exits", id="exits-empty"),
    pytest.param(lambda: ExitConfig(exits="layer1"), "exits", id="exits-string"),
    pytest.param(lambda: ExitConfig(epochs=-1), "epochs", id="exit-epochs-negative"),
    pytest.param(lambda: DistillConfig(temperature=0), "temperature", id="temperature-0"),
    pytest.param(lambda: DistillConfig(alpha=1.5), "alpha", id="alpha-1.5"),
    pytest.param(lambda: DistillConfig(epochs=-1), "epochs", id="distill-epochs-negative"),
    pytest.param(lambda: DistillConfig(student="resnet9"), "student", id="student-unknown"),
    pytest.param(lambda: DistillConfig(width_mult=0), "width_mult", id="width-0"),
    pytest.param(lambda: TrainConfig(lr=0), "lr", id="lr-0"),
    pytest.param(lambda: TrainConfig(epochs=1.5), "epochs", id="epochs-fraction"),
    pytest.param(lambda: QuantConfig(w_bits=0), "w_bits", id="w-bits-0"),
    pytest.param(lambda: QuantConfig(a_bits=33), "a_bits", id="a-bits-33"),
    pytest.param(lambda: QuantConfig(first_last_bits=0), "first_last_bits", id="first-last-bits-0"),
    pytest.param(lambda: QuantConfig(input_bits=64), "input_bits", id="input-bits-64"),
    pytest.param(lambda: QuantConfig(finetune_epochs=-1), "finetune_epochs", id="quant-epochs-negative"),
])
def test_config_rule_is_an_input_error_naming_the_field(make, field):
    with pytest.raises(InputError, match=rf"^{field} must"):
        make()


def test_base_lr_must_be_positive(data):
    with pytest.raises(InputError, match="base_lr must"):
        prune(tiny(), PruneConfig(finetune_epochs=0), data, CPU, 0.0, progress=False)


def test_exit_config_stores_lists_as_tuples():
    config = ExitConfig(exits=["layer1"], thresholds=[0.5, 0.9])
    assert config == ExitConfig(exits=("layer1",), thresholds=(0.5, 0.9))
    assert hash(config) == hash(ExitConfig(exits=("layer1",), thresholds=(0.5, 0.9)))


def test_defaults_pass_their_own_rules():
    for config_class in (TrainConfig, DistillConfig, PruneConfig, QuantConfig, ExitConfig):
        config_class()
