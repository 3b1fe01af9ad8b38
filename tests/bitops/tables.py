"""Random but valid LayerTables and configurations for the bitops tests.

``random_table`` builds a table through :meth:`LayerTable.from_columns` (so its validation runs)
that contains every row shape the cost model distinguishes:

* a conv stem fed by the never-pruned image channels (``in_group == -1``) and a final linear
  classifier with never-pruned outputs, so ``first_layer``/``last_layer`` are real;
* plain convs (1x1, 3x3, 5x5, 3x1; stride encoded in the output size) between channel groups;
* depthwise convs (``groups == in_ch == out_ch``, ``in_group == out_group``);
* grouped convs on never-pruned channels (a pruned grouped conv is not a shape trace.py emits);
* linear rows whose ``in_ch`` is a multiple (> 1) of their input group (flatten of C x H x W);
* a matmul row (``has_weight`` False: both operands are activations);
* exit heads (``exit_index == segment == k``), placed at their exit point or after the backbone;
* non-MAC op rows of every category, BN ones with 2 parameters per channel.

``random_configs`` draws M configurations with bits over all of 1..32, kept channels over all of
1..group size, and exit probabilities that include all-zero rows and rows summing exactly to 1.
``tables()`` and ``configs()`` wrap both as hypothesis strategies (a seed plus sizes, so a failing
example shrinks to a small table).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from bitops.config import Config
from bitops.table import OP_CATEGORIES, LayerTable

__all__ = ["configs", "config_at", "random_configs", "random_table", "tables"]

_KERNELS = ((1, 1), (3, 3), (5, 5), (3, 1))


class _Builder:
    """Accumulates MAC rows and op rows as plain lists, the layout ``from_columns`` takes."""

    def __init__(self, rng: np.random.Generator, group_channels: np.ndarray) -> None:
        self.rng = rng
        self.group_channels = group_channels
        self.layers: dict[str, list[Any]] = {c: [] for c in (
            "name", "kind", "macs_unit", "in_ch", "out_ch", "groups", "taps", "kernel_h", "kernel_w", "out_h",
            "out_w", "in_group", "out_group", "segment", "exit_index", "has_weight", "has_bias", "depthwise")}
        self.ops: dict[str, list[Any]] = {c: [] for c in (
            "name", "kind", "category", "elements", "channels", "group", "params", "segment", "exit_index")}

    # ---- channel groups ---------------------------------------------------------------------
    def group(self, never_pruned_frac: float = 0.2) -> int:
        """A random group id, or -1 now and then (and always when the table has no groups)."""
        n = len(self.group_channels)
        if n == 0 or self.rng.random() < never_pruned_frac:
            return -1
        return int(self.rng.integers(n))

    def width(self, group: int) -> int:
        return int(self.group_channels[group]) if group >= 0 else int(self.rng.integers(1, 17))

    # ---- rows --------------------------------------------------------------------------------
    def layer(self, *, name: str, kind: str, in_ch: int, out_ch: int, in_group: int, out_group: int,
              segment: int, exit_index: int, groups: int = 1, kernel: tuple[int, int] = (1, 1),
              out_hw: tuple[int, int] = (1, 1), has_weight: bool = True, has_bias: bool = False,
              depthwise: bool = False, macs_unit: int | None = None) -> None:
        kh, kw = kernel
        row = {
            "name": name, "kind": kind, "in_ch": in_ch, "out_ch": out_ch, "groups": groups, "taps": kh * kw,
            "kernel_h": kh, "kernel_w": kw, "out_h": out_hw[0], "out_w": out_hw[1], "in_group": in_group,
            "out_group": out_group, "segment": segment, "exit_index": exit_index, "has_weight": has_weight,
            "has_bias": has_bias, "depthwise": depthwise,
            "macs_unit": out_hw[0] * out_hw[1] * kh * kw if macs_unit is None else macs_unit,
        }
        for col, value in row.items():
            self.layers[col].append(value)

    def conv(self, name: str, segment: int, exit_index: int = -1, *, in_group: int | None = None,
             out_group: int | None = None) -> None:
        in_group = self.group() if in_group is None else in_group
        out_group = self.group() if out_group is None else out_group
        in_ch, out_ch = self.width(in_group), self.width(out_group)
        groups = 1
        if in_group < 0 and out_group < 0 and self.rng.random() < 0.5:
            # A grouped conv on never-pruned channels: widths stretched to a multiple of groups.
            groups = int(self.rng.integers(2, 4))
            in_ch, out_ch = in_ch * groups, out_ch * groups
        kernel = _KERNELS[int(self.rng.integers(len(_KERNELS)))]
        out_hw = (int(self.rng.integers(1, 9)), int(self.rng.integers(1, 9)))
        self.layer(name=name, kind="conv", in_ch=in_ch, out_ch=out_ch, in_group=in_group, out_group=out_group,
                   segment=segment, exit_index=exit_index, groups=groups, kernel=kernel, out_hw=out_hw,
                   has_bias=bool(self.rng.random() < 0.3))

    def depthwise(self, name: str, segment: int, exit_index: int = -1) -> None:
        group = self.group()
        ch = self.width(group)
        kernel = _KERNELS[int(self.rng.integers(1, len(_KERNELS)))]
        out_hw = (int(self.rng.integers(1, 9)), int(self.rng.integers(1, 9)))
        self.layer(name=name, kind="conv", in_ch=ch, out_ch=ch, in_group=group, out_group=group, segment=segment,
                   exit_index=exit_index, groups=ch, kernel=kernel, out_hw=out_hw,
                   has_bias=bool(self.rng.random() < 0.3), depthwise=True)

    def linear(self, name: str, segment: int, exit_index: int = -1, *, flatten: bool = False,
               out_group: int | None = None) -> None:
        in_group = self.group(never_pruned_frac=0.0 if flatten else 0.2)
        # Flatten of C x H x W: in_features is the group's channel count times H*W (> 1).
        spatial = int(self.rng.integers(2, 10)) if flatten else 1
        in_ch = self.width(in_group) * spatial
        out_group = self.group() if out_group is None else out_group
        self.layer(name=name, kind="linear", in_ch=in_ch, out_ch=self.width(out_group), in_group=in_group,
                   out_group=out_group, segment=segment, exit_index=exit_index,
                   has_bias=bool(self.rng.random() < 0.7))

    def matmul(self, name: str, segment: int, exit_index: int = -1) -> None:
        # Activation x activation (e.g. attention scores): no weights; macs_unit = outputs per
        # reduction element, in_ch the reduction length.
        self.layer(name=name, kind="matmul", in_ch=int(self.rng.integers(1, 65)), out_ch=1, in_group=-1,
                   out_group=-1, segment=segment, exit_index=exit_index, has_weight=False,
                   macs_unit=int(self.rng.integers(1, 257)))

    def op(self, name: str, category: str, segment: int, exit_index: int = -1) -> None:
        group = self.group()
        channels = self.width(group) * (int(self.rng.integers(1, 4)) if group >= 0 else 1)
        per_channel = {"bn": 2, "other": int(self.rng.integers(0, 2))}.get(category, 0)
        row = {"name": name, "kind": {"bn": "batch_norm", "act": "relu", "add": "add", "pool": "adaptive_avg_pool2d",
                                      "other": "layer_scale"}[category],
               "category": category, "elements": channels * int(self.rng.integers(1, 65)), "channels": channels,
               "group": group, "params": channels * per_channel, "segment": segment, "exit_index": exit_index}
        for col, value in row.items():
            self.ops[col].append(value)


def random_table(
    rng: np.random.Generator,
    *,
    n_layers: int,
    n_ops: int,
    n_groups: int,
    n_exits: int,
    depthwise_frac: float = 0.2,
) -> LayerTable:
    """A valid random table with at least ``n_layers`` MAC rows (more when the required rows need it).

    Required rows: conv stem, depthwise conv, flatten linear, matmul, a conv + linear head per
    exit, final linear classifier. ``n_ops`` op rows; unless ``n_ops`` is 0, at least one of every
    category (so at least ``len(OP_CATEGORIES)``).
    """
    group_channels = rng.integers(1, 25, size=n_groups)
    b = _Builder(rng, group_channels)
    n_required = 4 + 2 * n_exits
    n_free = max(0, n_layers - n_required)
    # Backbone body: required kinds plus free rows drawn at random, shuffled; the exit cut
    # points split it into segments 0..K (segment s after exits 0..s-1).
    body = ["depthwise", "flatten", "matmul"]
    for _ in range(n_free):
        u = rng.random()
        body.append("depthwise" if u < depthwise_frac else "linear" if u < depthwise_frac + 0.15 else "conv")
    rng.shuffle(body)
    cuts = np.sort(rng.integers(0, len(body) + 1, size=n_exits))
    segment_of = np.searchsorted(cuts, np.arange(len(body)), side="right")
    heads_at_end = bool(rng.random() < 0.5)

    def head(k: int) -> None:
        b.conv(f"exits.{k}.conv", k, k)
        b.linear(f"exits.{k}.fc", k, k, out_group=-1)

    b.conv("stem.conv", 0, in_group=-1)
    placed = 0
    for i, kind in enumerate(body):
        while not heads_at_end and placed < n_exits and cuts[placed] <= i:
            head(placed)
            placed += 1
        seg = int(segment_of[i])
        if kind == "depthwise":
            b.depthwise(f"body.{i}.dw", seg)
        elif kind == "flatten":
            b.linear(f"body.{i}.flat_fc", seg, flatten=True)
        elif kind == "linear":
            b.linear(f"body.{i}.fc", seg)
        elif kind == "matmul":
            b.matmul(f"body.{i}.matmul", seg)
        else:
            b.conv(f"body.{i}.conv", seg)
    b.linear("classifier", n_exits, flatten=bool(rng.random() < 0.5), out_group=-1)
    while placed < n_exits:
        head(placed)
        placed += 1

    extra = rng.integers(len(OP_CATEGORIES), size=max(0, n_ops - len(OP_CATEGORIES)))
    categories = [] if n_ops == 0 else [*OP_CATEGORIES, *(OP_CATEGORIES[int(c)] for c in extra)]
    for j, category in enumerate(categories):
        exit_index = int(rng.integers(-1, n_exits)) if n_exits and rng.random() < 0.3 else -1
        segment = exit_index if exit_index >= 0 else int(rng.integers(0, n_exits + 1))
        b.op(f"op.{j}.{category}", category, segment, exit_index)

    return LayerTable.from_columns(
        model=f"random{n_layers}x{n_groups}x{n_exits}", input_shape=(3, 8, 8), layers=b.layers, ops=b.ops,
        group_channels=group_channels, group_labels=[f"g{g}" for g in range(n_groups)],
        exit_names=[f"exit{k}" for k in range(n_exits)], extra_params=int(rng.integers(0, 100)),
    )


def random_configs(
    rng: np.random.Generator, table: LayerTable, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` valid configurations: w_bits, a_bits int64[m, L]; kept int64[m, G]; exit_probs float64[m, K].

    Rows 0, 1 and 2 (when m allows) are the extremes: all 32 bits / everything kept / nobody leaves,
    all 1 bit / 1 channel per group, and exit probabilities summing exactly to 1 (multiples of 1/64,
    so the float sum is exact). Of the rest, a quarter have all-zero exit probabilities, a quarter sum
    exactly to 1, the others sum to less.
    """
    n_layers, n_groups, n_exits = table.num_layers, table.num_groups, table.num_exits
    w_bits = rng.integers(1, 33, size=(m, n_layers))
    a_bits = rng.integers(1, 33, size=(m, n_layers))
    kept = rng.integers(1, table.group_channels + 1, size=(m, n_groups)) if n_groups else np.zeros((m, 0), np.int64)
    exit_probs = rng.dirichlet(np.ones(n_exits + 1), size=m)[:, :n_exits] if n_exits else np.zeros((m, 0))
    kind = rng.integers(0, 4, size=m)
    exact = rng.multinomial(64, np.ones(n_exits + 1) / (n_exits + 1), size=m)[:, :n_exits] / 64.0
    exit_probs[kind == 0] = 0.0
    if n_exits:
        # Exactly 1: the remainder goes to the last exit, so nobody reaches the final segment.
        exact[:, -1] = 1.0 - exact[:, :-1].sum(axis=1)
        exit_probs[kind == 1] = exact[kind == 1]
    for row, (wb, ab, keep, prob) in enumerate(((32, 32, table.group_channels, 0.0), (1, 1, 1, 0.0),
                                                (None, None, None, "exact"))):
        if row >= m:
            break
        if wb is not None:
            w_bits[row], a_bits[row], kept[row], exit_probs[row] = wb, ab, keep, prob
        elif n_exits:
            exit_probs[row] = exact[row]
    return w_bits, a_bits, kept, exit_probs


