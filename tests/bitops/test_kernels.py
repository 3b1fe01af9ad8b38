"""The numba batch kernels and the numpy route against the plain-Python reference, exactly, under every policy.

``bitops.cost.evaluate`` (Python ints and floats, row by row) is the second implementation the
kernels must reproduce to the last bit (DESIGN.md, "kernels.py"): equality here is ``==``, never
approximate. The serial and the ``parallel=True`` builds and ``evaluate_batch``'s numpy route
(``engine="numpy"``, for small batches in a process without numba) must agree with each other and
with it.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bitops import InputError, LayerTable, Policy, evaluate, evaluate_batch, kernels
from bitops import batch
from bitops.batch import NUMPY_MAX_CONFIGS, PARALLEL_MIN_CONFIGS
from bitops.config import Config
from tests.bitops.tables import config_at, random_configs, random_table

# (n_layers, n_ops, n_groups, n_exits): tiny, no groups, no exits, wide, deep with many exits.
TABLE_SHAPES = ((1, 0, 1, 0), (6, 5, 0, 1), (12, 8, 4, 0), (20, 12, 6, 2), (30, 20, 8, 4))
CONFIGS_PER_TABLE = 24


def _cases() -> list[tuple[object, tuple[np.ndarray, ...]]]:
    rng = np.random.default_rng(20240611)
    cases = []
    for n_layers, n_ops, n_groups, n_exits in TABLE_SHAPES:
        table = random_table(rng, n_layers=n_layers, n_ops=n_ops, n_groups=n_groups, n_exits=n_exits)
        cases.append((table, random_configs(rng, table, CONFIGS_PER_TABLE)))
    return cases


CASES = _cases()

POLICIES = [
    Policy(ops=ops, bitops_formula=formula, bn=bn, elementwise=elementwise, first_last_bits=first_last,
           input_bits=input_bits, aux_bits=aux)
    for ops, formula, bn, elementwise, first_last, input_bits, aux in itertools.product(
        ("macs", "flops"), ("product", "accumulator"), ("folded", "counted"), ("free", "counted"),
        (None, 8, 32), (None, 8), (32, 0))
]


def _policy_id(policy: Policy) -> str:
    return (f"{policy.ops}-{policy.bitops_formula}-bn_{policy.bn}-ew_{policy.elementwise}"
            f"-fl_{policy.first_last_bits}-in_{policy.input_bits}-aux_{policy.aux_bits}")


FIELDS = ("bitops", "macs", "params", "storage_bits")


def _assert_batch_equals_reference(table, arrays, policy: Policy) -> None:
    serial = evaluate_batch(table, *arrays, policy=policy, parallel=False, engine="numba")
    parallel = evaluate_batch(table, *arrays, policy=policy, parallel=True, engine="numba")
    numpy_route = evaluate_batch(table, *arrays, policy=policy, engine="numpy")
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(serial, field), getattr(parallel, field),
                                      err_msg=f"serial vs parallel: {field}")
        np.testing.assert_array_equal(getattr(serial, field), getattr(numpy_route, field),
                                      err_msg=f"serial vs numpy: {field}")
        assert getattr(numpy_route, field).dtype == getattr(serial, field).dtype, field
    for m in range(arrays[0].shape[0]):
        totals = evaluate(table, config_at(arrays, m), policy).totals
        got = (serial.bitops[m], serial.macs[m], serial.params[m], serial.storage_bits[m])
        want = (totals.bitops, totals.macs, totals.params, totals.storage_bits)
        assert got == want, f"{table.model} config {m} under {_policy_id(policy)}: kernel {got} != reference {want}"


@pytest.mark.parametrize("policy", POLICIES, ids=_policy_id)
def test_serial_parallel_and_reference_agree_exactly(policy: Policy) -> None:
    for table, arrays in CASES:
        _assert_batch_equals_reference(table, arrays, policy)


@pytest.mark.parametrize("nonmac_bits", [1, 4, 16])
def test_counted_nonmac_ops_at_other_widths_agree_exactly(nonmac_bits: int) -> None:
    policy = Policy(bn="counted", elementwise="counted", nonmac_bits=nonmac_bits, bitops_formula="accumulator")
    for table, arrays in CASES:
        _assert_batch_equals_reference(table, arrays, policy)


def test_large_widths_agree_exactly() -> None:
    """Counts far past 2**53 after the bit products: float rounding must happen in the same order."""
    rng = np.random.default_rng(7)
    base = random_table(rng, n_layers=25, n_ops=10, n_groups=5, n_exits=3)
    data = base.to_json_dict()
    data["layers"]["macs_unit"] = [v * 100_000_007 for v in data["layers"]["macs_unit"]]
    table = type(base).from_json_dict(data)
    arrays = random_configs(rng, table, 32)
    assert evaluate_batch(table, *arrays, policy=Policy(ops="flops")).bitops.max() > 2**53
    for policy in (Policy(ops="flops"), Policy(ops="flops", bitops_formula="accumulator", elementwise="counted")):
        _assert_batch_equals_reference(table, arrays, policy)


def test_accumulator_log2_agrees_for_many_fan_ins() -> None:
    """The Baskin term's log2(fan_in): the kernel's scalar np.log2 must round like math.log2.

    NumPy's own vectorised np.log2 does not: with numpy 2.4 it differs from math.log2 in the last
    bit for 58 integers of 1..2**20 (1621, 3242, 6484...). Those fan-ins are in the table, so an
    implementation computing the term with NumPy's vectorised np.log2 fails here.
    """
    rng = np.random.default_rng(99)
    small = np.arange(1, 2**20)
    vector_differs = small[np.log2(small.astype(np.float64)) != np.array([math.log2(v) for v in small.tolist()])]
    fan_in = np.unique(np.concatenate([rng.integers(1, 2**22, size=400), 2 ** np.arange(22), 3 ** np.arange(14),
                                       vector_differs]))
    n = len(fan_in)
    layers = {"name": [f"fc{i}" for i in range(n)], "kind": ["linear"] * n, "macs_unit": [1] * n,
              "in_ch": fan_in.tolist(), "out_ch": [1] * n, "groups": [1] * n, "taps": [1] * n, "kernel_h": [1] * n,
              "kernel_w": [1] * n, "out_h": [1] * n, "out_w": [1] * n, "in_group": [-1] * n, "out_group": [-1] * n,
              "segment": [0] * n, "exit_index": [-1] * n, "has_weight": [True] * n, "has_bias": [False] * n,
              "depthwise": [False] * n}
    ops: dict[str, list] = {c: [] for c in ("name", "kind", "category", "elements", "channels", "group", "params",
                                            "segment", "exit_index")}
    table = LayerTable.from_columns(model="fan_ins", input_shape=(1,), layers=layers, ops=ops, group_channels=[],
                                    group_labels=[])
    arrays = random_configs(rng, table, 8)
    _assert_batch_equals_reference(table, arrays, Policy(bitops_formula="accumulator"))


def _grouped_conv_table() -> LayerTable:
    """Grouped (not depthwise) convs on pruned channel groups, which ``random_table`` never builds.

    Groups g0 (8 channels) and g1 (6). Per kept channel, conv ``a`` has 2 input channels and 4
    conv groups (in_pg = 2 x kept // 4: a division per configuration, flooring at odd kept
    counts), conv ``b`` 2 and 2 (in_pg = kept), conv ``c`` 4 and 8 (in_pg = kept // 2).
    """
    rows = [  # name, in_ch, out_ch, groups, in_group, out_group, has_bias
        ("stem", 3, 16, 1, -1, 0, False), ("a", 16, 12, 4, 0, 1, False), ("b", 12, 16, 2, 1, 0, True),
        ("c", 24, 24, 8, 1, 1, False), ("fc", 24, 10, 1, 1, -1, True)]
    n = len(rows)
    name, in_ch, out_ch, groups, in_group, out_group, has_bias = (list(col) for col in zip(*rows))
    kernel = [3, 3, 3, 1, 1]
    layers = {"name": name, "kind": ["conv"] * (n - 1) + ["linear"], "in_ch": in_ch, "out_ch": out_ch,
              "groups": groups, "taps": [k * k for k in kernel], "kernel_h": kernel, "kernel_w": kernel,
              "out_h": [4] * (n - 1) + [1], "out_w": [4] * (n - 1) + [1],
              "macs_unit": [k * k * 16 for k in kernel[:-1]] + [1], "in_group": in_group, "out_group": out_group,
              "segment": [0] * n, "exit_index": [-1] * n, "has_weight": [True] * n, "has_bias": has_bias,
              "depthwise": [False] * n}
    ops = {"name": ["a.bn", "c.relu"], "kind": ["batch_norm", "relu"], "category": ["bn", "act"],
           "elements": [12 * 16, 24 * 16], "channels": [12, 24], "group": [1, 1], "params": [24, 0],
           "segment": [0, 0], "exit_index": [-1, -1]}
    return LayerTable.from_columns(model="grouped", input_shape=(3, 4, 4), layers=layers, ops=ops,
                                   group_channels=[8, 6], group_labels=["g0", "g1"], extra_params=7)


@pytest.mark.parametrize("policy", [Policy(), Policy(ops="flops", bitops_formula="accumulator", bn="counted",
                                                     elementwise="counted", first_last_bits=8)], ids=_policy_id)
def test_pruned_grouped_convs_agree_exactly(policy: Policy) -> None:
    table = _grouped_conv_table()
    rng = np.random.default_rng(5)
    m = 64
    # At least 2 kept channels per group: conv a's 2 x kept // 4 input channels per group stay >= 1
    # (0 would leave the accumulator's log2(fan_in) undefined in the reference too).
    kept = np.stack([rng.integers(2, c + 1, size=m) for c in table.group_channels], axis=1)
    kept[0] = table.group_channels
    arrays = (rng.integers(1, 33, size=(m, table.num_layers)), rng.integers(1, 33, size=(m, table.num_layers)),
              kept, np.zeros((m, 0)))
    assert set(((2 * kept[:, 0]) % 4).tolist()) == {0, 2}  # conv a's division floors, and is exact
    _assert_batch_equals_reference(table, arrays, policy)


def test_parallel_default_kicks_in_for_large_batches_and_agrees() -> None:
    table, _ = CASES[3]
    arrays = random_configs(np.random.default_rng(3), table, max(5000, PARALLEL_MIN_CONFIGS))
    auto = evaluate_batch(table, *arrays)
    serial = evaluate_batch(table, *arrays, parallel=False)
    np.testing.assert_array_equal(auto.bitops, serial.bitops)
    np.testing.assert_array_equal(auto.storage_bits, serial.storage_bits)
    # The numpy route over many chunks of configurations (20 rows: 1638 per chunk).
    policy = Policy(bitops_formula="accumulator", elementwise="counted", bn="counted")
    numpy_route = evaluate_batch(table, *arrays, policy=policy, engine="numpy")
    serial = evaluate_batch(table, *arrays, policy=policy, parallel=False, engine="numba")
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(numpy_route, field), getattr(serial, field), err_msg=field)


@pytest.mark.parametrize("chunk_elements", [1, 45, 400])
def test_numpy_route_in_small_chunks_agrees_exactly(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    """Chunks of 1 configuration, a few, and a few dozen: the chunk boundaries change no bit."""
    monkeypatch.setattr(batch, "_NUMPY_CHUNK_ELEMENTS", chunk_elements)
    policy = Policy(ops="flops", bitops_formula="accumulator", bn="counted", elementwise="counted", first_last_bits=8)
    for table, arrays in CASES:
        _assert_batch_equals_reference(table, arrays, policy)


# ---- choosing the engine -----------------------------------------------------------------------

def test_numpy_engine_with_parallel_is_rejected() -> None:
    table, arrays = CASES[0]
    with pytest.raises(InputError, match=r"parallel=True needs engine='numba' or 'auto', got engine='numpy'"):
        evaluate_batch(table, *arrays, parallel=True, engine="numpy")


def test_unknown_engine_is_rejected() -> None:
    table, arrays = CASES[0]
    with pytest.raises(InputError, match=r"engine must be one of auto, numpy, numba, got 'cuda'"):
        evaluate_batch(table, *arrays, engine="cuda")  # type: ignore[arg-type]


def test_auto_engine_imports_numba_only_for_a_large_batch() -> None:
    """In a fresh process (no numba yet), engine="auto" evaluates batches below NUMPY_MAX_CONFIGS with
    numpy, without importing numba; a batch of NUMPY_MAX_CONFIGS loads the kernels, and every batch
    after that uses them, small ones included. Each result equals the other route's."""
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from bitops import batch, evaluate_batch
        from tests.bitops.tables import random_configs, random_table

        rng = np.random.default_rng(11)
        table = random_table(rng, n_layers=12, n_ops=8, n_groups=4, n_exits=2)
        small = random_configs(rng, table, {NUMPY_MAX_CONFIGS - 1})
        large = random_configs(rng, table, {NUMPY_MAX_CONFIGS})
        got_small = evaluate_batch(table, *small)
        assert "numba" not in sys.modules, "a batch below NUMPY_MAX_CONFIGS imported numba"
        got_large = evaluate_batch(table, *large)
        assert "bitops.kernels" in sys.modules, "a batch of NUMPY_MAX_CONFIGS did not load the kernels"
        assert np.array_equal(got_small.bitops, evaluate_batch(table, *small, engine="numba").bitops)
        assert np.array_equal(got_large.bitops, evaluate_batch(table, *large, engine="numpy").bitops)

        def refuse(*args):
            raise AssertionError("numpy route used after the kernels were loaded")

        batch.numpy_batch_cost = refuse
        evaluate_batch(table, *(a[:3] for a in small))
    """)
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("m", "build"), [(PARALLEL_MIN_CONFIGS - 1, "batch_cost_serial"),
                                          (PARALLEL_MIN_CONFIGS, "batch_cost_parallel")])
def test_parallel_default_starts_at_the_threshold(monkeypatch: pytest.MonkeyPatch, m: int, build: str) -> None:
    used = []

    def spy(name: str) -> object:
        kernel = getattr(kernels, name)

        def call(*args: object) -> object:
            used.append(name)
            return kernel(*args)

        return call

    for name in ("batch_cost_serial", "batch_cost_parallel"):
        monkeypatch.setattr(kernels, name, spy(name))
    table, (w_bits, a_bits, kept, exit_probs) = CASES[0]
    evaluate_batch(table, np.broadcast_to(w_bits[0], (m, table.num_layers)), a_bits[0], kept[0], exit_probs[0])
    assert used == [build]


# ---- broadcasting ------------------------------------------------------------------------------

def test_one_dimensional_inputs_broadcast_against_batches() -> None:
    table, (w_bits, a_bits, kept, exit_probs) = CASES[3]
    policy = Policy(bitops_formula="accumulator", elementwise="counted")
    result = evaluate_batch(table, w_bits[5], a_bits, kept[2], exit_probs, policy=policy)
    assert result.bitops.shape == (CONFIGS_PER_TABLE,)
    for m in range(CONFIGS_PER_TABLE):
        totals = evaluate(table, Config(w_bits=w_bits[5], a_bits=a_bits[m], kept=kept[2], exit_probs=exit_probs[m]),
                          policy).totals
        assert (result.bitops[m], result.macs[m], result.params[m], result.storage_bits[m]) == (
            totals.bitops, totals.macs, totals.params, totals.storage_bits)


def test_single_row_batch_broadcasts_like_a_vector() -> None:
    table, (w_bits, a_bits, kept, exit_probs) = CASES[4]
    as_rows = evaluate_batch(table, w_bits[:1], a_bits, kept[:1], exit_probs[1:2])
    as_vectors = evaluate_batch(table, w_bits[0], a_bits, kept[0], exit_probs[1])
    np.testing.assert_array_equal(as_rows.bitops, as_vectors.bitops)
    np.testing.assert_array_equal(as_rows.storage_bits, as_vectors.storage_bits)


def test_all_vectors_give_one_configuration() -> None:
    table, arrays = CASES[2]
    result = evaluate_batch(table, *(a[4] for a in arrays))
    assert result.bitops.shape == (1,)
    assert result.bitops[0] == evaluate(table, config_at(arrays, 4)).totals.bitops


@pytest.mark.parametrize(("engine", "parallel"), [("numba", False), ("numba", True), ("numpy", False)],
                         ids=["serial", "parallel", "numpy"])
def test_empty_batch_beside_vectors_gives_empty_results(engine: str, parallel: bool) -> None:
    table, (w_bits, a_bits, kept, exit_probs) = CASES[3]
    result = evaluate_batch(table, w_bits[:0], a_bits[0], kept[0], exit_probs[0],
                            policy=Policy(first_last_bits=8, bitops_formula="accumulator", elementwise="counted"),
                            parallel=parallel, engine=engine)
    for field, dtype in (("bitops", np.float64), ("macs", np.float64), ("params", np.int64),
                         ("storage_bits", np.int64)):
        assert getattr(result, field).shape == (0,) and getattr(result, field).dtype == dtype, field


def test_whole_float_bits_and_kept_give_the_integer_result() -> None:
    table, arrays = CASES[4]
    as_ints = evaluate_batch(table, *arrays)
    as_floats = evaluate_batch(table, *(a.astype(np.float64) for a in arrays))
    for field in ("bitops", "macs", "params", "storage_bits"):
        np.testing.assert_array_equal(getattr(as_floats, field), getattr(as_ints, field), err_msg=field)


def test_inputs_in_any_layout_and_dtype_give_the_same_result() -> None:
    # The wrapper hands C-contiguous uint8/int32/float64 arrays through as they are and converts
    # anything else; every route must reach the same numbers.
    table, (w_bits, a_bits, kept, exit_probs) = CASES[4]
    want = evaluate_batch(table, w_bits, a_bits, kept, exit_probs)
    every_other_column = np.repeat(w_bits.astype(np.uint8), 2, axis=1)[:, ::2]
    variants = {
        "kernel dtypes": (w_bits.astype(np.uint8), a_bits.astype(np.uint8), kept.astype(np.int32), exit_probs),
        "fortran order": tuple(np.asfortranarray(a) for a in (w_bits, a_bits, kept, exit_probs)),
        "strided, small ints": (every_other_column, a_bits.astype(np.int16), kept.astype(np.uint16), exit_probs),
    }
    for label, arrays in variants.items():
        got = evaluate_batch(table, *arrays)
        for field in ("bitops", "macs", "params", "storage_bits"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=f"{label}: {field}")


@pytest.mark.parametrize("policy", [Policy(first_last_bits=8), Policy(input_bits=8)], ids=_policy_id)
def test_policy_overrides_leave_the_callers_arrays_alone(policy: Policy) -> None:
    # uint8, C-contiguous, one row per configuration: the kernels could take these arrays as they are.
    table, (w_bits, a_bits, kept, exit_probs) = CASES[3]
    w8, a8 = w_bits.astype(np.uint8), a_bits.astype(np.uint8)
    evaluate_batch(table, w8, a8, kept, exit_probs, policy=policy)
    np.testing.assert_array_equal(w8, w_bits)
    np.testing.assert_array_equal(a8, a_bits)


def test_missing_exit_probs_means_nobody_leaves() -> None:
    table, (w_bits, a_bits, kept, _) = CASES[4]
    zeros = np.zeros((CONFIGS_PER_TABLE, table.num_exits))
    np.testing.assert_array_equal(evaluate_batch(table, w_bits, a_bits, kept).bitops,
                                  evaluate_batch(table, w_bits, a_bits, kept, zeros).bitops)


# ---- input errors: one test per rule -----------------------------------------------------------

ERR_TABLE, ERR_ARRAYS = CASES[3]  # 2 exits, 6 groups


def _inputs(**change: np.ndarray) -> dict[str, np.ndarray]:
    w_bits, a_bits, kept, exit_probs = (a[:4].copy() for a in ERR_ARRAYS)
    inputs = {"w_bits": w_bits, "a_bits": a_bits, "kept": kept, "exit_probs": exit_probs}
    inputs.update(change)
    return inputs


def test_wrong_layer_count_is_rejected() -> None:
    with pytest.raises(InputError, match=r"w_bits must have shape \(M, \d+\)"):
        evaluate_batch(ERR_TABLE, **_inputs(w_bits=np.full(ERR_TABLE.num_layers + 1, 8)))


def test_three_dimensional_bits_are_rejected() -> None:
    with pytest.raises(InputError, match=r"a_bits must have shape"):
        evaluate_batch(ERR_TABLE, **_inputs(a_bits=np.full((2, 4, ERR_TABLE.num_layers), 8)))


def test_wrong_group_count_is_rejected() -> None:
    with pytest.raises(InputError, match=r"kept must have shape"):
        evaluate_batch(ERR_TABLE, **_inputs(kept=np.ones((4, ERR_TABLE.num_groups - 1), dtype=np.int64)))


def test_wrong_exit_count_is_rejected() -> None:
    with pytest.raises(InputError, match=r"exit_probs must have shape"):
        evaluate_batch(ERR_TABLE, **_inputs(exit_probs=np.zeros((4, ERR_TABLE.num_exits + 1))))


def test_batches_of_different_sizes_are_rejected() -> None:
    with pytest.raises(InputError, match=r"w_bits must have shape"):
        evaluate_batch(ERR_TABLE, **_inputs(w_bits=np.full((3, ERR_TABLE.num_layers), 8),
                                            a_bits=np.full((5, ERR_TABLE.num_layers), 8)))


def test_an_empty_batch_beside_a_bigger_one_is_rejected() -> None:
    with pytest.raises(InputError, match=r"w_bits must have shape"):
        evaluate_batch(ERR_TABLE, **_inputs(w_bits=np.full((0, ERR_TABLE.num_layers), 8)))


@pytest.mark.parametrize("dtype", [bool, str, object])
def test_bits_that_are_not_numbers_are_rejected(dtype: type) -> None:
    with pytest.raises(InputError, match=r"a_bits must be numbers"):
        evaluate_batch(ERR_TABLE, **_inputs(a_bits=np.full(ERR_TABLE.num_layers, 1, dtype=dtype)))


def test_zero_bits_are_rejected() -> None:
    w_bits = _inputs()["w_bits"]
    w_bits[2, 3] = 0
    with pytest.raises(InputError, match=r"w_bits must be an integer in 1\.\.32"):
        evaluate_batch(ERR_TABLE, **_inputs(w_bits=w_bits))


def test_more_than_32_bits_are_rejected() -> None:
    a_bits = _inputs()["a_bits"]
    a_bits[1, -1] = 33
    with pytest.raises(InputError, match=r"a_bits must be an integer in 1\.\.32"):
        evaluate_batch(ERR_TABLE, **_inputs(a_bits=a_bits))


def test_bits_that_would_wrap_in_uint8_are_rejected() -> None:
    with pytest.raises(InputError, match=r"w_bits must be an integer in 1\.\.32"):
        evaluate_batch(ERR_TABLE, **_inputs(w_bits=np.full(ERR_TABLE.num_layers, 264)))


@pytest.mark.parametrize(("name", "policy"), [("w_bits", Policy(first_last_bits=8)),
                                             ("a_bits", Policy(first_last_bits=8)), ("a_bits", Policy(input_bits=8))],
                         ids=["w-first_last", "a-first_last", "a-input"])
def test_bits_are_checked_before_the_policy_overrides_them(name: str, policy: Policy) -> None:
    # The policy would replace this 0 on the stem, but the configuration itself is invalid, and
    # evaluate (the reference) rejects it too.
    inputs = _inputs()
    inputs[name][1, ERR_TABLE.first_layer] = 0
    with pytest.raises(InputError, match=rf"^{name} must be an integer in 1\.\.32, got 0 for layer "):
        evaluate(ERR_TABLE, config_at(tuple(inputs.values()), 1), policy)
    with pytest.raises(InputError, match=rf"{name} must be an integer in 1\.\.32"):
        evaluate_batch(ERR_TABLE, **inputs, policy=policy)


@pytest.mark.parametrize("name", ["w_bits", "a_bits"])
def test_fractional_bits_are_rejected(name: str) -> None:
    bits = _inputs()[name].astype(np.float64)
    bits[2, 3] = 7.5
    with pytest.raises(InputError, match=rf"{name} must be whole numbers, got 7\.5"):
        evaluate_batch(ERR_TABLE, **_inputs(**{name: bits}))


def test_fractional_kept_channels_are_rejected() -> None:
    kept = _inputs()["kept"].astype(np.float64)
    kept[1, 2] = 2.5
    with pytest.raises(InputError, match=r"kept must be whole numbers, got 2\.5"):
        evaluate_batch(ERR_TABLE, **_inputs(kept=kept))


def test_invalid_vectors_beside_an_empty_batch_are_rejected() -> None:
    with pytest.raises(InputError, match=r"a_bits must be an integer in 1\.\.32"):
        evaluate_batch(ERR_TABLE, np.full((0, ERR_TABLE.num_layers), 8), np.zeros(ERR_TABLE.num_layers),
                       np.ones(ERR_TABLE.num_groups), np.zeros(ERR_TABLE.num_exits))


def test_zero_kept_channels_are_rejected() -> None:
    kept = _inputs()["kept"]
    kept[0, 1] = 0
    with pytest.raises(InputError, match=r"kept channels must be in 1\.\.channels"):
        evaluate_batch(ERR_TABLE, **_inputs(kept=kept))


def test_more_kept_channels_than_the_group_has_are_rejected() -> None:
    kept = _inputs()["kept"]
    kept[3, 0] = ERR_TABLE.group_channels[0] + 1
    with pytest.raises(InputError, match=r"kept channels must be in 1\.\.channels"):
        evaluate_batch(ERR_TABLE, **_inputs(kept=kept))


@pytest.mark.parametrize("row", [0, 700, 999])
def test_too_many_kept_channels_are_found_anywhere_in_a_large_batch(row: int) -> None:
    # The per-group maximum is taken over blocks of 682 rows (row 0), then over the rows left over
    # (700, 999).
    kept = np.tile(ERR_TABLE.group_channels, (1000, 1))
    kept[row, 4] += 1
    with pytest.raises(InputError, match=r"kept channels must be in 1\.\.channels"):
        evaluate_batch(ERR_TABLE, w_bits=ERR_ARRAYS[0][0], a_bits=ERR_ARRAYS[1][0], kept=kept)


def test_negative_exit_probs_are_rejected() -> None:
    with pytest.raises(InputError, match=r"exit_probs must be finite, >= 0"):
        evaluate_batch(ERR_TABLE, **_inputs(exit_probs=np.array([0.5, -0.1])))


def test_exit_probs_summing_past_one_are_rejected() -> None:
    # Row 1 is over by 1e-6, far past the 1e-9 rounding slack; row 0 sums to exactly 1 and is fine.
    exit_probs = np.array([[0.5, 0.5], [0.6, 0.4 + 1e-6], [0.0, 0.0], [0.1, 0.2]])
    with pytest.raises(InputError, match=r"exit_probs .* sum to at most 1"):
        evaluate_batch(ERR_TABLE, **_inputs(exit_probs=exit_probs))


def test_nan_exit_probs_are_rejected() -> None:
    with pytest.raises(InputError, match=r"exit_probs must be finite"):
        evaluate_batch(ERR_TABLE, **_inputs(exit_probs=np.array([np.nan, 0.1])))
