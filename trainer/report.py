"""Text for people from the trainer's records (torch-free): a run record's stages, a profile's points."""

from __future__ import annotations

from typing import Any

__all__ = ["format_profile", "format_record"]


def format_record(record: dict[str, Any]) -> str:
    """One line per stage: accuracy, exit rate at the chosen threshold, BitOpsCR, CR, wall time."""
    lines = [f"{'stage':<6} {'accuracy':>8} {'exited':>7} {'BitOpsCR':>9} {'CR':>8} {'wall s':>7}"]
    for stage in record["stages"]:
        exited = "" if "exit" not in stage else f"{100 * (1 - stage['exit']['rates']['final']):.0f}%"
        lines.append(f"{stage['stage']:<6} {stage['accuracy']:>8.2f} {exited:>7} {stage['cost']['bitops_cr']:>8.1f}x "
                     f"{stage['cost']['cr']:>7.1f}x {stage['wall_s']:>7.1f}")
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