def config_at(arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], m: int) -> Config:
    """The ``m``-th configuration of ``random_configs`` output as a :class:`Config`."""
    w_bits, a_bits, kept, exit_probs = arrays
    return Config(w_bits=w_bits[m], a_bits=a_bits[m], kept=kept[m], exit_probs=exit_probs[m])


@st.composite
def tables(draw: st.DrawFn, max_layers: int = 16, max_groups: int = 5, max_exits: int = 3) -> LayerTable:
    """Hypothesis strategy: a random table from a drawn seed and drawn sizes."""
    seed = draw(st.integers(0, 2**32 - 1))
    return random_table(np.random.default_rng(seed), n_layers=draw(st.integers(1, max_layers)),
                        n_ops=draw(st.integers(0, 12)), n_groups=draw(st.integers(0, max_groups)),
                        n_exits=draw(st.integers(0, max_exits)),
                        depthwise_frac=draw(st.floats(0.0, 0.5)))


@st.composite
def configs(draw: st.DrawFn, table: LayerTable) -> Config:
    """Hypothesis strategy: one valid configuration of ``table``, drawn element by element."""
    bits = st.integers(1, 32)
    w_bits = np.array(draw(st.lists(bits, min_size=table.num_layers, max_size=table.num_layers)), dtype=np.int64)
    a_bits = np.array(draw(st.lists(bits, min_size=table.num_layers, max_size=table.num_layers)), dtype=np.int64)
    kept = np.array([draw(st.integers(1, int(c))) for c in table.group_channels], dtype=np.int64)
    # Exit probabilities as multiples of 1/64 whose total is at most 1 (0 and exactly 1 included).
    parts = draw(st.lists(st.integers(0, 64), min_size=table.num_exits + 1, max_size=table.num_exits + 1))
    total = sum(parts) or 1
    sixty_fourths = [p * 64 // total for p in parts[:-1]]
    return Config(w_bits=w_bits, a_bits=a_bits, kept=kept,
                  exit_probs=np.array(sixty_fourths, dtype=np.float64) / 64.0)
