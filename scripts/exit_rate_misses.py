"""Exit rates measured by run records against a profile's prediction, per exit, for every run with E.

    .venv/bin/python scripts/exit_rate_misses.py RUN_DIR [RUN_DIR ...] [--profile FILE.json]

For each complete record with E (``chaincomp train`` / ``benchmark`` writes them): its order and
settings, the share of test samples leaving at each exit of the final model at its operating
threshold (the last stage that reports exits), the profile's prediction of the same shares
(``simulator.model``: the E curve's rates through the exit tables that apply), and the exit terms
combined. Sorted by the largest absolute difference; where BitOpsCR is over-predicted, more samples
were predicted to leave early than did. Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitops.errors import InputError  # noqa: E402
from bitops.jsonio import read_json  # noqa: E402

VALUE_KEYS = {"D": "student", "P": "ratio", "Q": "w_bits", "E": "threshold"}


def measured_rates(record: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, float]] | None:
    """(order, {method: value}, {exit: rate}) of a complete record with E, else None."""
    if record.get("_type") != "chaincomp.RunRecord" or record.get("status") != "complete":
        return None
    stages = [s for s in record["stages"] if s["stage"] != "base"]
    order = "".join(s["stage"] for s in stages)
    with_exits = [s for s in stages if "exit" in s]
    if "E" not in order or not with_exits:
        return None
    values = {s["stage"]: s["config"][VALUE_KEYS[s["stage"]]] for s in stages}
    return order, values, dict(with_exits[-1]["exit"]["rates"])


def rows(run_dirs: list[str], profile_path: str | None) -> list[dict[str, Any]]:
    import numpy as np

    from simulator.model import Grid, _exit_probs
    from simulator.profile import load_profile
    from simulator.structure import structure

    profile = load_profile(profile_path)
    exits = list(profile.curve("E").extra.get("exits", ()))
    out = []
    for run_dir in run_dirs:
        directory = Path(run_dir)
        if not directory.is_dir():
            raise InputError(f"RUN_DIR {run_dir!r} is not a folder")
        for path in sorted(directory.glob("*.json")):
            found = measured_rates(read_json(path, f"record {str(path)!r}"))
            if found is None:
                continue
            order, values, rates = found
            grid = Grid(values={m: (v,) for m, v in values.items()})
            predicted = _exit_probs(profile, order, grid, [np.array([0])] * len(order), exits)[0]
            shape = structure(order)
            terms = ["".join(order[p] for p in ps) for ps in (*shape.exit_pairs, *shape.exit_triples)]
            out.append({"run": path.name, "order": order, "settings": values,
                        "measured": {x: float(rates.get(x, 0.0)) for x in exits},
                        "predicted": {x: float(p) for x, p in zip(exits, predicted)},
                        "terms": [t for t in terms if t in profile.exit_tables]})
    out.sort(key=lambda r: -max(abs(r["measured"][x] - r["predicted"][x]) for x in exits))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders of run records")
    parser.add_argument("--profile", metavar="FILE.json", help="the profile to predict with (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        found = rows(args.run_dirs, args.profile)
    except InputError as err:
        print(f"exit_rate_misses: error: {err}", file=sys.stderr)
        return 2
    if not found:
        print("exit_rate_misses: error: no complete run record with E in the folders given", file=sys.stderr)
        return 2
    for r in found:
        settings = " ".join(f"{m}={v}" for m, v in r["settings"].items())
        exits = list(r["measured"])
        measured = " ".join(f"{r['measured'][x]:.2f}" for x in exits)
        predicted = " ".join(f"{r['predicted'][x]:.2f}" for x in exits)
        print(f"{r['order']}  {settings:40s} measured {measured}  predicted {predicted}  "
              f"terms {','.join(r['terms']) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
