"""``chaincomp audit`` output: JSON for machines, text for people, and a plot of the reachable region."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitops.audit import ClaimAudit, TableLoader, audit_claim
from bitops.claims import EXAMPLES, Claim, check_conventions, load_claims
from bitops.errors import InputError
from bitops.result import Result

__all__ = ["AuditResult", "audit", "audit_all", "audit_json", "draw_claim", "format_audit", "plot_audit"]

REPORT_TYPE = "chaincomp.AuditReport"
REPORT_VERSION = 1


def audit_all(claims: Sequence[Claim], load: TableLoader, pins: dict[str, Any] | None = None,
              progress: Any = None) -> list[tuple[ClaimAudit, list[ClaimAudit]]]:
    """Each claim audited with its own student, then with each of its alternative students."""
    results = []
    for claim in claims:
        main = audit_claim(claim, load, pins=pins)
        others = [audit_claim(claim, load, student=name, width_mult=width, pins=pins)
                  for name, width in claim.student_alternatives]
        results.append((main, others))
        if progress is not None:
            progress.update(1)
    return results


def _student_label(audit: ClaimAudit) -> str:
    if audit.student is None:
        return "(no distillation)"
    return audit.student if audit.student_width_mult == 1.0 else f"{audit.student}@{audit.student_width_mult:g}"


def _reported(claim: Claim) -> dict[str, Any]:
    return {key: None if value is None else {"text": value.text, "interval": [value.low, value.high]}
            for key, value in (("bitops_cr", claim.bitops_cr), ("cr", claim.cr))}


def audit_json(results: list[tuple[ClaimAudit, list[ClaimAudit]]], pins: dict[str, Any]) -> dict[str, Any]:
    claims = []
    for main, others in results:
        claim = main.claim
        head = main.headline()
        claims.append({
            "name": claim.name, "source": claim.source, "dataset": claim.dataset, "reference": claim.reference,
            "student": _student_label(main), "student_note": claim.student_note, "order": claim.order,
            "exits": list(main.exits), "heads_pruned": claim.heads_pruned,
            "bits": {"w_bits": claim.w_bits, "a_bits": claim.a_bits},
            "reported": _reported(claim), "accuracy": claim.accuracy, "reference_accuracy": claim.reference_accuracy,
            "status": main.status, "verdict": main.verdict(), "headline": head.to_json(),
            "conventions_evaluated": len(main.combos),
            "conventions_consistent": sum(c.consistent for c in main.combos),
            "combinations": [c.to_json() for c in main.combos],
            "alternatives": [{"student": _student_label(a), "status": a.status, "verdict": a.verdict()} for a in others],
        })
    return {"_type": REPORT_TYPE, "_version": REPORT_VERSION, "pinned_conventions": pins,
            "counting": "BitOps = MACs x w_bits x a_bits (paper section 3.1); ratios do not depend on MACs vs FLOPs",
            "claims": claims}


def format_audit(report: dict[str, Any], all_conventions: bool) -> str:
    lines = [f"counting: {report['counting']}"]
    if report["pinned_conventions"]:
        lines.append("pinned: " + ", ".join(f"{k}={v}" for k, v in report["pinned_conventions"].items()))
    for c in report["claims"]:
        bits = c["bits"]
        bits_text = (f"{bits['w_bits']}w{bits['a_bits']}a" if bits["w_bits"] and bits["a_bits"] else "bits not stated")
        reported = ", ".join(f"{k} {v['text']}" for k, v in c["reported"].items() if v)
        lines += ["", f"== {c['name']}", f"   source     {c['source']}",
                  f"   claim      {c['reference']} -> {c['student']} ({c['order']}, {bits_text}): {reported}"]
        if c["student_note"]:
            lines.append(f"   assumed    {c['student_note']}")
        if c["exits"]:
            heads = "pruned with the backbone" if c["heads_pruned"] else "built for the pruned stages"
            lines.append(f"   exits      {', '.join(c['exits'])} (heads {heads})")
        lines.append(f"   verdict    {c['status'].upper()}: {c['verdict']}")
        head = c["headline"]
        lines.append(f"   reachable  CR {head['cr_reachable'][1]:.1f}x (keep 1) .. {head['cr_reachable'][0]:.0f}x; "
                     f"{c['conventions_consistent']}/{c['conventions_evaluated']} convention sets consistent")
        for alt in c["alternatives"]:
            lines.append(f"   if student {alt['student']}: {alt['status']}: {alt['verdict']}")
        if all_conventions:
            lines.append(f"   {'w':>2} {'a':>2} {'first/last':>10} {'input':>5} {'bn':>7} {'aux':>3} {'ref':>7}  "
                         f"{'keep':>13}  {'exit saving':>13}  consistent / reason")
            for combo in c["combinations"]:
                conv = combo["conventions"]
                keep = combo["keep_ratio"]
                keep_text = "-" if keep is None else f"{keep[0]:.3f}-{keep[1]:.3f}"
                saving = combo["exit_saving"]
                saving_text = "-" if saving is None else f"{100 * saving[0]:.1f}-{100 * saving[1]:.1f}%"
                verdict = "yes" if combo["consistent"] else f"no: {combo['reason']}"
                lines.append(f"   {conv['w_bits']:>2} {conv['a_bits']:>2} {conv['first_last_bits']!s:>10} "
                             f"{conv['input_bits']!s:>5} {conv['bn']:>7} {conv['aux_bits']:>3} {conv['reference']:>7}  "
                             f"{keep_text:>13}  {saving_text:>13}  {verdict}")
    statuses = [c["status"] for c in report["claims"]]
    lines += ["", f"{len(statuses)} claim{'s' if len(statuses) != 1 else ''}: " + ", ".join(f"{statuses.count(s)} {s}" for s in
                                                        ("consistent", "conditional", "unreachable") if s in statuses)]
    return "\n".join(lines)


def draw_claim(ax: Any, audit: ClaimAudit) -> None:
    """One claim's panel: its reachable (CR, BitOpsCR) curve, the band early exit opens (only where the
    claim has exits), the claim marked, and a legend of exactly what is drawn."""
    from matplotlib.ticker import NullFormatter

    curves = audit.curves()
    claim = audit.claim
    if audit.exits:  # the band early exit opens; without exits there is only the curve
        ax.fill_between(curves["cr"], curves["bitops_cr_no_exit"], curves["bitops_cr_all_exit"], color="tab:blue",
                        alpha=0.2, label="reachable with early exit")
    ax.plot(curves["cr"], curves["bitops_cr_no_exit"], color="tab:blue", lw=1.2,
            label="no sample exits early" if audit.exits else "reachable (no early exit)")
    if claim.cr is not None and claim.bitops_cr is not None:
        ax.plot([claim.cr.value], [claim.bitops_cr.value], marker="*", ms=12, color="tab:red", ls="none",
                label="claim")
    elif claim.bitops_cr is not None:
        ax.axhline(claim.bitops_cr.value, color="tab:red", ls="--", label="claimed BitOpsCR")
    elif claim.cr is not None:
        ax.axvline(claim.cr.value, color="tab:red", ls="--", label="claimed CR")
    head = audit.headline().convention
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
    ax.set_title(f"{claim.name}\n{_student_label(audit)} {head.w_bits}w{head.a_bits}a: {audit.status}", fontsize=8)
    ax.set_xlabel("CR (storage)", fontsize=8)
    ax.set_ylabel("BitOpsCR", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")


def plot_audit(results: list[tuple[ClaimAudit, list[ClaimAudit]]], path: Path) -> None:
    """One panel per claim: the reachable (CR, BitOpsCR) band over keep ratio and exit rate, claim marked."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (audit, _) in zip(axes.flat, results):
        draw_claim(ax, audit)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass(frozen=True)
