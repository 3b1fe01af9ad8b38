"""The chain runner end to end through ``chaincomp train``: records, costs, order semantics, resume,
and the rejection of bad input before any training.

Expected values come from routes other than the chain code:

* cost: MACs caught by forward hooks on every Conv2d/Linear of the saved checkpoint, times each
  module's ``w_bits``/``a_bits`` attributes (32 for float layers), times the probability of
  reaching the module worked out from its name and the record's exit rates; the reference is
  the untrained zoo teacher counted the same way at 32x32 bits; params and storage bits are
  summed from the parameters themselves;
* exit rates and accuracy: recomputed sample by sample from the saved model's outputs on the
  test split (max-softmax, first head at or above the threshold);
* order semantics: widths and layer types read off the saved models, against ``zoo.build``;
* bad input: a spy on the base training proves that nothing trained before the error, and the
  output folder is listed before and after.

Every run uses the offline digits at 8x8 and one torch thread; the whole module takes ~20 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bitops import zoo
from chaincomp.cli import main
from trainer import chain
from trainer.config import DataConfig
from trainer.data import load_data
from tests.bitops.hook_counter import count_macs_params
from trainer.quant import QConv2d, QLinear

# Every stage for a few epochs only: enough for the digits at 8x8 (base ~95 %), seconds on a CPU.
FAST = ["--epochs", "1", "--distill-epochs", "1", "--finetune-epochs", "1", "--exit-epochs", "1",
        "--image-size", "8"]
COST_KEYS = ("bitops", "bitops_cr", "cr", "macs", "params")
FULL = 32


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine two OpenMP
    threads that wait on each other run many times slower than one (as in test_stages.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- helpers -------------------------------------------------------------------------------------

def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``chaincomp`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=False, map_location="cpu")


def hook_macs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs per Conv2d/Linear module name for one image, from the forward-hook counter (every layer runs)."""
    counts = count_macs_params(model, input_shape)
    names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(counts) == names, "a layer did not run"
    return {name: macs for name, (macs, _) in counts.items()}


