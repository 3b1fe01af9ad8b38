"""trainer.config: the configs are torch-free, check their cross-part rules under dotted field names,
and survive JSON (what a run record stores and ``resume`` compares)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from bitops.architectures import exit_points
from bitops.errors import InputError
from bitops.orders import CONFIG_FIELDS, METHODS, PARAMETERS
from trainer.config import ChainConfig, DistillConfig, ExitConfig, PruneConfig, QuantConfig

TORCH_FREE = ["trainer.config", "trainer.record", "trainer.profile_format", "bitops.rules", "bitops.architectures"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_no_torch(module):
    code = (f"import sys, {module}; loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_to_json_reads_back_equal():
    config = ChainConfig(order="DPQE", exits=ExitConfig(exits=["layer1"], thresholds=[0.5, 0.9]))
    stored = json.loads(json.dumps(config.to_json()))
    assert stored == config.to_json()
    assert stored["exits"] == {"exits": ["layer1"], "thresholds": [0.5, 0.9], "threshold": 0.9, "epochs": 30,
                               "head": "pool4"}
    assert stored["prune"]["ratio"] == PruneConfig().ratio and stored["order"] == "DPQE"


@pytest.mark.parametrize("make, message", [
    (lambda: ChainConfig(order="D", teacher="resnet999"), "teacher must be a zoo model"),
    (lambda: ChainConfig(order="DPX"), "order: an order must use the letters D, P, Q, E, got 'DPX'"),
    (lambda: ChainConfig(order="D", seed=-1), "seed must be an integer in 0..4294967295, got -1"),
])
def test_chain_config_rules_name_the_field(make, message):
    with pytest.raises(InputError) as err:
        make()
    assert str(err.value).startswith(message), str(err.value)


def test_an_exit_point_the_model_lacks_is_named_under_exits_exits():
    config = ChainConfig(order="E", teacher="resnet20", exits=ExitConfig(exits=("layer3",)))
    with pytest.raises(InputError, match=r"^exits\.exits: 'layer3' is not an exit point of resnet20 \(layer1, layer2\)$"):
        config.check_before_training(10)


def test_ed_with_a_student_lacking_the_exit_point_is_named_under_distill_student():
    # resnet18_cifar has four stages (exit points layer1..layer3), resnet8 three (layer1, layer2).
    assert exit_points("resnet18_cifar") == ("layer1", "layer2", "layer3") and exit_points("resnet8") == ("layer1", "layer2")
    config = ChainConfig(order="ED", teacher="resnet18_cifar", distill=DistillConfig(student="resnet8"))
    with pytest.raises(InputError, match=r"^distill\.student resnet8 has no exit point 'layer3'"):
        config.check_before_training(10)


def test_a_pruning_ratio_that_empties_a_group_is_named_under_prune_ratio():
    # resnet8's narrowest group has 16 channels: int(16 * 0.05) = 0 kept at ratio 0.95, int(16 * 0.1) = 1 at 0.9.
    ChainConfig(order="P", teacher="resnet8", prune=PruneConfig(ratio=0.9)).check_before_training(10)
    config = ChainConfig(order="P", teacher="resnet8", prune=PruneConfig(ratio=0.95))
    with pytest.raises(InputError, match=r"^prune\.ratio 0\.95 keeps 0 of the 16 channels of a channel group of resnet8"):
        config.check_before_training(10)



def test_each_method_config_field_is_a_field_of_its_stage_config():
    # bitops.orders cannot import the trainer, so its table of stage-config fields is checked here.
    stage_configs = {"D": DistillConfig, "P": PruneConfig, "Q": QuantConfig, "E": ExitConfig}
    assert set(CONFIG_FIELDS) == set(PARAMETERS) == set(METHODS) == set(stage_configs)
    for method, config_type in stage_configs.items():
        assert CONFIG_FIELDS[method] in {f.name for f in dataclasses.fields(config_type)}, method
