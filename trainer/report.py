"""Text for people from the trainer's records (torch-free): a run record's stages, a profile's points."""

from __future__ import annotations

from typing import Any

__all__ = ["format_profile", "format_record"]


def format_record(record: dict[str, Any]) -> str:
    """One line per stage: accuracy, exit rate at the chosen threshold, BitOpsCR, CR, wall time;
    then, when the final model has exits, its threshold sweep: accuracy, the share leaving at each
    exit and BitOpsCR per measured threshold."""
    lines = [f"{'stage':<6} {'accuracy':>8} {'exited':>7} {'BitOpsCR':>9} {'CR':>8} {'wall s':>7}"]
    for stage in record["stages"]:
        exited = "" if "exit" not in stage else f"{100 * (1 - stage['exit']['rates']['final']):.0f}%"
        lines.append(f"{stage['stage']:<6} {stage['accuracy']:>8.2f} {exited:>7} {stage['cost']['bitops_cr']:>8.1f}x "
                     f"{stage['cost']['cr']:>7.1f}x {stage['wall_s']:>7.1f}")
    last = record["stages"][-1] if record["stages"] else {}
    if "exit" in last and last["exit"].get("thresholds"):
        rows = last["exit"]["thresholds"]
        names = [n for n in rows[0]["rates"] if n != "final"]
        lines += ["", f"exit thresholds of the final model (the record's operating point: {last['exit']['threshold']:g})",
                  f"{'threshold':>9} {'accuracy':>8} " + " ".join(f"{n:>8}" for n in names)
                  + f" {'final':>6} {'BitOpsCR':>9}"]
        for row in rows:
            cost = row.get("cost", {})
            lines.append(f"{row['threshold']:>9g} {row['accuracy']:>8.2f} "
                         + " ".join(f"{100 * row['rates'][n]:>7.0f}%" for n in names)
                         + f" {100 * row['rates']['final']:>5.0f}% "
                         + (f"{cost['bitops_cr']:>8.1f}x" if "bitops_cr" in cost else f"{'-':>9}"))
    return "\n".join(lines)


def format_profile(profile: dict[str, Any]) -> str:
    """The base accuracy, then one line per measured point: value, accuracy, delta (and exit share)."""
    base = profile["base"]
    lines = [f"base {base['model']}: {base['accuracy']:.2f}%", f"{'method':<7} {'value':>9} {'accuracy':>9} {'delta':>7}"]
    for method, entry in profile["methods"].items():
        for point in entry["points"]:
            rates = point.get("exit_rates")
            exited = "" if rates is None else f"  exited {100 * (1 - rates['final']):.0f}%"
            lines.append(f"{method:<7} {point['value']!s:>9} {point['accuracy']:>9.2f} {point['delta']:>+7.2f}{exited}")
    return "\n".join(lines)