def module_bits(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(w, a) bits from the layers' own attributes; plain float layers are 32x32."""
    return {n: (getattr(m, "w_bits", FULL), getattr(m, "a_bits", FULL))
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def reach_probability(name: str, model: zoo.StagedNet, rates: dict[str, float]) -> float:
    """P(a sample runs module ``name``): the stem always; stage s unless it left at an exit tapping
    an earlier stage; exit head k unless it left at an earlier head; the classifier unless it left
    at any head."""
    stages, exits = list(model.stage_names), list(model.exits.keys())
    top = name.split(".")[0]
    if top == "stem":
        return 1.0
    if top == "exits":
        head = name.split(".")[1]
        return 1.0 - sum(rates[e] for e in exits[:exits.index(head)])
    if top in stages:
        return 1.0 - sum(rates[e] for e in exits if stages.index(e) < stages.index(top))
    assert top == model.classifier_name, name
    return 1.0 - sum(rates[e] for e in exits)


def independent_bitops(model: zoo.StagedNet, input_shape: tuple[int, ...], rates: dict[str, float]) -> float:
    macs, bits = hook_macs(model, input_shape), module_bits(model)
    return sum(macs[n] * bits[n][0] * bits[n][1] * reach_probability(n, model, rates) for n in macs)


def checkpoint_outputs(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """On the digits test split at 8x8: per sample, the largest softmax probability of every output
    (the exits, then the final classifier) and whether each output is right."""
    confidence, correct = [], []
    with torch.no_grad():
        for x, y in load_data(DataConfig(image_size=8)).test:
            outputs = [F.softmax(o, dim=1) for o in model(x)]
            confidence.append(torch.stack([p.max(dim=1).values for p in outputs], dim=1))
            correct.append(torch.stack([p.argmax(dim=1) == y for p in outputs], dim=1))
    return torch.cat(confidence), torch.cat(correct)


def storage_bits(model: nn.Module) -> int:
    """Conv/linear weights at their weight bits; everything else (biases, BN) at 32 bits."""
    bits = module_bits(model)
    total = 0
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            total += p.numel() * (bits[name][0] if name in bits and pname == "weight" else FULL)
    return total


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# ---- 1. one real chain, DPQE ---------------------------------------------------------------------

DPQE_THRESHOLDS = (0.15, 0.3, 0.5, 0.9)  # low ones so that both exits take samples
DPQE_ARGS = ["train", "--order", "DPQE", "--epochs", "3", "--distill-epochs", "3", "--finetune-epochs", "2",
             "--exit-epochs", "10", "--thresholds", ",".join(map(str, DPQE_THRESHOLDS)), "--threshold", "0.3",
             "--image-size", "8"]


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    out: Path

    @property
    def record(self) -> dict[str, Any]:
        return read_record(self.out)

    @property
    def checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.out.with_suffix(".pt"))


@pytest.fixture(scope="module")
def dpqe(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("dpqe") / "run.json"
    return Run(*run_cli([*DPQE_ARGS, "--out", str(out)]), out)


@pytest.mark.slow
def test_dpqe_record_is_complete(dpqe: Run) -> None:
    assert dpqe.rc == 0, dpqe.stderr
    record = dpqe.record
    assert record["_type"] == "chaincomp.RunRecord" and record["_version"] == 1
    assert record["status"] == "complete"
    stages = record["stages"]
    assert [s["stage"] for s in stages] == ["base", "D", "P", "Q", "E"]
    assert [s["index"] for s in stages] == [0, 1, 2, 3, 4]
    for s in stages:
        assert 0 <= s["accuracy"] <= 100 and 0 <= s["val_accuracy"] <= 100, s["stage"]
        assert all(isinstance(s["cost"][k], (int, float)) and s["cost"][k] > 0 for k in COST_KEYS), s["stage"]
        assert isinstance(s["config"], dict) and s["wall_s"] >= 0, s["stage"]
    # The configs are the command line's.
    assert stages[0]["config"] == {"epochs": 3, "lr": 0.05}
    assert stages[1]["config"]["student"] == "resnet8" and stages[1]["config"]["epochs"] == 3
    assert stages[2]["config"] == {"ratio": 0.5, "finetune_epochs": 2}
    assert (stages[3]["config"]["w_bits"], stages[3]["config"]["a_bits"]) == (1, 8)
    assert stages[4]["config"]["epochs"] == 10 and stages[4]["config"]["threshold"] == 0.3

    # Only E carries exits: a row per threshold, rates over both exit points and the final one.
    assert all("exit" not in s for s in stages[:4])
    exit_entry = stages[4]["exit"]
    assert exit_entry["threshold"] == 0.3
    assert [row["threshold"] for row in exit_entry["thresholds"]] == list(DPQE_THRESHOLDS)
    for row in [exit_entry, *exit_entry["thresholds"]]:
        assert list(row["rates"]) == ["layer1", "layer2", "final"]
        assert all(0 <= r <= 1 for r in row["rates"].values())
        assert sum(row["rates"].values()) == pytest.approx(1.0, abs=1e-12)
    for row in exit_entry["thresholds"]:
        assert all(row["cost"][k] > 0 for k in COST_KEYS)
    assert exit_entry["rates"] == exit_entry["thresholds"][1]["rates"]  # the chosen one is 0.3's row
    rates = [row["rates"]["final"] for row in exit_entry["thresholds"]]
    assert rates == sorted(rates), "a higher threshold lets fewer samples leave early"


@pytest.mark.slow
def test_dpqe_numbers_are_sensible(dpqe: Run) -> None:
    stages = {s["stage"]: s for s in dpqe.record["stages"]}
    assert stages["base"]["accuracy"] > 50, "10-class digits: chance is 10 %"
    # The base model is the reference itself.
    assert stages["base"]["cost"]["bitops_cr"] == 1.0 and stages["base"]["cost"]["cr"] == 1.0
    # Each compression lowers the cost further; after DPQ at 1w8a it is far beyond 100x.
    crs = [stages[s]["cost"]["bitops_cr"] for s in "DPQ"]
    assert 1 < crs[0] < crs[1] < crs[2]
    assert stages["Q"]["cost"]["bitops_cr"] > 100
    assert stages["Q"]["cost"]["cr"] > stages["P"]["cost"]["cr"] > stages["D"]["cost"]["cr"] > 1
    # Exits taking samples can only lower the expected BitOps.
    assert stages["E"]["cost"]["bitops"] <= stages["E"]["exit"]["thresholds"][-1]["cost"]["bitops"]


@pytest.mark.slow
def test_dpqe_output_and_checkpoint(dpqe: Run) -> None:
    table, sweep = dpqe.stdout.strip().split("\n\n")
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["base", "D", "P", "Q", "E"]
    final_rate = dpqe.record["stages"][-1]["exit"]["rates"]["final"]
    assert f"{100 * (1 - final_rate):.0f}%" in lines[-1]
    # the threshold sweep: one line per measured threshold, the record's numbers
    rows = dpqe.record["stages"][-1]["exit"]["thresholds"]
    sweep_lines = sweep.splitlines()[2:]
    assert len(sweep_lines) == len(rows)
    for line, row in zip(sweep_lines, rows):
        cells = line.split()
        assert float(cells[0]) == row["threshold"] and cells[1] == f"{row['accuracy']:.2f}"
        assert cells[2:-1] == [f"{100 * v:.0f}%" for v in row["rates"].values()]
        assert cells[-1] == f"{row['cost']['bitops_cr']:.1f}x"
    checkpoint_path = dpqe.out.with_suffix(".pt")
    assert checkpoint_path.is_file()
    payload = dpqe.checkpoint
    assert payload["stages_done"] == 5
    assert tuple(payload["quant_bits"]) == (1, 8)
    assert isinstance(payload["model"], zoo.StagedNet)
    assert not list(dpqe.out.parent.glob(".*")), "no temporary files are left behind"


# ---- 2. the record's cost is the saved model's ---------------------------------------------------

@pytest.mark.slow
def test_recorded_cost_equals_an_independent_count_of_the_checkpoint(dpqe: Run) -> None:
    record, model = dpqe.record, dpqe.checkpoint["model"]
    shape = tuple(record["data"]["input_shape"])
    assert shape == (3, 8, 8)
    entry = record["stages"][-1]
    rows = [entry["exit"], *entry["exit"]["thresholds"]]
    costs = [entry["cost"], *(row["cost"] for row in entry["exit"]["thresholds"])]
    # The test means something only if exits take samples, at both exit points somewhere.
    assert any(row["rates"]["layer1"] > 0 for row in rows) and any(row["rates"]["layer2"] > 0 for row in rows)
    for row, cost in zip(rows, costs):
        expected = independent_bitops(model, shape, row["rates"])
        assert cost["bitops"] == pytest.approx(expected, rel=1e-9), row["threshold"]
        expected_macs = sum(m * reach_probability(n, model, row["rates"]) for n, m in hook_macs(model, shape).items())
        assert cost["macs"] == pytest.approx(expected_macs, rel=1e-9)
        assert cost["params"] == n_params(model)
        assert cost["cr"] == pytest.approx(record["reference"]["storage_bits"] / storage_bits(model), rel=1e-12)
    assert entry["cost"]["storage_bits"] == storage_bits(model)

    # The reference: the untrained zoo teacher at 32x32 bits, no exits.
    teacher = zoo.build("resnet20", num_classes=10)
    reference_bitops = sum(hook_macs(teacher, shape).values()) * FULL * FULL
    assert record["reference"]["bitops"] == reference_bitops
    assert record["reference"]["storage_bits"] == n_params(teacher) * FULL
    assert entry["cost"]["bitops_cr"] == pytest.approx(reference_bitops / entry["cost"]["bitops"], rel=1e-12)
    assert entry["cost"]["cr"] == pytest.approx(n_params(teacher) * FULL / storage_bits(model), rel=1e-12)
    # Every layer of the final model is at 1w8a, the heads included (QE).
    assert set(module_bits(model).values()) == {(1, 8)}
    assert {tuple(v) for v in entry["cost"]["layer_bits"].values()} == {(1, 8)}


@pytest.mark.slow
def test_recorded_exit_rates_are_the_checkpoints(dpqe: Run) -> None:
    """Rates and accuracy recomputed sample by sample from the saved model on the test split."""
    record, model = dpqe.record, dpqe.checkpoint["model"].eval()
    top, hit = checkpoint_outputs(model)
    n = len(top)
    assert n == record["data"]["sizes"]["test"]
    names = ["layer1", "layer2", "final"]
    for row in record["stages"][-1]["exit"]["thresholds"]:
        leave = []
        for i in range(n):
            k = next((k for k in range(2) if top[i, k] >= row["threshold"]), 2)
            leave.append(k)
        expected_rates = {name: leave.count(k) / n for k, name in enumerate(names)}
        assert row["rates"] == pytest.approx(expected_rates, abs=1e-12), row["threshold"]
        expected_accuracy = 100 * sum(bool(hit[i, leave[i]]) for i in range(n)) / n
        assert row["accuracy"] == pytest.approx(expected_accuracy, rel=1e-6)


@pytest.mark.slow
def test_a_sweep_at_any_threshold_is_the_checkpoints_recount_and_cost(dpqe: Run) -> None:
    """``chaincomp sweep`` at the run's thresholds and at new ones: the rates and accuracy recounted
    sample by sample from the saved model, the BitOps counted by hooks on it with those rates
    (:func:`independent_bitops`), and at the run's own thresholds the record's rows."""
    record, model = dpqe.record, dpqe.checkpoint["model"].eval()
    top, hit = checkpoint_outputs(model)
    n, shape = len(top), tuple(record["data"]["input_shape"])
    thresholds = [*DPQE_THRESHOLDS, 0.05, 0.22, 0.42, 0.7, 1.0]
    rc, out, err = run_cli(["sweep", str(dpqe.out), "--thresholds", ",".join(map(str, thresholds)), "--json"])
    assert rc == 0, err
    rows = json.loads(out)["rows"]
    recorded = {row["threshold"]: row for row in record["stages"][-1]["exit"]["thresholds"]}
    for row, t in zip(rows, thresholds, strict=True):
        leave = [next((k for k in range(2) if top[i, k] >= t), 2) for i in range(n)]
        assert row["rates"] == {name: leave.count(k) / n for k, name in enumerate(["layer1", "layer2", "final"])}
        assert row["accuracy"] == pytest.approx(100 * sum(bool(hit[i, leave[i]]) for i in range(n)) / n, rel=1e-12)
        assert row["bitops"] == pytest.approx(independent_bitops(model, shape, row["rates"]), rel=1e-9), t
        assert row["bitops_cr"] == pytest.approx(record["reference"]["bitops"] / row["bitops"], rel=1e-12)
        if t in recorded:
            assert row["rates"] == recorded[t]["rates"] and row["accuracy"] == recorded[t]["accuracy"]
            assert row["bitops_cr"] == pytest.approx(recorded[t]["cost"]["bitops_cr"], rel=1e-9)


# ---- 3. order semantics --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def order_run(tmp_path_factory: pytest.TempPathFactory):
    """``chaincomp train --order ORDER`` (fast settings), each order run once: (record, final model)."""
    done: dict[tuple[str, str], tuple[dict[str, Any], zoo.StagedNet]] = {}

    def run(order: str, head: str = "conv") -> tuple[dict[str, Any], zoo.StagedNet]:
        """The paper's conv heads by default: their own channels show what P does to a head."""
        if (order, head) not in done:
            out = tmp_path_factory.mktemp(f"order_{order}_{head}") / "run.json"
            rc, _, err = run_cli(["train", "--order", order, *FAST, "--exit-head", head, "--out", str(out)])
            assert rc == 0, err
            done[order, head] = read_record(out), load_checkpoint(out.with_suffix(".pt"))["model"]
        return done[order, head]

    return run


def _stage_width(model: zoo.StagedNet, stage: str) -> int:
    """Output channels of a ResNet stage: its last block's second conv."""
    return getattr(model, stage)[-1].conv2.out_channels


@pytest.mark.slow
def test_pd_ends_with_an_unpruned_student(order_run) -> None:
    record, model = order_run("PD")
    student = zoo.build("resnet8", num_classes=10)
    stages = {s["stage"]: s for s in record["stages"]}
    assert stages["P"]["cost"]["params"] < stages["base"]["cost"]["params"]  # the teacher was pruned
    assert stages["D"]["cost"]["params"] == n_params(model) == n_params(student)
    assert [p.shape for p in model.parameters()] == [p.shape for p in student.parameters()]
    assert stages["D"]["cost"]["macs"] == sum(hook_macs(student, (3, 8, 8)).values())
    assert set(module_bits(model).values()) == {(FULL, FULL)}


@pytest.mark.slow
def test_qd_ends_with_a_full_precision_student(order_run) -> None:
    record, model = order_run("QD")
    stages = {s["stage"]: s for s in record["stages"]}
    assert {tuple(b) for b in stages["Q"]["cost"]["layer_bits"].values()} == {(1, 8)}  # the teacher was quantized
    assert {tuple(b) for b in stages["D"]["cost"]["layer_bits"].values()} == {(FULL, FULL)}
    assert not any(isinstance(m, (QConv2d, QLinear)) for m in model.modules())
    assert stages["D"]["cost"]["params"] == n_params(model) == n_params(zoo.build("resnet8", num_classes=10))
    assert stages["D"]["cost"]["bitops"] == sum(hook_macs(model, (3, 8, 8)).values()) * FULL * FULL


@pytest.mark.slow
def test_ep_prunes_the_heads_and_pe_does_not(order_run) -> None:
    full = zoo.build("resnet20", num_classes=10, exits=True)
    _, ep = order_run("EP")
    _, pe = order_run("PE")
    assert list(ep.exits) == list(pe.exits) == ["layer1", "layer2"]
    for point in ("layer1", "layer2"):
        full_head = full.exits[point].conv.out_channels
        assert full_head == _stage_width(full, point)
        # EP: the head existed before P and lost half of its own channels with the backbone.
        ep_head = ep.exits[point].conv
        assert ep_head.out_channels == full_head // 2 < full_head
        assert ep_head.in_channels == _stage_width(ep, point) == full_head // 2
        assert ep.exits[point].fc.in_features == ep_head.out_channels
        # PE: the head was made for the pruned backbone and keeps its own width: the stage's.
        pe_head = pe.exits[point].conv
        assert pe_head.in_channels == pe_head.out_channels == _stage_width(pe, point) == full_head // 2
        assert pe.exits[point].fc.in_features == pe_head.out_channels


def _count_params(*options: str) -> int:
    """Params of resnet20 with both exit heads at keep ratio 0.5, from ``chaincomp count --json``."""
    rc, stdout, err = run_cli(["count", "resnet20", "--input", "3,8,8", "--exits", "layer1,layer2",
                               "--keep-ratio", "0.5", "--json", *options])
    assert rc == 0, err
    return json.loads(stdout)["params"]


@pytest.mark.slow
def test_ep_measured_params_match_the_count_command(order_run) -> None:
    record, model = order_run("EP")
    assert record["stages"][-1]["cost"]["params"] == n_params(model) == _count_params()


@pytest.mark.slow
@pytest.mark.parametrize("order", ["EP", "PE"])
def test_pool4_heads_measured_params_match_the_count_command(order_run, order) -> None:
    """The trainer's default head: its linear reads a 4 x 4 grid of the stage, so P removes 16 of
    its inputs per channel the stage loses, before (EP) or after (PE) the head is made alike."""
    record, model = order_run(order, "pool4")
    for point, head in model.exits.items():
        assert head.fc.in_features == 16 * _stage_width(model, point)
    assert record["stages"][-1]["cost"]["params"] == n_params(model) == _count_params("--exit-head", "pool4")


@pytest.mark.slow
def test_pe_measured_params_match_the_count_command_with_unpruned_heads(order_run) -> None:
    record, model = order_run("PE")
    assert record["stages"][-1]["cost"]["params"] == n_params(model) == _count_params("--heads-after-pruning")


@pytest.mark.slow
def test_qe_heads_carry_the_backbone_bits(order_run) -> None:
    record, model = order_run("QE")
    head_layers = [m for m in model.exits.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert head_layers and all(isinstance(m, (QConv2d, QLinear)) for m in head_layers)
    assert {(m.w_bits, m.a_bits) for m in head_layers} == {(1, 8)}
    layer_bits = record["stages"][-1]["cost"]["layer_bits"]
    heads = {name: bits for name, bits in layer_bits.items() if name.startswith("exits.")}
    assert set(heads) == {"exits.layer1.conv", "exits.layer1.fc", "exits.layer2.conv", "exits.layer2.fc"}
    assert all(bits == [1, 8] for bits in heads.values())


# ---- 4. interruption and resume ------------------------------------------------------------------

DP_ARGS = ["train", "--order", "DP", *FAST]


@dataclass
class Interrupted:
    rc: int
    stderr: str
    folder: Path
    record_text: str
    stages_done: int

    def copy(self, to: Path, *, checkpoint: bool = True) -> Path:
        """The interrupted run's files in a fresh folder: each test works on its own copy."""
        to.mkdir()
        shutil.copy(self.folder / "run.json", to / "run.json")
        if checkpoint:
            shutil.copy(self.folder / "run.pt", to / "run.pt")
        return to / "run.json"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    """``--order DP`` stopped by Ctrl-C as P starts (after base and D were written)."""
    folder = tmp_path_factory.mktemp("interrupted")
    original = chain._apply

    def apply(letter: str, *args: Any, **kwargs: Any) -> Any:
        if letter == "P":
            raise KeyboardInterrupt
        return original(letter, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain, "_apply", apply)
        rc, _, err = run_cli([*DP_ARGS, "--out", str(folder / "run.json")])
    return Interrupted(rc, err, folder, (folder / "run.json").read_text(encoding="utf-8"),
                       load_checkpoint(folder / "run.pt")["stages_done"])


@pytest.mark.slow
def test_interrupt_leaves_a_consistent_record(interrupted: Interrupted) -> None:
    assert interrupted.rc == 130
    assert "interrupted" in interrupted.stderr and "--resume" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr
    record = json.loads(interrupted.record_text)
    assert record["status"] == "interrupted"
    assert [s["stage"] for s in record["stages"]] == ["base", "D"]
    assert interrupted.stages_done == 2
    assert sorted(p.name for p in interrupted.folder.iterdir()) == ["run.json", "run.pt"]


@pytest.mark.slow
def test_resume_with_other_options_is_refused(interrupted: Interrupted, tmp_path: Path) -> None:
    out = interrupted.copy(tmp_path / "run")
    rc, stdout, err = run_cli([*DP_ARGS, "--prune-ratio", "0.25", "--out", str(out), "--resume"])
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--resume" in err and "other settings" in err
    assert "prune.ratio: 0.5 -> 0.25" in err  # the setting that differs, named
    assert out.read_text(encoding="utf-8") == interrupted.record_text



@pytest.mark.slow
def test_resume_completes_the_run(interrupted: Interrupted, tmp_path: Path) -> None:
    out = interrupted.copy(tmp_path / "run")
    rc, stdout, err = run_cli([*DP_ARGS, "--out", str(out), "--resume"])
    assert rc == 0, err
    record, before = read_record(out), json.loads(interrupted.record_text)
    assert record["status"] == "complete"
    assert [s["stage"] for s in record["stages"]] == ["base", "D", "P"]
    assert record["stages"][:2] == before["stages"]  # the finished stages are kept as they were
    assert record["config"] == before["config"] and record["environment"] == before["environment"]
    assert load_checkpoint(out.with_suffix(".pt"))["stages_done"] == 3
    assert [line.split()[0] for line in stdout.strip().splitlines()[1:]] == ["base", "D", "P"]


@pytest.mark.slow
def test_a_resumed_run_equals_the_run_never_interrupted(interrupted: Interrupted, tmp_path: Path) -> None:
    """The checkpoint carries every RNG state (Python, numpy, torch, the loader's shuffling), so the
    stage trained after the resume draws what it would have drawn: same accuracy, same model."""
    out = interrupted.copy(tmp_path / "resumed")
    assert run_cli([*DP_ARGS, "--out", str(out), "--resume"])[0] == 0
    whole = tmp_path / "whole.json"
    assert run_cli([*DP_ARGS, "--out", str(whole)])[0] == 0
    measured = [[(s["stage"], s["accuracy"], s["val_accuracy"], s["cost"]) for s in read_record(path)["stages"]]
                for path in (out, whole)]
    assert measured[0] == measured[1]
    resumed, never = (load_checkpoint(path.with_suffix(".pt"))["model"].state_dict() for path in (out, whole))
    assert resumed.keys() == never.keys()
    assert all(torch.equal(resumed[k], never[k]) for k in resumed)


@pytest.mark.slow
def test_resume_without_the_checkpoint_is_refused(interrupted: Interrupted, tmp_path: Path) -> None:
    out = interrupted.copy(tmp_path / "run", checkpoint=False)
    rc, _, err = run_cli([*DP_ARGS, "--out", str(out), "--resume"])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "checkpoint" in err and "run.pt" in err


@pytest.mark.slow
def test_a_failing_stage_does_not_leave_a_running_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitops.errors import InputError

    original = chain._apply

    def apply(letter: str, *args: Any, **kwargs: Any) -> Any:
        if letter == "P":
            raise InputError("P: the loss diverged (injected)")
        return original(letter, *args, **kwargs)

    monkeypatch.setattr(chain, "_apply", apply)
    out = tmp_path / "run.json"
    rc, _, err = run_cli([*DP_ARGS, "--out", str(out)])
    assert rc == 2 and "diverged" in err
    record = read_record(out)
    assert [s["stage"] for s in record["stages"]] == ["base", "D"]
    assert record["status"] not in ("running", "complete")


# ---- 4b. one commit point per save, one writer per record (issue 11) ---------------------------

D_ARGS = ["train", "--order", "D", *FAST]


def _interrupt_once(target: Any, name: str, when: Callable[..., bool], exc: BaseException):
    """Patch ``target.name`` to raise ``exc`` the first time ``when(*args)`` holds."""
    original = getattr(target, name)
    fired = []

    def patched(*args: Any, **kwargs: Any) -> Any:
        if not fired and when(*args):
            fired.append(True)
            raise exc
        return original(*args, **kwargs)

    return original, patched


def _new_checkpoint_of(path: Any, stages: int) -> bool:
    """Whether ``path`` is the new checkpoint (RUN.next.pt) of a save of ``stages`` stages."""
    return str(path).endswith(".next.pt") and load_checkpoint(Path(path))["stages_done"] == stages


# Where a save of the D stage can stop: inside the new checkpoint, after it, after the record (the
# commit) but before the checkpoint takes its name; Ctrl-C (KeyboardInterrupt, which the runner
# records) or a kill (SystemExit, which nothing catches: the files stay as the kill left them).
SAVE_STOPS = {
    "ctrl-c-inside-checkpoint": (chain.torch, "save", lambda payload, *_: payload["stages_done"] == 2,
                                 KeyboardInterrupt(), 1),
    "ctrl-c-after-checkpoint": (chain, "write_record", lambda record, *_: len(record["stages"]) == 2,
                                KeyboardInterrupt(), 1),
    "ctrl-c-after-record": (chain.os, "replace", lambda src, *_: _new_checkpoint_of(src, 2), KeyboardInterrupt(), 1),
    "kill-after-checkpoint": (chain, "write_record", lambda record, *_: len(record["stages"]) == 2,
                              SystemExit(137), 1),
    "kill-after-record": (chain.os, "replace", lambda src, *_: _new_checkpoint_of(src, 2), SystemExit(137), 2),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SAVE_STOPS))
def test_resume_recovers_from_every_interruption_of_a_save(case: str, tmp_path: Path) -> None:
    target, name, when, exc, committed = SAVE_STOPS[case]
    out = tmp_path / "run.json"
    original, patched = _interrupt_once(target, name, when, exc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(target, name, patched)
        rc, _, err = run_cli([*D_ARGS, "--out", str(out)])
    assert rc in (130, 137), err
    on_disk = read_record(out)
    assert len(on_disk["stages"]) == committed  # the record holds exactly the committed stages
    held = [load_checkpoint(p)["stages_done"] for p in (out.with_suffix(".pt"), out.with_suffix(".next.pt"))
            if p.exists()]
    assert committed in held  # ... and a checkpoint with the same stages is there
    rc, stdout, err = run_cli([*D_ARGS, "--out", str(out), "--resume"])
    assert rc == 0, err
    record = read_record(out)
    assert record["status"] == "complete" and [s["stage"] for s in record["stages"]] == ["base", "D"]
    assert record["stages"][0] == on_disk["stages"][0]  # the base model was not trained again
    assert load_checkpoint(out.with_suffix(".pt"))["stages_done"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.pt"]


@pytest.mark.slow
def test_a_damaged_checkpoint_is_one_line(interrupted: Interrupted, tmp_path: Path) -> None:
    out = interrupted.copy(tmp_path / "run")
    out.with_suffix(".pt").write_bytes(b"not a checkpoint")
    rc, _, err = run_cli([*DP_ARGS, "--out", str(out), "--resume"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot be read" in err and "run.pt" in err


def test_a_second_writer_of_the_same_record_is_refused_at_once(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from bitops.jsonio import hold_lock

    out = tmp_path / "run.json"
    with hold_lock("out", out):  # this process is the first writer
        done = subprocess.run([sys.executable, "-m", "chaincomp", *D_ARGS, "--out", str(out)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"is being written by process {os.getpid()}" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, the lock released


def _train_with_a_full_disk_at(stages: int, out: Path) -> str:
    """``train --order D`` with ``chain._torch_save`` failing like a full disk on the save of
    ``stages`` stages; checks the exit and the one error line, and returns that line."""
    import errno
    import os

    def full(payload: dict[str, Any], *_: Any) -> bool:
        return payload["stages_done"] == stages

    _, patched = _interrupt_once(chain, "_torch_save", full, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chain, "_torch_save", patched)
        rc, _, err = run_cli([*D_ARGS, "--out", str(out)])
    assert rc == 2 and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if "error:" in line]  # below the progress lines
    assert "disk full" in line
    return line


def test_torch_save_reports_a_full_disk_as_one(tmp_path: Path) -> None:
    import errno

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(OSError) as raised:  # torch.save given the path raises RuntimeError("unexpected pos")
        chain._torch_save({"tensor": torch.zeros(100_000)}, Path("/dev/full"))
    assert raised.value.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_full_disk_during_a_stage_marks_the_run_failed_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    line = _train_with_a_full_disk_at(2, out)
    assert "--resume" in line and "--out" in line
    record = read_record(out)
    assert record["status"] == "failed" and "disk full" in record["error"]
    assert [s["stage"] for s in record["stages"]] == ["base"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.pt"]  # no partial checkpoint
    rc, _, err = run_cli([*D_ARGS, "--out", str(out), "--resume"])
    assert rc == 0, err
    resumed = read_record(out)
    assert resumed["status"] == "complete" and resumed["stages"][0] == record["stages"][0]


@pytest.mark.slow
def test_a_full_disk_at_the_first_save_leaves_nothing(tmp_path: Path) -> None:
    assert "nothing was kept" in _train_with_a_full_disk_at(1, tmp_path / "run.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as shutil_module

    def tripwire(*_args: Any, **_kwargs: Any) -> None:
        raise _TrainedBeforeValidation

    def nearly_full(path: Any) -> Any:
        return shutil_module._ntuple_diskusage(10**9, 10**9 - 50_000, 50_000)

    monkeypatch.setattr(chain, "train_base", tripwire)
    monkeypatch.setattr(chain.shutil, "disk_usage", nearly_full)
    out = tmp_path / "run.json"
    rc, _, err = run_cli([*D_ARGS, "--out", str(out)])
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "--out" in err and "MiB free" in err and "0.0 MiB free" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- 5. bad input --------------------------------------------------------------------------------

class _TrainedBeforeValidation(Exception):
    pass


@dataclass(frozen=True)
class Bad:
    """A bad command line: ``{tmp}`` in an argument is the test's folder; ``words`` must all appear
    in the error line (the value and the rule), ``option`` is the option as the user spells it."""

    args: tuple[str, ...]
    words: tuple[str, ...]
    option: str
    out: str = "{tmp}/run.json"


BAD = {
    "order-unknown-letter": Bad(("--order", "DPX"), ("'X'", "D, P, Q or E"), "--order"),
    "order-lowercase": Bad(("--order", "d"), ("'d'", "D, P, Q or E"), "--order"),
    "order-empty": Bad(("--order", ""), ("''",), "--order"),
    "order-repeat": Bad(("--order", "PP"), ("'PP'", "--allow-repeat"), "--order"),
    "order-EE-even-allowed": Bad(("--order", "EE", "--allow-repeat"), ("'EE'", "once"), "--order"),
    "w-bits-0": Bad(("--order", "Q", "--w-bits", "0"), ("0", "1..32"), "--w-bits"),
    "w-bits-33": Bad(("--order", "Q", "--w-bits", "33"), ("33", "1..32"), "--w-bits"),
    "prune-ratio-1": Bad(("--order", "P", "--prune-ratio", "1.0"), ("1.0", "[0, 1)"), "--prune-ratio"),
    "prune-ratio-negative": Bad(("--order", "P", "--prune-ratio", "-0.1"), ("-0.1", "[0, 1)"), "--prune-ratio"),
    "threshold-0": Bad(("--order", "E", "--threshold", "0"), ("0", "(0, 1]"), "--threshold"),
    "threshold-1.5": Bad(("--order", "E", "--threshold", "1.5"), ("1.5", "(0, 1]"), "--threshold"),
    "thresholds-not-numbers": Bad(("--order", "E", "--thresholds", "0.5,abc"), ("0.5,abc", "numbers"), "--thresholds"),
    "dataset-without-data-dir": Bad(("--order", "D", "--dataset", "cifar10"), ("cifar10",), "--data-dir"),
    "dataset-empty-data-dir": Bad(("--order", "D", "--dataset", "cifar10", "--data-dir", "{tmp}/empty"),
                                  ("cifar10", "empty", "not found"), "--data-dir"),
    "out-missing-directory": Bad(("--order", "D"), ("missing", "does not exist"), "--out",
                                 out="{tmp}/missing/run.json"),
    "out-exists": Bad(("--order", "D"), ("old.json", "already exists", "--resume"), "--out", out="{tmp}/old.json"),
    "resume-without-record": Bad(("--order", "D", "--resume"), ("run.json",), "--resume"),
    "teacher-unknown": Bad(("--order", "D", "--teacher", "resnet999"), ("'resnet999'", "resnet20"), "--teacher"),
    "student-unknown": Bad(("--order", "D", "--student", "resnet999"), ("'resnet999'", "resnet8"), "--student"),
    "device-cuda-absent": Bad(("--order", "D", "--device", "cuda"), ("cuda", "no CUDA"), "--device"),
    "epochs-negative": Bad(("--order", "D", "--epochs", "-1"), ("-1", ">= 0"), "--epochs"),
    "distill-epochs-negative": Bad(("--order", "D", "--distill-epochs", "-1"), ("-1", ">= 0"), "--distill-epochs"),
    "exit-epochs-negative": Bad(("--order", "E", "--exit-epochs", "-1"), ("-1", ">= 0"), "--exit-epochs"),
    "lr-0": Bad(("--order", "D", "--lr", "0"), ("0", "> 0"), "--lr"),
    # Rules that depend on the models: ChainConfig.check_before_training, before any training.
    "exits-unknown": Bad(("--order", "E", "--exits", "layer9"), ("'layer9'", "layer1"), "--exits"),
    "prune-ratio-keeps-nothing": Bad(("--order", "P", "--prune-ratio", "0.99"), ("0.99", "keeps 0"), "--prune-ratio"),
    "ed-student-lacks-exit-point": Bad(("--order", "ED", "--teacher", "resnet18_cifar"), ("'layer3'", "resnet8"),
                                       "--student"),
}



@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory):
    """Run a BAD case once (with base training replaced by a tripwire): a dict of what happened."""
    results: dict[str, dict[str, Any]] = {}

    def tripwire(*_args: Any, **_kwargs: Any) -> None:
        raise _TrainedBeforeValidation

    def run(case: str) -> dict[str, Any]:
        if case not in results:
            bad = BAD[case]
            tmp = tmp_path_factory.mktemp(case)
            (tmp / "empty").mkdir()
            (tmp / "old.json").write_text("{}\n", encoding="utf-8")
            before = files_under(tmp)
            argv = ["train", *FAST, *(a.format(tmp=tmp) for a in bad.args), "--out", bad.out.format(tmp=tmp)]
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(chain, "train_base", tripwire)
                try:
                    rc, stdout, err = run_cli(argv)
                    trained = False
                except _TrainedBeforeValidation:
                    rc, stdout, err, trained = None, "", "", True
            results[case] = {"rc": rc, "stdout": stdout, "stderr": err, "trained": trained,
                             "new_files": files_under(tmp) - before,
                             "old_json": (tmp / "old.json").read_text(encoding="utf-8")}
        return results[case]

    return run


def _cases() -> list[Any]:
    cases = []
    for case in BAD:
        marks = []
        if case == "device-cuda-absent":
            marks.append(pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"))
        cases.append(pytest.param(case, marks=marks, id=case))
    return cases


@pytest.mark.parametrize("case", _cases())
def test_bad_input_is_refused_before_any_work(case: str, bad_run) -> None:
    result, bad = bad_run(case), BAD[case]
    assert not result["trained"], "the base model started training before the bad value was refused"
    assert result["rc"] == 2
    assert result["stdout"] == ""
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1, result["stderr"]
    assert lines[0].startswith("chaincomp train: error: ") and "Traceback" not in result["stderr"]
    for word in bad.words:
        assert word in lines[0], (word, lines[0])
    assert result["new_files"] == set(), "no record, checkpoint or temporary file may be written"
    assert result["old_json"] == "{}\n"


@pytest.mark.parametrize("case", _cases())
def test_bad_input_message_names_the_option(case: str, bad_run) -> None:
    result = bad_run(case)
    assert not result["trained"] and result["rc"] == 2
    assert BAD[case].option in result["stderr"], result["stderr"]


# ---- options whose meaning a run could silently change ------------------------------------------

@pytest.mark.slow
def test_threshold_outside_thresholds_is_measured_or_refused(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    rc, _, err = run_cli(["train", "--order", "E", *FAST, "--teacher", "resnet8", "--threshold", "0.75",
                          "--out", str(out)])
    if rc == 2:  # refusing it is a fix too: before any work, naming the option
        assert "--threshold" in err and not out.exists()
    else:
        assert rc == 0, err
        assert read_record(out)["stages"][-1]["exit"]["threshold"] == 0.75


def test_out_with_the_checkpoint_suffix_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*_args: Any, **_kwargs: Any) -> None:
        raise _TrainedBeforeValidation

    monkeypatch.setattr(chain, "train_base", tripwire)
    out = tmp_path / "run.pt"
    rc, _, err = run_cli(["train", "--order", "D", *FAST, "--out", str(out)])
    assert rc == 2 and "--out" in err and ".pt" in err
    assert files_under(tmp_path) == set()
