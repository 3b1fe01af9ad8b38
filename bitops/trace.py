"""Trace an ``nn.Module`` into a :class:`~bitops.table.LayerTable`.

The only bitops module (with :mod:`bitops.zoo`) that imports torch. Two tools do the work:

* **fvcore's JIT analysis** (``fvcore.nn.JitModelAnalysis``) walks the traced graph in execution
  order and calls one handle per op with the op's input/output values; our handles read shapes
  and the module scope and append a row. Ops with no handle that fvcore does not know to be free
  are reported as ``unsupported_ops``, never dropped silently.
* **torch-pruning's dependency graph** lists the channel groups that structured pruning couples
  (residual adds, depthwise convs); it is the library the trainer prunes with, so the count and
  the pruner cannot disagree. A group whose channels no layer consumes (a classifier's or an exit
  head's outputs) is never pruned and maps to group ``-1``.

Exit heads are the submodules of ``model.exits`` (an ``nn.ModuleDict`` in depth order, as the zoo
builds them); a backbone op belongs to segment ``s`` when ``s`` exit heads ran before it.
``torch.jit`` tracing is deprecated in recent torch; its warnings are silenced here, the one place
we trace, so the tracer can be replaced without touching callers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bitops.errors import InputError
from bitops.table import GROUPS_NOT_ANALYSED, LayerTable

__all__ = ["EXITS_ATTRIBUTE", "MEMORY_FRACTION", "attach_exits", "build_and_trace", "build_user", "channel_groups", "estimate_bytes",
           "start_channel_groups",
           "module_from_spec", "output_layers", "trace_model", "user_callable"]

EXITS_ATTRIBUTE = "exits"

# Non-MAC ops we list, by category. Shape/copy ops fvcore already knows to be free stay ignored.
_OP_CATEGORIES = {
    "aten::batch_norm": "bn",
    "aten::relu": "act", "aten::relu_": "act", "aten::hardtanh": "act", "aten::hardtanh_": "act",
    "aten::relu6": "act", "aten::sigmoid": "act", "aten::sigmoid_": "act", "aten::silu": "act", "aten::silu_": "act",
    "aten::hardswish": "act", "aten::hardswish_": "act", "aten::hardsigmoid": "act", "aten::gelu": "act",
    "aten::tanh": "act", "aten::leaky_relu": "act", "aten::leaky_relu_": "act", "aten::softmax": "act",
    "aten::clamp": "act", "aten::clamp_": "act", "aten::clamp_min": "act", "aten::exp": "act", "aten::pow": "act",
    "aten::rsub": "add", "aten::ne": "other", "aten::linalg_vector_norm": "pool",
    "aten::add": "add", "aten::add_": "add", "aten::sub": "add", "aten::mul": "add", "aten::mul_": "add",
    "aten::div": "add",
    "aten::adaptive_avg_pool2d": "pool", "aten::avg_pool2d": "pool", "aten::max_pool2d": "pool",
    "aten::adaptive_max_pool2d": "pool", "aten::mean": "pool",
    "aten::layer_norm": "other", "aten::group_norm": "other", "aten::instance_norm": "other",
    "aten::upsample_nearest2d": "other", "aten::upsample_bilinear2d": "other",
}
# Ops that are the identity in eval mode, where a count is taken: free, neither listed nor "not counted".
_FREE_OPS = ("aten::dropout", "aten::dropout_", "aten::feature_dropout", "aten::feature_dropout_",
             "aten::alpha_dropout", "aten::alpha_dropout_", "aten::feature_alpha_dropout",
             "aten::feature_alpha_dropout_")
# Ops that copy, fill or describe a tensor without arithmetic (padding, masks built once, shape queries).
_MOVEMENT_OPS = ("aten::unflatten", "aten::pad", "aten::clone", "aten::numel", "aten::zero_", "aten::fill_", "aten::expand_as")
_MAC_OPS = ("aten::_convolution", "aten::linear", "aten::addmm", "aten::matmul", "aten::mm", "aten::bmm", "aten::einsum")


def _shape(value: Any) -> list[int] | None:
    kind = value.type()
    if isinstance(kind, torch._C.TensorType):
        sizes = kind.sizes()
        return None if sizes is None else [int(s) for s in sizes]
    return None


def _prod(values: Sequence[int]) -> int:
    return math.prod(int(v) for v in values)


def output_layers(model: nn.Module, example: torch.Tensor | None = None) -> list[nn.Module]:
    """The Conv/Linear modules whose output channels no layer consumes: classifiers, exit-head outputs.

    The trainer passes these to torch-pruning as ``ignored_layers`` ("the classifier keeps its
    outputs"), and the trace maps their output groups to ``-1``. ``example`` defaults to one
    3x32x32 zero image (any size the model takes gives the same answer).
    """
    groups = channel_groups(model, torch.zeros(1, 3, 32, 32) if example is None else example)
    if groups.failure:
        raise InputError(f"channel groups: {groups.failure}")
    modules = dict(model.named_modules())
    return [modules[name] for name in groups.outputs]


# torch-pruning's analysis of one model may take at most this long (seconds) before the count goes
# on without channel groups; its memory is bounded by MEMORY_FRACTION of what the machine has free.
GROUP_SECONDS = 30.0


@dataclass
class GroupMap:
    """Channel-group assignments by module name, from torch-pruning's dependency graph.

    ``divisions[g]`` is how many equal parts torch-pruning prunes group ``g`` in (a grouped conv's
    or a GroupNorm's groups): it keeps whole channels per part. ``parts[g]`` is () for a group
    pruned on its own, and ((group, copies), ...) for a concatenation of groups (``torch.cat``
    along channels, which torch-pruning prunes through each part). ``ungrouped`` names the modules
    whose input or output channels cannot follow a group (a slice of a group's channels, a
    channel-multiplier depthwise conv) and why; ``failure`` says why there are no groups at all.
    """

    channels: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    divisions: list[int] = field(default_factory=list)
    out_group: dict[str, int] = field(default_factory=dict)
    in_group: dict[str, int] = field(default_factory=dict)
    ungrouped: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    failure: str | None = None
    parts: list[tuple[tuple[int, int], ...]] = field(default_factory=list)
    _concatenations: dict[tuple[tuple[int, int], ...], int] = field(default_factory=dict, repr=False)

    def add(self, channels: int, label: str, divisions: int = 1) -> int:
        """A new group pruned on its own; its index."""
        self.channels.append(channels)
        self.labels.append(label)
        self.divisions.append(divisions)
        self.parts.append(())
        return len(self.channels) - 1

    def concatenation(self, parts: Sequence[tuple[int, int]]) -> int:
        """The group of the channels of ``parts`` ((group, copies) pairs, in any order; concatenations
        among them are expanded) side by side, made once; a single group's index when all parts are
        copies of one group (its width is then a multiple of that group's)."""
        counts: dict[int, int] = {}
        for g, copies in parts:
            for part, inner in self.parts[g] or ((g, 1),):
                counts[part] = counts.get(part, 0) + copies * inner
        if len(counts) == 1:
            return next(iter(counts))
        key = tuple(sorted(counts.items()))
        if key not in self._concatenations:
            names = [self.labels[g] + (f" x{copies}" if copies > 1 else "") for g, copies in key]
            shown = ", ".join(names) if len(names) <= 3 else f"{names[0]}, ..., {names[-1]}: {len(names)} groups"
            g = self.add(sum(copies * self.channels[part] for part, copies in key), f"cat({shown})")
            self.parts[g] = key
            self._concatenations[key] = g
        return self._concatenations[key]


def channel_groups(model: nn.Module, example: torch.Tensor, *, seconds: float | None = None) -> GroupMap:
    """Map every prunable module's input/output channels onto a group index.

    torch-pruning runs in a forked child process, on a ``meta`` copy of the model where it can
    (no data, no arithmetic), bounded by ``seconds`` (default :data:`GROUP_SECONDS`), by a stall
    bound (no new group for :data:`STALL_FRACTION` of ``seconds`` once the first has come) and by
    :data:`MEMORY_FRACTION` of the free memory: some graphs (Swin's and MaxViT's window
    attention, ReXNet) make its analysis grow without end after a few groups. Whatever stops it
    (the bounds, an exception inside it) becomes ``failure``, never an error: the model is then
    counted without groups (unpruned). Models on an accelerator, or where ``fork`` does not exist,
    are analysed in this process, unbounded.
    """
    return start_channel_groups(model, example, seconds=seconds).result()


# Once torch-pruning has found a first group, the next may take at most this fraction of the time
# bound: the slowest gaps measured between groups of models it finishes are 0.4 s (DenseNet-201,
# ViT-H/14, 2 cores); the graphs it never finishes stall after 1-4 groups.
STALL_FRACTION = 1 / 6


def start_channel_groups(model: nn.Module, example: torch.Tensor, *, seconds: float | None = None) -> _Pending:
    """:func:`channel_groups`, started: the forked child works while the caller goes on (the trace
    runs meanwhile); ``result()`` waits for it, ``cancel()`` stops it. In-process analyses run in
    ``result()``."""
    import torch_pruning  # noqa: F401 - imported here, once, not in every forked child (~0.8 s)

    return _Pending(model, example, GROUP_SECONDS if seconds is None else seconds)


class _Pending:
    def __init__(self, model: nn.Module, example: torch.Tensor, seconds: float) -> None:
        import time

        self.model, self.example, self.seconds = model, example, seconds
        self.deadline = time.monotonic() + seconds
        self.child = _Forked(_child_members, (model, example, True)) if _can_fork(model, example) else None  # meta first

    def cancel(self) -> None:
        if self.child is not None:
            self.child.close()

    @contextlib.contextmanager
    def sharing_cores(self) -> Iterator[None]:
        """While the forked child analyses, this process computes on one torch thread fewer (it
        holds a core), and on all of them again once the child has finished (checked before each
        module's forward): torch's OpenMP workers spin at every parallel region whose other worker
        waits for the core the child holds, which on 2 cores made a ResNet-50 trace 1.9x slower,
        while one thread there costs it little at batch 1."""
        threads = torch.get_num_threads()
        if self.child is None or threads == 1 or self.child.finished():
            yield
            return
        handle = None

        def restore_when_finished(_module: nn.Module, _inputs: Any) -> None:
            if self.child is not None and self.child.finished():
                torch.set_num_threads(threads)
                handle.remove()

        torch.set_num_threads(threads - 1)
        handle = nn.modules.module.register_module_forward_pre_hook(restore_when_finished)
        try:
            yield
        finally:
            handle.remove()
            torch.set_num_threads(threads)

    def result(self) -> GroupMap:
        stall = self.seconds * STALL_FRACTION
        if self.child is None:
            items, ending = _collected(_child_members(self.model, self.example, False))
        else:
            items, ending = self.child.collect(self.deadline, stall)
        if ending is not None and ending.startswith("meta:"):  # meta tensors cannot run it: the model itself
            items, ending = _Forked(_child_members, (self.model, self.example, False)).collect(self.deadline, stall)
        if ending == _TIMED_OUT:
            return GroupMap(failure=f"torch-pruning's analysis took longer than {self.seconds:g} s")
        if ending == _STALLED:
            return GroupMap(failure=f"torch-pruning's analysis stalled after {len(items)} channel group"
                                    f"{'s' if len(items) != 1 else ''} (none more in {stall:.3g} s; window attention "
                                    "and similar graphs make it grow without end)")
        if ending is not None:
            return GroupMap(failure=ending)
        groups = [value for kind, value in items if kind == "group"]
        return _group_map(self.model, groups, [name for kind, value in items if kind == "outputs" for name in value])


_TIMED_OUT, _STALLED, _COMPLETE = "timed out", "stalled", "complete"


class _NotAnalysed:
    """The pending analysis of a trace that was asked for no channel groups: no child, no
    torch-pruning import; its result marks every conv and linear as ungrouped with
    :data:`bitops.table.GROUPS_NOT_ANALYSED`, so pruning such a table is refused, never silent."""

    def cancel(self) -> None:
        pass

    def sharing_cores(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def result(self) -> GroupMap:
        return GroupMap(failure=GROUPS_NOT_ANALYSED)


def _collected(items: Iterator[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], str | None]:
    """(the items before any ("error", why), that why or None), in this process."""
    found = []
    for kind, value in items:
        if kind == "error":
            return found, value
        found.append((kind, value))
    return found, None


def _can_fork(model: nn.Module, example: torch.Tensor) -> bool:
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    tensors = [example, *model.parameters(), *model.buffers()]
    return all(t.device.type in ("cpu", "meta") for t in tensors)


_OUT_OF_MEMORY = "torch-pruning's analysis needed more than half of the free memory"


def _child_members(model: nn.Module, example: torch.Tensor, on_meta: bool) -> Iterator[tuple[str, Any]]:
    """:func:`_dependency_members`' items, then ("error", why) if it failed; on meta tensors, why
    starts with "meta:" (an op without a meta kernel: try the model itself)."""
    try:
        if on_meta:
            model, example = model.to("meta"), example.to("meta")
            _shape_only_batch_norm()
        yield from _dependency_members(model, example)
    except MemoryError:
        yield "error", _OUT_OF_MEMORY
    except Exception as err:  # noqa: BLE001 - torch-pruning's own failures, e.g. on a channel shuffle
        yield "error", f"meta: {_first_line(err)}" if on_meta else f"torch-pruning failed ({_first_line(err)})"


_CHILD_KERNELS: list[Any] = []  # a kernel lives as long as its library object


def _shape_only_batch_norm() -> None:
    """Register, in this (forked, disposable) child, a meta kernel for ``aten::native_batch_norm``
    that only makes the output shapes: torch's own is a Python decomposition doing the arithmetic
    on meta tensors op by op, half of a ResNet-50 analysis. Autograd records the same
    ``NativeBatchNormBackward`` node either way, which is all torch-pruning reads. Where it cannot
    be registered, torch's kernel stays (right, only slower)."""
    def batch_norm(input: torch.Tensor, *_args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        channels = input.shape[1] if input.dim() > 1 else 0
        return torch.empty_like(input), input.new_empty((channels,)), input.new_empty((channels,))

    if _CHILD_KERNELS:
        return
    try:
        library = torch.library.Library("aten", "IMPL")  # an override, in this child only
        library.impl("native_batch_norm", batch_norm, "Meta")
    except Exception:  # noqa: BLE001 - a torch without this registration path
        return
    _CHILD_KERNELS.append(library)


class _Forked:
    """The items of ``function(*args)`` (a generator) made in a forked child, started on
    construction, with its address space capped at what it has now plus :data:`MEMORY_FRACTION`
    of the free memory; they come through a pipe as they are made."""

    def __init__(self, function: Callable[..., Iterator[tuple[str, Any]]], args: tuple[Any, ...]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self.items: list[tuple[str, Any]] = []
        self.ending: str | None = None  # _COMPLETE, or why it ended early, once the child has said so
        self.receive, send = context.Pipe(duplex=False)
        extra = int(MEMORY_FRACTION * _available_bytes())
        self.process = context.Process(target=_forked_main, args=(function, args, send, extra), daemon=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running: the child only analyses
            self.process.start()
        send.close()

    def finished(self) -> bool:
        """Whether the child has said all it will say; reads what has come so far without waiting
        (which also keeps a long answer from filling the pipe and blocking the child)."""
        while self.ending is None and not self.receive.closed and self.receive.poll(0):
            self._receive_one()
        return self.ending is not None

    def _receive_one(self) -> None:
        try:
            kind, value = self.receive.recv()
        except EOFError:
            self.process.join(5)
            self.ending = f"torch-pruning's analysis died (exit code {self.process.exitcode})"
            return
        if kind == "done":
            self.ending = _COMPLETE
        elif kind == "error":
            self.ending = value
        else:
            self.items.append((kind, value))

    def collect(self, deadline: float, stall: float) -> tuple[list[tuple[str, Any]], str | None]:
        """(the items received, how it ended: None when complete, :data:`_TIMED_OUT` past the
        ``deadline`` (``time.monotonic()``), :data:`_STALLED` when no item came for ``stall``
        seconds after the first, or the child's ("error", why)). The child is gone afterwards."""
        import time

        try:
            while self.ending is None:
                left = deadline - time.monotonic()
                wait = min(left, stall) if self.items else left
                if wait <= 0 or not self.receive.poll(wait):
                    return self.items, _TIMED_OUT if wait == left or left <= 0 else _STALLED
                self._receive_one()
            return self.items, None if self.ending == _COMPLETE else self.ending
        finally:
            self.close()

    def close(self) -> None:
        self.receive.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def _forked_main(function: Callable[..., Iterator[tuple[str, Any]]], args: tuple[Any, ...], send: Any,
                 extra_bytes: int) -> None:
    import resource

    # One thread: a parallel region would wait forever on the OpenMP workers of the parent that
    # fork did not copy (a model analysed on real tensors after the parent traced one hung so).
    torch.set_num_threads(1)
    size = _address_space_size()
    if size is not None:  # no /proc: the time bound still holds
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + extra_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        for item in function(*args):
            send.send(item)
            if item[0] == "error":
                break
        else:
            send.send(("done", None))
    except MemoryError:  # raised outside the function's own handlers
        send.send(("error", _OUT_OF_MEMORY))
    send.close()


def _dependency_members(model: nn.Module, example: torch.Tensor) -> Iterator[tuple[str, Any]]:
    """torch-pruning's coupled groups, one at a time as it finds them, as plain data sent between
    processes: ("group", [(module name, prunes-output?, channel parts, width), ...]), or
    ("outputs", [names]) for a group no layer consumes (the output layers)."""
    import torch_pruning as tp

    with torch.enable_grad():  # its graph is autograd's: a caller's no_grad would leave it empty
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = graph._module2name
    modules = dict(model.named_modules())
    for group in graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]):
        members = []
        for item in group:
            dep = item.dep
            module = dep.target.module
            if module not in names:
                continue
            is_out = bool(graph.is_out_channel_pruning_fn(dep.handler))
            members.append((names[module], is_out, _channel_parts(graph, module, is_out), len(item.idxs)))
        if not any(not is_out for _, is_out, _, _ in members):
            yield "outputs", [name for name, is_out, _, _ in members
                              if is_out and isinstance(modules.get(name), (nn.Conv2d, nn.Linear))]
        else:
            yield "group", members


def _channel_parts(graph: Any, module: nn.Module, is_out: bool) -> int:
    """How many parts torch-pruning's pruner splits this member's channels into (``BasePruner``'s
    in/out channel groups: a grouped conv's groups, a GroupNorm's groups; depthwise convs: 1)."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
        return 1
    pruner = graph.get_pruner_of_module(module)
    if pruner is None:
        return 1
    parts = pruner.get_out_channel_groups(module) if is_out else pruner.get_in_channel_groups(module)
    return int(parts) if isinstance(parts, int) and parts > 1 else 1


def _group_map(model: nn.Module, groups: list[list[tuple[str, bool, int, int]]], outputs: list[str]) -> GroupMap:
    modules = dict(model.named_modules())
    gm = GroupMap(outputs=outputs)
    # module -> side (prunes its output?) -> [(group, width)]: more than one group on a side is a concatenation
    sides: dict[str, dict[bool, list[tuple[int, int]]]] = {}
    for members in groups:
        root_name, _, _, root_width = members[0]
        g = gm.add(root_width, root_name, max(parts for _, _, parts, _ in members))
        for name, is_out, _, width in members:
            sides.setdefault(name, {}).setdefault(is_out, []).append((g, width))
    for name, by_side in sides.items():
        module = modules.get(name)
        depthwise = _is_depthwise(module)
        for is_out, entries in by_side.items():
            if len({g for g, _ in entries}) == 1:
                group = entries[0][0]
            elif is_out and not depthwise and isinstance(module, (nn.Conv2d, nn.Linear)):
                labels = ", ".join(gm.labels[g] for g in dict.fromkeys(g for g, _ in entries))
                gm.ungrouped[name] = f"its output channels are split between channel groups ({labels})"
                continue
            elif all(width % gm.channels[g] == 0 for g, width in entries):
                group = gm.concatenation([(g, width // gm.channels[g]) for g, width in entries])
            else:
                g, width = next((g, width) for g, width in entries if width % gm.channels[g])
                gm.ungrouped[name] = f"it takes {width} of the {gm.channels[g]} channels of group {gm.labels[g]}"
                continue
            (gm.out_group if is_out else gm.in_group)[name] = group
            if depthwise:
                gm.out_group[name] = gm.in_group[name] = group
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1 and not _is_depthwise(module):
            gm.ungrouped[name] = "a depthwise conv with a channel multiplier"
    for name in gm.ungrouped:
        gm.in_group[name] = -1
    return gm


def _einsum_macs(inputs: list[Any]) -> tuple[int, int]:
    """(MACs, reduction length) of ``einsum(equation, operands)``: one multiply-add per point of the
    space of all its indices (two operands: exactly the contraction; more: the naive order), summed
    over the indices missing from the output."""
    equation = str(inputs[0].toIValue()).replace(" ", "")
    operands = list(inputs[1].node().inputs()) if inputs[1].node().kind() == "prim::ListConstruct" else []
    shapes = [_shape(v) for v in operands]
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if not operands or len(terms) != len(shapes) or any(s is None for s in shapes):
        raise InputError(f"einsum {equation!r}: its operand shapes are not known to the trace")
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if "..." in term:
            head, _, tail = term.partition("...")
            broadcast = len(shape) - len(head) - len(tail)
            term = head + "".join(chr(0x100 + k) for k in range(broadcast)) + tail
            shape = shape[:len(head)] + shape[len(head):len(head) + broadcast] + shape[len(shape) - len(tail):]
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(size))
    if "->" not in equation:  # implicit output: the indices that appear once, in order
        rhs = "".join(sorted(k for k in sizes if lhs.count(k) == 1))
    kept = set(rhs.replace("...", "")) | {k for k in sizes if ord(k) >= 0x100}
    reduction = _prod(size for letter, size in sizes.items() if letter not in kept)
    return _prod(sizes.values()), max(reduction, 1)


def _matmul(unit: int, reduction: int) -> dict[str, Any]:
    """A product of two activations: no weights of its own, no channel groups (a fixed cost of
    ``unit`` outputs, each a sum over ``reduction`` products)."""
    return dict(kind="matmul", macs_unit=unit, in_ch=reduction, out_ch=1, groups=1, taps=1, kernel_h=1, kernel_w=1,
                out_h=1, out_w=1, in_group=-1, out_group=-1, has_weight=False, has_bias=False, depthwise=False)


def _moved_axis(node: Any, axis: int | None, before: list[int] | None, after: list[int] | None) -> int | None:
    """Where channel axis ``axis`` of ``before`` is in ``after``, the result of the free op ``node``."""
    if axis is None or before is None or after is None:
        return None
    kind = node.kind()
    if kind == "aten::permute":
        dims = [d % len(before) for d in _int_list(node.inputsAt(1)) or ()]
        return dims.index(axis) if axis in dims else None
    if kind == "aten::transpose":
        pair = _int_list(list(node.inputs())[1:3])
        if pair is None:
            return None
        a, b = (v % len(before) for v in pair)
        return b if axis == a else a if axis == b else axis
    if before == after:
        return axis
    if axis == len(before) - 1 and after and after[-1] == before[-1]:
        return len(after) - 1  # a reshape that keeps the last axis (tokens flattened, channels last)
    if axis < len(after) and after[axis] == before[axis] and _prod(before[:axis]) == _prod(after[:axis]):
        return axis  # a reshape of the axes after it (flatten(1) of an N x C x 1 x 1 map)
    return None


def _int_list(value: Any) -> list[int] | None:
    """The constant integers of a graph value (an int list, or a list of int values), else None."""
    values = value if isinstance(value, list) else None
    if values is None:
        constant = value.toIValue()
        if isinstance(constant, (list, tuple)):
            return [int(v) for v in constant]
        if value.node().kind() != "prim::ListConstruct":
            return None
        values = list(value.node().inputs())
    ints = [v.toIValue() for v in values]
    return [int(v) for v in ints] if all(isinstance(v, int) for v in ints) else None


def _is_depthwise(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


class _Recorder:
    """fvcore op handles that append table rows in execution order."""

    def __init__(self, model: nn.Module, exit_names: Sequence[str]) -> None:
        self.modules = dict(model.named_modules())
        self.groups = GroupMap()  # known after the trace: resolve()
        self.exit_index = {name: k for k, name in enumerate(exit_names)}
        self.layers: dict[str, list[Any]] = {c: [] for c in (
            "name", "kind", "macs_unit", "in_ch", "out_ch", "groups", "taps", "kernel_h", "kernel_w", "out_h", "out_w",
            "in_group", "out_group", "segment", "exit_index", "has_weight", "has_bias", "depthwise")}
        self.ops: dict[str, list[Any]] = {c: [] for c in (
            "name", "kind", "category", "elements", "channels", "group", "params", "segment", "exit_index")}
        # value -> (the row that made it: ("L", layer) or ("O", op), its channel axis); groups come later
        self.value_group: dict[str, tuple[tuple[str, Any] | None, int | None]] = {}
        self.layer_source: list[tuple[str | None, str, bool]] = []  # (module scope of its groups, name, depthwise)
        self.layer_input: list[tuple[str, Any] | None] = []  # what made each MAC row's input, where the trace follows it
        self.op_source: list[tuple[tuple[str, Any] | None, str, int]] = []  # (what its group follows, name, channels)
        self.owned: set[int] = set()  # ids of the parameters some row stores
        self.ungrouped: dict[str, str] = {}
        self.row_names: Counter[str] = Counter()
        self.segment = 0
        self.heads_seen = -1

    # ---- helpers ------------------------------------------------------------------------------
    def _scope(self, outputs: list[Any]) -> str:
        return outputs[0].node().scopeName().split("/")[-1]

    def _place(self, scope: str) -> tuple[int, int]:
        """(segment, exit index) of an op in ``scope``; advances the segment past each exit head."""
        parts = scope.split(".")
        if len(parts) >= 2 and parts[0] == EXITS_ATTRIBUTE and parts[1] in self.exit_index:
            k = self.exit_index[parts[1]]
            if k < self.heads_seen:
                raise InputError(f"exit head {parts[1]!r} ran after a deeper exit head; exit heads must run in depth order")
            self.heads_seen = max(self.heads_seen, k)
            return k, k
        if self.heads_seen >= 0:
            self.segment = max(self.segment, self.heads_seen + 1)
        return self.segment, -1

    def _unique(self, name: str) -> str:
        self.row_names[name] += 1
        return name if self.row_names[name] == 1 else f"{name}#{self.row_names[name]}"

    def _input_group(self, value: Any) -> tuple[tuple[str, Any] | None, int | None]:
        """(source, channel axis) of a tensor value: the row that made it and its channel axis,
        followed through free ops (view, flatten, permute, transpose); None where a reshape loses it."""
        path = []
        origin: Any = None
        while value.debugName() not in self.value_group and len(path) < 64:
            node = value.node()
            if node.kind() == "aten::cat":
                origin, axis = self._concatenated(node)
                break
            tensors = [v for v in node.inputs() if _shape(v) is not None]
            if not tensors:
                return None, None
            path.append((node, tensors[0], value))
            value = tensors[0]
        else:
            origin, axis = self.value_group.get(value.debugName(), (None, None))
        for node, source, result in reversed(path):
            axis = _moved_axis(node, axis, _shape(source), _shape(result))
        return (origin, axis) if axis is not None else (None, None)

    def _concatenated(self, node: Any) -> tuple[tuple[str, Any] | None, int | None]:
        """(source, channel axis) of ``torch.cat``'s output: ("C", ((source, width), ...)) when it
        joins tensors along their channel axis, (None, None) otherwise."""
        listed, dim = node.inputsAt(0).node(), node.inputsAt(1).toIValue()
        shape = _shape(node.output())
        if listed.kind() != "prim::ListConstruct" or shape is None or not isinstance(dim, int):
            return None, None
        axis = dim % len(shape)
        parts = []
        for value in listed.inputs():
            origin, part_axis = self._input_group(value)
            part_shape = _shape(value)
            if origin is None or part_axis != axis or part_shape is None:
                return None, None
            parts.append((origin, int(part_shape[axis])))
        return ("C", tuple(parts)), axis

    def _claim(self, tensor: Any) -> bool:
        """Whether this row stores ``tensor``: only the first row that uses a parameter owns it."""
        if not isinstance(tensor, torch.Tensor) or id(tensor) in self.owned:
            return False
        self.owned.add(id(tensor))
        return True

    def _claim_params(self, module: nn.Module | None) -> tuple[bool, bool]:
        """(weight, bias) counted by this row: only the first call of a module owns its parameters."""
        if module is None:
            return False, False
        return self._claim(getattr(module, "weight", None)), self._claim(getattr(module, "bias", None))

    def _claim_functional(self, scope: str, weight: list[int] | None, bias: list[int] | None) -> tuple[bool, bool]:
        """(weight, bias) of a functional linear (``F.linear(x, self.in_proj_weight)``, as attention
        modules call it): the unclaimed parameters of its module scope with those shapes."""
        owner = self.modules.get(scope)
        if owner is None:
            return False, False
        found = []
        for shape in (weight, bias):
            param = None if shape is None else next(
                (p for p in owner.parameters() if id(p) not in self.owned and list(p.shape) == shape), None)
            found.append(self._claim(param))
        return found[0], found[1]

    def _checked(self, name: str, width: int, group: int, side: str) -> int:
        """``group``, or -1 (and ``name`` listed as ungrouped) when ``width`` channels are not a
        whole multiple of the group's: the row cannot follow that group's pruning."""
        if group < 0 or width % self.groups.channels[group] == 0:
            return group
        self.ungrouped.setdefault(name, f"its {width} {side} channels are not a multiple of channel group "
                                        f"{self.groups.labels[group]}'s {self.groups.channels[group]}")
        return -1

    # ---- MAC ops ------------------------------------------------------------------------------
    def mac(self, kind: str) -> Callable[[list[Any], list[Any]], int]:
        def handle(inputs: list[Any], outputs: list[Any]) -> int:
            scope = self._scope(outputs)
            module = self.modules.get(scope)
            out_shape = _shape(outputs[0]) or [1]
            if kind == "aten::_convolution":
                row = self._conv_row(inputs, out_shape, scope, module)
            elif kind == "aten::linear" or kind == "aten::addmm":
                row = self._linear_row(inputs, kind, out_shape, scope, module)
            else:
                row = self._matmul_row(inputs, outputs, kind)
            name = scope if row.pop("owns_module") else f"{scope}.{kind.split('::')[1]}".lstrip(".")
            source = inputs[1] if kind == "aten::addmm" else inputs[0]
            origin, axis = self._input_group(source) if kind in ("aten::_convolution", "aten::linear", "aten::addmm") \
                else (None, None)
            channel_axis = 1 if kind == "aten::_convolution" else len(_shape(source) or [0]) - 1
            self.layer_input.append(origin if axis == channel_axis else None)
            macs = self._append(scope, name, row)
            self.value_group[outputs[0].debugName()] = (("L", len(self.layers["name"]) - 1),
                                                        1 if kind == "aten::_convolution" else len(out_shape) - 1)
            return macs

        return handle

    def _append(self, scope: str, name: str, row: dict[str, Any]) -> int:
        """Add a MAC row (its groups come in :meth:`resolve`); its MACs."""
        segment, exit_index = self._place(scope)
        row.update(name=self._unique(name), segment=segment, exit_index=exit_index, in_group=-1, out_group=-1)
        self.layer_source.append((row.pop("group_scope", None), scope or name, bool(row["depthwise"])))
        for col, value in row.items():
            self.layers[col].append(value)
        return row["macs_unit"] * row["out_ch"] * (1 if row["depthwise"] else row["in_ch"] // row["groups"])

    def attention(self, inputs: list[Any], outputs: list[Any]) -> int:
        """``scaled_dot_product_attention(q, k, v, ...)``: two activation x activation products,
        Q K^T (L x S per head, over the head width E) and softmax(.) V (L x Ev, over S), by formula."""
        scope = self._scope(outputs)
        q, k, v = (_shape(value) for value in inputs[:3])
        batch, length, width = _prod(q[:-2]), int(q[-2]), int(q[-1])
        keys, value_width = int(k[-2]), int(v[-1])
        macs = 0
        for part, unit, reduction in (("qk", batch * length * keys, width), ("av", batch * length * value_width, keys)):
            self.layer_input.append(None)
            macs += self._append(scope, f"{scope}.attention.{part}".lstrip("."), _matmul(unit, reduction))
        segment, exit_index = self._place(scope)
        name = self._unique(f"{scope}.attention.softmax".lstrip("."))
        self.op_source.append((None, name, 1))
        for col, value in zip(self.ops, (name, "softmax", "act", batch * length * keys, 1, -1, 0, segment, exit_index)):
            self.ops[col].append(value)
        self.value_group[outputs[0].debugName()] = (None, None)
        return macs

    def _conv_row(self, inputs: list[Any], out_shape: list[int], scope: str, module: nn.Module | None) -> dict[str, Any]:
        x_shape, w_shape = _shape(inputs[0]), _shape(inputs[1])
        transposed = bool(inputs[6].toIValue())
        groups = int(inputs[8].toIValue())
        kernel = w_shape[2:]
        taps = _prod(kernel)
        in_ch, out_ch = x_shape[1], out_shape[1]
        spatial = x_shape[2:] if transposed else out_shape[2:]
        owns = isinstance(module, nn.modules.conv._ConvNd)
        has_weight, has_bias = self._claim_params(module) if owns else (False, False)
        depthwise = groups > 1 and groups == in_ch == out_ch
        return dict(kind="conv", macs_unit=_prod(spatial) * taps, in_ch=in_ch, out_ch=out_ch, groups=groups, taps=taps,
                    kernel_h=int(kernel[0]) if kernel else 1, kernel_w=_prod(kernel[1:]) if len(kernel) > 1 else 1,
                    out_h=int(out_shape[2]) if len(out_shape) > 2 else 1, out_w=_prod(out_shape[3:]) if len(out_shape) > 3 else 1,
                    group_scope=scope if owns else None, has_weight=has_weight, has_bias=has_bias,
                    depthwise=depthwise, owns_module=owns)

    def _linear_row(self, inputs: list[Any], kind: str, out_shape: list[int], scope: str,
                    module: nn.Module | None) -> dict[str, Any]:
        x_shape = _shape(inputs[1] if kind == "aten::addmm" else inputs[0])
        in_ch, out_ch = int(x_shape[-1]), int(out_shape[-1])
        owns = isinstance(module, nn.Linear)
        if owns:
            has_weight, has_bias = self._claim_params(module)
        else:  # a functional linear inside its module (attention projections)
            weight = _shape(inputs[2] if kind == "aten::addmm" else inputs[1])
            if kind == "aten::addmm" and weight is not None:
                weight = weight[::-1]  # addmm(bias, x, W^T)
            bias = _shape(inputs[0] if kind == "aten::addmm" else inputs[2]) if len(inputs) > 2 else None
            has_weight, has_bias = self._claim_functional(scope, weight, bias)
        return dict(kind="linear", macs_unit=_prod(x_shape[:-1]), in_ch=in_ch, out_ch=out_ch, groups=1, taps=1,
                    kernel_h=1, kernel_w=1, out_h=1, out_w=1, group_scope=scope if owns else None,
                    has_weight=has_weight, has_bias=has_bias, depthwise=False, owns_module=owns)

    def _matmul_row(self, inputs: list[Any], outputs: list[Any], kind: str) -> dict[str, Any]:
        if kind == "aten::einsum":
            macs, reduction = _einsum_macs(inputs)
        else:
            a_shape, out_shape = _shape(inputs[0]), _shape(outputs[0])
            reduction = int(a_shape[-1])
            macs = _prod(out_shape) * reduction
        return {**_matmul(max(macs // reduction, 1), reduction), "owns_module": False}

    def resolve(self, groups: GroupMap) -> None:
        """Give every row its channel groups, once torch-pruning's analysis is in: MAC rows by their
        module, op rows by the row their input came from (or their BatchNorm module); a row whose
        width is not a whole multiple of its group's gets none and is listed as ungrouped."""
        self.groups, self.ungrouped = groups, dict(groups.ungrouped)
        lay, ops = self.layers, self.ops
        assert len(self.layer_source) == len(self.layer_input) == len(lay["name"]) and len(self.op_source) == len(ops["name"])
        self.op_resolved: set[int] = set()
        for i, (scope, name, depthwise) in enumerate(self.layer_source):
            in_group, out_group = self._module_groups(scope, depthwise)
            in_group = self._checked(name, lay["in_ch"][i], in_group, "input")
            out_group = self._checked(name, lay["out_ch"][i], out_group, "output")
            if depthwise and in_group != out_group:
                in_group = out_group = -1
            followed = self._origin_group(self.layer_input[i])
            if in_group >= 0 and followed >= 0 and followed != in_group:
                # torch-pruning's group for the input is not that of the channels the trace saw arrive
                self.ungrouped.setdefault(name, f"torch-pruning puts its input in channel group {self.groups.labels[in_group]}, "
                                                f"the traced data flow in {self.groups.labels[followed]}")
                in_group = -1
            lay["in_group"][i], lay["out_group"][i] = in_group, out_group
        for j in range(len(self.op_source)):
            self._op_group(j)

    def _op_group(self, j: int) -> int:
        """Op row ``j``'s group, resolved once (a MAC row's input may need it before its turn)."""
        if j not in self.op_resolved:
            origin, name, channels = self.op_source[j]
            self.ops["group"][j] = self._checked(name, channels, self._origin_group(origin), "")
            self.op_resolved.add(j)
        return int(self.ops["group"][j])

    def _origin_group(self, origin: tuple[str, Any] | None) -> int:
        """The group of a value made by ``origin``: a MAC row ("L"), an op row ("O"), a BatchNorm
        module ("B") or a concatenation ("C") of such values; -1 when it follows none."""
        if origin is None:
            return -1
        kind, key = origin
        if kind == "L":
            return int(self.layers["out_group"][key])
        if kind == "O":
            return self._op_group(key)
        if kind == "B":
            return self.groups.out_group.get(key, -1)
        parts = []
        for part, width in key:
            group = self._origin_group(part)
            if group < 0 or width % self.groups.channels[group]:
                return -1
            parts.append((group, width // self.groups.channels[group]))
        return self.groups.concatenation(parts)

    def _module_groups(self, scope: str | None, depthwise: bool) -> tuple[int, int]:
        if scope is None:
            return -1, -1
        in_group = self.groups.in_group.get(scope, -1)
        out_group = self.groups.out_group.get(scope, -1)
        if depthwise:
            group = out_group if out_group >= 0 else in_group
            return group, group
        return in_group, out_group

    # ---- other ops ----------------------------------------------------------------------------
    def other(self, kind: str) -> Callable[[list[Any], list[Any]], int]:
        category = _OP_CATEGORIES[kind]

        def handle(inputs: list[Any], outputs: list[Any]) -> int:
            scope = self._scope(outputs)
            module = self.modules.get(scope)
            out_shape = _shape(outputs[0]) or [1]
            tensor_inputs = [v for v in inputs if _shape(v)]
            in_shape = _shape(tensor_inputs[0]) if tensor_inputs else out_shape
            counted_shape = in_shape if category == "pool" else out_shape  # a pool adds every input element
            origin, axis = self._input_group(tensor_inputs[0]) if tensor_inputs else (None, None)
            if kind == "aten::layer_norm" or axis is None or axis >= len(out_shape):
                # layer_norm normalises the last axis (channels-last); token-major tensors keep channels last
                axis = len(out_shape) - 1 if kind == "aten::layer_norm" or len(out_shape) == 3 else min(1, len(out_shape) - 1)
            if category == "bn" and isinstance(module, nn.modules.batchnorm._BatchNorm):
                origin, axis = ("B", scope), 1
            channels = int(out_shape[axis]) if len(out_shape) >= 2 else 1
            params = self._op_params(module, channels) if category in ("bn", "other") else 0
            segment, exit_index = self._place(scope)
            name = self._unique(f"{scope}.{kind.split('::')[1]}" if scope else kind.split("::")[1])
            elements = _prod(counted_shape)
            if elements % channels:
                channels, origin = 1, None
            self.op_source.append((origin, name, channels))
            for col, value in zip(self.ops, (name, kind.split("::")[1], category, elements, channels, -1, params,
                                             segment, exit_index)):
                self.ops[col].append(value)
            self.value_group[outputs[0].debugName()] = (("O", len(self.ops["name"]) - 1), axis)
            return elements

        return handle

    def _op_params(self, module: nn.Module | None, channels: int) -> int:
        """Parameters of a normalisation module, if they are per-channel; others stay in extra_params."""
        own = [p for p in module.parameters(recurse=False) if id(p) not in self.owned] if module is not None else []
        count = sum(p.numel() for p in own)
        if count == 0 or count % channels:
            return 0
        self.owned.update(id(p) for p in own)
        return count


# Modules with a fused inference kernel that bypasses the ops a trace counts, taken when no
# gradient is needed.
_FUSED_MODULES = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def trace_model(model: nn.Module, input_shape: Sequence[int], *, name: str = "model",
                provenance: dict[str, Any] | None = None, group_seconds: float | None = None,
                groups: bool = True) -> LayerTable:
    """Trace ``model`` on one zero input of ``input_shape`` (C, H, W, no batch) into a LayerTable;
    ``groups=False`` leaves torch-pruning's channel-group analysis out (a table that cannot be
    pruned: every conv and linear is ungrouped with :data:`bitops.table.GROUPS_NOT_ANALYSED`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import touches the deprecated torch.jit.script
        from fvcore.nn.jit_analysis import JitModelAnalysis

    modes = {module: module.training for module in model.modules()}  # mixed modes (a frozen backbone) survive
    # Parameters that need gradients keep nn.MultiheadAttention and nn.TransformerEncoderLayer off
    # their fused inference kernels, so attention is traced as the projections and products it is.
    # A model without them is traced without gradients: no autograd graph, a faster pass.
    fused = any(isinstance(m, _FUSED_MODULES) for m in model.modules())
    frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()] if fused else []
    model.eval()
    try:
        for param in frozen:
            param.requires_grad_(True)
        with torch.set_grad_enabled(fused):
            return _trace_eval_model(model, tuple(input_shape), name, provenance, JitModelAnalysis, group_seconds,
                                     groups)
    finally:
        for module, training in modes.items():
            module.training = training
        for param in frozen:
            param.requires_grad_(False)


def _trace_eval_model(model: nn.Module, input_shape: tuple[int, ...], name: str, provenance: dict[str, Any] | None,
                      analysis_type: type, group_seconds: float | None = None, groups: bool = True) -> LayerTable:
    first_param = next(model.parameters(), None)
    example = torch.zeros(1, *input_shape) if first_param is None else \
        torch.zeros(1, *input_shape, dtype=first_param.dtype, device=first_param.device)
    exits = getattr(model, EXITS_ATTRIBUTE, None)
    exit_names = list(exits.keys()) if isinstance(exits, nn.ModuleDict) else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pending: _Pending | _NotAnalysed = start_channel_groups(model, example, seconds=group_seconds) if groups \
            else _NotAnalysed()  # works while we trace
        _step(f"{name}: tracing")
        recorder = _Recorder(model, exit_names)
        analysis = analysis_type(model, (example,))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        analysis.set_op_handle(**{k: recorder.mac(k) for k in _MAC_OPS})
        analysis.set_op_handle(**{k: recorder.other(k) for k in _OP_CATEGORIES})
        analysis.set_op_handle(**{k: None for k in (*_FREE_OPS, *_MOVEMENT_OPS)})
        analysis.set_op_handle("aten::scaled_dot_product_attention", recorder.attention)
        try:
            with pending.sharing_cores():
                analysis.total()
        except InputError:
            pending.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - the model's forward, or the tracer, at this input
            pending.cancel()
            if _allocation_failed(err):
                raise _OutOfMemory(f"MODEL: {name}: tracing at input {','.join(map(str, input_shape))} ran out of "
                                   f"memory ({_first_line(err)})") from None
            raise InputError(f"MODEL: {name}: tracing at input {','.join(map(str, input_shape))} failed "
                             f"({_first_line(err)})") from None
        unsupported = dict(analysis.unsupported_ops())
        uncalled = set(analysis.uncalled_modules())
        if groups:
            _step(f"{name}: channel groups (torch-pruning)")
        group_map = pending.result()
        recorder.resolve(group_map)

    owned = sum(p.numel() for p in model.parameters() if id(p) in recorder.owned)
    total = sum(p.numel() for p in model.parameters())
    unused = _unused_modules(model, uncalled, recorder.owned)
    ungrouped = dict(recorder.ungrouped)
    if group_map.failure:
        ungrouped.update((n, group_map.failure) for n, m in model.named_modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in uncalled)
    return LayerTable.from_columns(
        model=name, input_shape=input_shape, layers=recorder.layers, ops=recorder.ops,
        group_channels=group_map.channels, group_labels=group_map.labels, group_divisions=group_map.divisions,
        group_parts=group_map.parts,
        exit_names=exit_names, extra_params=total - owned - sum(unused.values()), unused=unused,
        ungrouped=ungrouped, unsupported_ops=unsupported,
        provenance={"traced_with": f"torch {torch.__version__}, fvcore JitModelAnalysis"
                                   + (", torch-pruning DependencyGraph" if groups else ""),
                    **(provenance or {})},
    )


def _unused_modules(model: nn.Module, uncalled: set[str], owned: set[int]) -> dict[str, int]:
    """{name: parameters} of the outermost modules that never ran in the traced pass and hold
    parameters no row stores (GoogLeNet's auxiliary classifiers in eval mode, say)."""
    unused = {}
    for name, module in model.named_modules():
        if name not in uncalled or name.rpartition(".")[0] in uncalled and "." in name:
            continue
        count = sum(p.numel() for p in module.parameters() if id(p) not in owned)
        if count:
            unused[name] = count
    return unused


def module_from_spec(spec: str, num_classes: int | None, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build ``torchvision:NAME`` or ``timm:NAME`` (random weights, nothing downloaded),
    ``module.path:callable`` or ``path/to/file.py:callable``, passing ``kwargs`` to the builder."""
    prefix, _, attr = spec.rpartition(":")
    kwargs = dict(kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if prefix in ("torchvision", "timm"):
        _check_zoo_name(prefix, attr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. GoogLeNet's note on its future default initialisation
            with _initialisation_skipped():
                if prefix == "timm":
                    import timm

                    return timm.create_model(attr, pretrained=False, **kwargs)  # its errors: build_and_trace
                import torchvision

                return torchvision.models.get_model(attr, weights=None, **kwargs)
    return build_user(spec, user_callable(spec), kwargs)


@contextlib.contextmanager
def _initialisation_skipped() -> Iterator[None]:
    """Random initialisation as a no-op (``torch.nn.init``'s in-place initialisers return their
    tensor untouched): a count reads shapes, never values, and initialising ResNet-50 alone takes
    as long as tracing it. Parameters keep whatever ``torch.empty`` gave them. The patch is
    process-wide while a torchvision or timm model is built: another thread building a model at that
    very moment would skip its initialisation too (user builders are never patched)."""
    import torch.nn.init as init

    names = [n for n in dir(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    try:
        for name in names:
            setattr(init, name, _untouched)
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def _untouched(tensor: Any, *_args: Any, **_kwargs: Any) -> Any:
    return tensor


def _check_zoo_name(prefix: str, attr: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if prefix == "timm":
            try:
                import timm
            except ImportError:
                raise InputError("MODEL: timm:NAME needs timm installed (pip install timm)") from None
            names = timm.list_models()
        else:
            import torchvision

            names = torchvision.models.list_models(module=torchvision.models)
    if attr not in names:
        close = [n for n in names if attr and (attr in n or n in attr)][:6] or sorted(names)[:6]
        raise InputError(f"MODEL: {prefix} has no classification model {attr!r}; e.g. {', '.join(close)}, ...")


def timm_input_shape(spec: str) -> tuple[int, int, int]:
    """The input ``timm:NAME`` was trained at (its pretrained configuration's ``input_size``)."""
    import timm

    _check_zoo_name("timm", spec.rpartition(":")[2])
    config = timm.models.get_pretrained_cfg(spec.rpartition(":")[2])
    size = getattr(config, "input_size", None) if config is not None else None
    return tuple(int(v) for v in size) if size and len(size) == 3 else (3, 224, 224)


def torchvision_input_shape(spec: str) -> tuple[int, int, int]:
    """The native input of ``torchvision:NAME``: the smallest centre crop among its published
    weights (ViTs, built without weights, take that size; EfficientNet-B7 takes 600)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchvision

    try:
        weights = list(torchvision.models.get_model_weights(spec.rpartition(":")[2]))
    except (ValueError, KeyError):
        weights = []
    sizes = [w.transforms.keywords.get("crop_size") for w in weights if hasattr(w.transforms, "keywords")]
    sizes = [s for s in sizes if isinstance(s, int) and s > 0]
    side = min(sizes) if sizes else 224
    return 3, side, side


def user_callable(spec: str) -> Callable[..., Any]:
    """The callable of ``module.path:callable`` (imported with the current folder on the path, as
    ``python -m`` does) or ``path/to/file.py:callable``; every failure is one InputError line."""
    import importlib
    import importlib.util
    import os
    import sys
    from pathlib import Path

    prefix, _, attr = spec.rpartition(":")
    if prefix.endswith(".py"):
        path = Path(prefix)
        if not path.is_file():
            raise InputError(f"MODEL: {spec!r}: there is no file {prefix!r}")
        loader_spec = importlib.util.spec_from_file_location(f"chaincomp_user.{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise InputError(f"MODEL: {spec!r}: {prefix!r} cannot be loaded as Python")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # the user's own code
            raise InputError(f"MODEL: importing {prefix} failed ({_first_line(err)})") from None
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(prefix)
        except ImportError as err:
            raise InputError(f"MODEL: cannot import module {prefix!r} of {spec!r} ({err})") from None
        except Exception as err:  # the module ran and raised
            raise InputError(f"MODEL: importing {prefix} failed ({_first_line(err)})") from None
        finally:
            sys.path.remove(os.getcwd())
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"MODEL: {prefix!r} has no callable {attr!r}")
    return factory


def build_user(spec: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> nn.Module:
    """Call a user's builder with ``kwargs`` (what it raises, :func:`build_and_trace` turns into one
    line); a result that is not a module is one line here."""
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise InputError(f"MODEL: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


class Step:
    """What a count is doing now ("torchvision:swin_t: grouping"), for a progress line that another
    thread reads; empty when no build or trace runs."""

    now: str = ""


def _step(text: str) -> None:
    Step.now = text


# A trace may use at most this fraction of the memory the machine has available.
MEMORY_FRACTION = 0.5


def estimate_bytes(build: Callable[[], nn.Module], input_shape: Sequence[int]) -> tuple[int, int] | None:
    """(parameter and buffer bytes, bytes of every module output) of the model ``build`` makes, for
    one input of ``input_shape``, without allocating either: the model is built and run on torch's
    ``meta`` device, which keeps shapes only. None when the model cannot be built there (a builder
    that reads weights from a file, say); the output count is 0 when it cannot run there."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build()
    except Exception:
        return None
    if not isinstance(model, nn.Module):
        return None
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    outputs = [0]

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor):
                outputs[0] += tensor.numel() * tensor.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not any(True for _ in m.children())]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device="meta"))
    except Exception:
        outputs[0] = 0
    finally:
        for hook in hooks:
            hook.remove()
    return weights, outputs[0]


def _available_bytes() -> int:
    """Memory this machine can give now (MemAvailable), or all of it where that is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def build_and_trace(build: Callable[[], nn.Module], input_shape: Sequence[int], *, name: str,
                    provenance: dict[str, Any] | None = None, what: str = "", exits: Sequence[str] = (),
                    exit_head: str = "conv", group_seconds: float | None = None, groups: bool = True) -> LayerTable:
    """Build a model and trace it with the address space capped at :data:`MEMORY_FRACTION` of the
    memory available beyond what the process holds (see :func:`_address_space_capped`): a model too
    large for it is refused in one line, with its size estimated on torch's meta device, once an
    allocation has failed. Where no cap can be set, the estimate is made first and refuses instead.

    ``what`` names the options that set its size (e.g. "--input or --width-mult"), for the message.
    """
    _step(f"{name}: building")
    try:
        with _address_space_capped() as capped:
            refusal = None if capped else _too_large(build, input_shape, name, what, failed=False)
            if refusal is not None:
                raise refusal
            try:
                return _build_and_trace(build, input_shape, name=name, provenance=provenance, exits=exits,
                                        group_seconds=group_seconds, exit_head=exit_head, groups=groups)
            except _OutOfMemory:
                pass
        raise _too_large(build, input_shape, name, what, failed=True)  # the cap is off again here
    finally:
        _step("")


class _OutOfMemory(InputError):
    """An allocation that failed while building or tracing (the address-space cap, or the machine);
    :func:`build_and_trace` words it with the model's estimated size."""


def _allocation_failed(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text or "Cannot allocate memory" in text))


@contextlib.contextmanager
def _address_space_capped() -> Iterator[bool]:
    """Cap this process's address space (RLIMIT_AS, soft limit) at its size now plus
    :data:`MEMORY_FRACTION` of the memory available, restored on exit: a model too large for the
    machine fails at its first allocation past that, instead of growing until the machine's
    out-of-memory killer ends it (or something else). Yields False, capping nothing, where no limit
    can be set (no ``resource`` module or ``/proc``) or CUDA is in use (it reserves address space).
    The cap is process-wide while it holds: another thread allocating then meets it too."""
    try:
        import resource
    except ImportError:
        yield False
        return
    size = _address_space_size()
    if size is None or torch.cuda.is_initialized():
        yield False
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + int(MEMORY_FRACTION * _available_bytes())
    for limit in (soft, hard):
        if limit != resource.RLIM_INFINITY:
            cap = min(cap, limit)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _address_space_size() -> int | None:
    """This process's address space in bytes (VmSize), or None where /proc does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        return None


def _too_large(build: Callable[[], nn.Module], input_shape: Sequence[int], name: str, what: str, *,
               failed: bool) -> InputError | None:
    """The one-line refusal when the model's estimated weights and activations exceed
    :data:`MEMORY_FRACTION` of the memory available, or, whatever the estimate says, when ``failed``
    (an allocation did); None otherwise."""
    estimate = estimate_bytes(build, input_shape)
    limit = MEMORY_FRACTION * _available_bytes()
    if not failed and (estimate is None or sum(estimate) <= limit):
        return None
    gib = 2**30
    lower = f"; lower {what}" if what else ""
    shape = ",".join(map(str, input_shape))
    if estimate is None:
        return InputError(f"MODEL: tracing {name} at input {shape} needs more than half of the {2 * limit / gib:.1f} GiB "
                          f"of memory available{lower}")
    weights, outputs = estimate
    return InputError(f"MODEL: tracing {name} at input {shape} needs about {(weights + outputs) / gib:.1f} GiB "
                      f"({weights / gib:.1f} GiB of weights, {outputs / gib:.1f} GiB of activations), more than "
                      f"half of the {2 * limit / gib:.1f} GiB available{lower}")


def _build_and_trace(build: Callable[[], nn.Module], input_shape: Sequence[int], *, name: str,
                     provenance: dict[str, Any] | None, exits: Sequence[str], exit_head: str,
                     group_seconds: float | None, groups: bool) -> LayerTable:
    try:
        model = build()
    except InputError:
        raise
    except Exception as err:
        if _allocation_failed(err):
            raise _OutOfMemory(f"MODEL: {name}: building ran out of memory ({_first_line(err)})") from None
        raise InputError(f"MODEL: {name}: building failed ({_first_line(err)})") from None
    try:
        if not exits:
            return trace_model(model, input_shape, name=name, provenance=provenance, group_seconds=group_seconds,
                               groups=groups)
        points = attach_exits(model, exits, exit_head, input_shape, name=name)
        table = trace_model(model, input_shape, name=name, provenance={**(provenance or {}), "exit_head": exit_head},
                            group_seconds=group_seconds, groups=groups)
    except (MemoryError, RuntimeError) as err:  # the input tensor, or a forward pass outside the trace's own handler
        if _allocation_failed(err):
            raise _OutOfMemory(f"MODEL: {name}: tracing ran out of memory ({_first_line(err)})") from None
        raise
    return dataclasses.replace(table, exit_names=tuple(points))


def attach_exits(model: nn.Module, points: Sequence[str], kind: str, input_shape: Sequence[int], *,
                 name: str = "model") -> list[str]:
    """Attach an exit head (:func:`bitops.zoo.exit_head` of design ``kind``) after each module named
    in ``points``, as the zoo's are: heads in ``model.exits``, each run on its module's output right
    after that module, the model then returning ``[exit logits in depth order..., logits]``.

    One forward pass (no gradients) finds each module's output and the order they run in. Returns
    the points in depth order; head ``k`` is ``model.exits[points[k] with "." as "_"]``.
    """
    from bitops.zoo import exit_head

    modules = dict(model.named_modules())
    missing = [p for p in points if not p or p not in modules]
    if missing:
        shown = ", ".join(n for n, m in model.named_children())
        raise InputError(f"exits: {name} has no module {missing[0]!r}; name modules by their path, e.g. "
                         f"{shown[:120]}")
    if hasattr(model, EXITS_ATTRIBUTE):
        raise InputError(f"exits: {name} already has an attribute {EXITS_ATTRIBUTE!r}; exits cannot be attached")
    seen: dict[str, Any] = {}
    hooks = [modules[p].register_forward_hook(lambda _m, _i, out, p=p: seen.setdefault(p, out)) for p in points]
    first = next(model.parameters(), None)
    example = torch.zeros(1, *input_shape, device=first.device if first is not None else None)
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            output = model(example)
    except Exception as err:  # noqa: BLE001 - the model's own forward at this input
        raise InputError(f"MODEL: {name}: tracing at input {','.join(map(str, input_shape))} failed "
                         f"({_first_line(err)})") from None
    finally:
        for hook in hooks:
            hook.remove()
        for module, mode in training.items():
            module.training = mode
    never = [p for p in points if p not in seen]
    if never:
        raise InputError(f"exits: module {never[0]!r} of {name} never runs in the forward pass")
    if not (isinstance(output, torch.Tensor) and output.dim() == 2):
        raise InputError(f"exits: {name} must return N x classes logits to take exit heads, "
                         f"got {type(output).__name__}")
    order = [p for p in seen if p in points]
    heads = nn.ModuleDict()
    for point in order:
        out = seen[point]
        if not (isinstance(out, torch.Tensor) and out.dim() in (3, 4)):
            raise InputError(f"exits: module {point!r} of {name} gives {tuple(getattr(out, 'shape', ()))}, not an "
                             "N x C x H x W feature map or N x L x C tokens")
        channels = int(out.shape[1] if out.dim() == 4 else out.shape[-1])
        heads[point.replace(".", "_")] = exit_head(channels, int(output.shape[-1]), kind, tokens=out.dim() == 3)
    if len(heads) != len(order):
        raise InputError(f"exits: {', '.join(order)} name the same head twice once dots become underscores")
    heads.to(device=example.device, dtype=first.dtype if first is not None else None)
    setattr(model, EXITS_ATTRIBUTE, heads)
    logits: list[torch.Tensor] = []
    for point in order:
        head = heads[point.replace(".", "_")]
        modules[point].register_forward_hook(lambda _m, _i, out, head=head: logits.append(head(out)))
    model.register_forward_pre_hook(lambda _m, _i: logits.clear())
    model.register_forward_hook(lambda _m, _i, out: [*logits, out])
    return order
