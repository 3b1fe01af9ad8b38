"""The ``chaincomp count`` report: one configuration against its reference, as JSON and as text.

Every number comes from :func:`bitops.cost.evaluate`; per-layer rows plus the non-MAC op rows
(and ``extra_params``) add up to the totals, which a test checks.
"""

from __future__ import annotations

from typing import Any

from bitops.config import Config
from bitops.cost import evaluate, reference_totals
from bitops.policy import Policy
from bitops.table import LayerTable

__all__ = ["count_report", "format_count"]

REPORT_TYPE = "chaincomp.CountReport"
REPORT_VERSION = 1


def _number(value: float) -> int | float:
    """Integral values print as integers: without exits every count is an exact integer."""
    return int(value) if float(value).is_integer() else float(value)


def count_report(table: LayerTable, config: Config, policy: Policy, reference: LayerTable) -> dict[str, Any]:
    """Totals, ratios, conventions and per-row numbers of ``config`` on ``table``."""
    report = evaluate(table, config, policy)
    ref = reference_totals(reference, policy)
    t = report.totals
    ops = table.ops
    return {
        "_type": REPORT_TYPE,
        "_version": REPORT_VERSION,
        "model": table.model,
        "reference_model": reference.model,
        "input_shape": list(table.input_shape),
        "exits": list(table.exit_names),
        "exit_probs": [float(q) for q in config.exit_probs],
        "macs": _number(t.macs),
        "params": t.params,
        "bitops": _number(t.bitops),
        "storage_bits": t.storage_bits,
        "reference_macs": _number(ref.macs),
        "reference_params": ref.params,
        "reference_bitops": _number(ref.bitops),
        "reference_storage_bits": ref.storage_bits,
        "bitops_cr": ref.bitops / t.bitops,
        "cr": ref.storage_bits / t.storage_bits,
        "conventions": policy.describe(),
        # None: the trace left the analysis out (nothing pruned); [] when it found no groups
        "groups": [{"label": label, "channels": int(c), "kept": int(k)}
                   for label, c, k in zip(table.group_labels, table.group_channels, config.kept)]
        if table.groups_analysed else None,
        "layers": [{**row, "macs": _number(row["macs"]), "bitops": _number(row["bitops"])} for row in report.layer_rows()],
        "ops": [{"name": ops["name"][j], "kind": ops["kind"][j], "category": ops["category"][j],
                 "elements": report.op_elements[j], "bitops": _number(report.op_bitops[j]),
                 "params": report.op_params[j], "storage_bits": report.op_storage_bits[j]}
                for j in range(table.num_ops)],
        "extra_params": table.extra_params,
        "unused": dict(table.unused),
        "ungrouped": dict(table.ungrouped) if table.groups_analysed else {},
        "unsupported_ops": dict(table.unsupported_ops),
        "notes": list(table.notes),
    }


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3f}{unit}"
    return f"{value:.4g}"


def format_count(data: dict[str, Any], per_layer: bool, groups: bool = False) -> str:
    """The report as text for people: a summary, and the per-layer table and the channel groups on
    request."""
    lines = [f"model      {data['model']}  input {'x'.join(map(str, data['input_shape']))}"
             f"  reference {data['reference_model']} (full precision)"]
    if data["exits"]:
        probs = ", ".join(f"{n}={q:g}" for n, q in zip(data["exits"], data["exit_probs"]))
        lines.append(f"exits      {probs}  (final classifier: {1 - sum(data['exit_probs']):g})")
    conv = data["conventions"]
    lines.append("conventions " + "  ".join(f"{k}={v}" for k, v in conv.items() if k != "reference"))
    if per_layer:
        lines.append("")
        header = f"{'layer':<28} {'kind':<6} {'in':>5} {'out':>5} {'keep':>5} {'w':>3} {'a':>3} {'reach':>6} " \
                 f"{'MACs':>10} {'BitOps':>11} {'params':>10}"
        lines += [header, "-" * len(header)]
        for row in data["layers"]:
            lines.append(f"{row['name'][:28]:<28} {row['kind']:<6} {row['in_ch']:>5} {row['out_ch']:>5} "
                         f"{row['keep']:>5.2f} {row['w_bits']:>3} {row['a_bits']:>3} {row['reach']:>6.3f} "
                         f"{_si(row['macs']):>10} {_si(row['bitops']):>11} {row['params']:>10}")
        other_bitops = sum(op["bitops"] for op in data["ops"])
        other_params = sum(op["params"] for op in data["ops"]) + data["extra_params"]
        lines.append(f"{'(BN, activations, other params)':<28} {'':<6} {'':>5} {'':>5} {'':>5} {'':>3} {'':>3} {'':>6} "
                     f"{'':>10} {_si(other_bitops):>11} {other_params:>10}")
        lines.append("-" * len(header))
        lines.append(f"{'total':<28} {'':<6} {'':>5} {'':>5} {'':>5} {'':>3} {'':>3} {'':>6} "
                     f"{_si(data['macs']):>10} {_si(data['bitops']):>11} {data['params']:>10}")
    lines += [
        "",
        f"MACs       {_si(data['macs']):>12}   reference {_si(data['reference_macs'])}",
        f"BitOps     {_si(data['bitops']):>12}   reference {_si(data['reference_bitops'])}   BitOpsCR {data['bitops_cr']:.2f}x",
        f"storage    {data['storage_bits'] / 8 / 2**20:>10.3f}MiB   reference {data['reference_storage_bits'] / 8 / 2**20:.3f}MiB"
        f"   CR {data['cr']:.2f}x",
        f"params     {data['params']:>12,}   reference {data['reference_params']:,}",
    ]
    if data["unsupported_ops"]:
        lines.append("not counted (no handler): " + ", ".join(f"{k} x{v}" for k, v in data["unsupported_ops"].items()))
    if data["unused"]:
        total = sum(data["unused"].values())
        lines.append(f"never ran (not counted; --count-unused counts them): {_listed(data['unused'])} "
                     f"({total:,} params)")
    if groups and data["groups"] is not None:
        plain = [g for g in data["groups"] if not g["label"].startswith("cat(")]
        lines += ["", f"channel groups: {len(data['groups'])} ({len(data['groups']) - len(plain)} concatenations, "
                      "pruned through their parts, not shown); label: channels kept / channels"]
        lines += [f"  {g['label']}: {g['kept']} / {g['channels']}" for g in plain]
    if data["groups"] is None:
        lines.append("channel groups: not analysed, as nothing is pruned (--groups lists them; --keep-ratio, "
                     "--keep-file and --save-table analyse them too)")
    if data["ungrouped"]:
        first, reason = next(iter(data["ungrouped"].items()))
        lines.append(f"no channel groups: {len(data['ungrouped'])} layers, counted unpruned only (--json lists "
                     f"them), e.g. {first}: {reason}")
    lines += [f"note: {n}" for n in data["notes"]]
    return "\n".join(lines)


def _listed(names: Any, shown: int = 3) -> str:
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