class AuditResult(Result):
    """The audit of a claims file: ``to_dict()`` is ``audit --json``; ``format()`` the text report."""

    results: list[tuple[ClaimAudit, list[ClaimAudit]]]

    def format(self, all_conventions: bool = False) -> str:
        return format_audit(self.data, all_conventions)

    def plot(self, path: str | Path) -> None:
        """Draw the reachable (CR, BitOpsCR) band of each claim, the claim marked (atomic PNG)."""
        from bitops.jsonio import check_plot, write_checked

        check_plot("plot", path)
        write_checked("plot", path, lambda tmp: plot_audit(self.results, tmp))


def audit(claims: str | Path | None = None, example: str | None = None, conventions: dict[str, Any] | None = None,
          progress: Callable[[int], Any] | None = None) -> AuditResult:
    """Audit every claim of ``claims`` (a TOML file) or of a shipped ``example`` ('paper'), with
    ``conventions`` pinned for every claim (keys :data:`CONVENTION_KEYS`). ``progress(total)`` may
    return a tqdm-like object that is updated once per claim."""
    from bitops.models import ModelSpec, load_model_table, zoo_names

    if (claims is None) == (example is None):
        raise InputError("claims: give either a claims file or an example (exactly one)")
    if example is not None and example not in EXAMPLES:
        raise InputError(f"example must be one of {', '.join(EXAMPLES)}, got {example!r}")
    pins = check_conventions(conventions or {})
    parsed = load_claims(claims if claims is not None else EXAMPLES[str(example)], zoo_names())

    def load(name: str, num_classes: int, width_mult: float, input_shape: tuple[int, int, int]):
        return load_model_table(ModelSpec(name, input_shape=input_shape, num_classes=num_classes, width_mult=width_mult))

    bar = progress(len(parsed)) if progress is not None else None
    try:
        results = audit_all(parsed, load, pins, progress=bar)
    finally:
        if bar is not None and hasattr(bar, "close"):
            bar.close()
    return AuditResult(audit_json(results, pins), results)
