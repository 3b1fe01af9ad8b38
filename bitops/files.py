"""Readers of the small TOML files ``chaincomp count`` takes: per-layer bits and per-group keep ratios.

Bits file (rules apply in order, later rules win; names are layer names or fnmatch globs)::

    [default]            # optional: bits of every layer no rule names
    w_bits = 4
    a_bits = 4

    [[layer]]
    name = "layer1.*"
    w_bits = 2           # either key may be left out

Keep file (group labels, as ``count --per-layer --json`` lists them under ``groups``)::

    default = 0.8        # optional: groups no entry names
    [groups]
    "conv1" = 0.5
    "layer3.*" = 0.6
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from bitops.config import BitsRule
from bitops.errors import InputError
from bitops.jsonio import read_text
from bitops.rules import check_bits, check_keep_ratio

__all__ = ["read_bits_file", "read_keep_file", "read_toml"]


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    text = read_text(path, f"{what} {str(path)!r}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{what} {str(path)!r}: not valid TOML ({err})") from None


def _only_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise InputError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def read_bits_file(path: str | Path) -> tuple[dict[str, int], list[BitsRule]]:
    """(default bits {"w_bits"?, "a_bits"?}, rules in file order)."""
    where = f"bits_file {str(path)!r}"
    data = read_toml(path, "bits_file")
    _only_keys(data, {"default", "layer"}, where)
    default = data.get("default", {})
    if not isinstance(default, dict):
        raise InputError(f"{where}: [default] must be a table, got {default!r}")
    _only_keys(default, {"w_bits", "a_bits"}, f"{where} [default]")
    defaults = {k: check_bits(f"{where} [default].{k}", v) for k, v in default.items()}
    layers = data.get("layer", [])
    if not isinstance(layers, list):
        raise InputError(f"{where}: 'layer' must be an array of tables ([[layer]]), got {layers!r}")
    rules = []
    for i, entry in enumerate(layers):
        here = f"{where} [[layer]] #{i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(f"{here}: needs a string 'name' (a layer name or glob)")
        _only_keys(entry, {"name", "w_bits", "a_bits"}, here)
        if "w_bits" not in entry and "a_bits" not in entry:
            raise InputError(f"{here}: give w_bits and/or a_bits for {entry['name']!r}")
        rules.append(BitsRule(pattern=entry["name"],
                              w_bits=check_bits(f"{here} w_bits", entry["w_bits"]) if "w_bits" in entry else None,
                              a_bits=check_bits(f"{here} a_bits", entry["a_bits"]) if "a_bits" in entry else None))
    return defaults, rules


def read_keep_file(path: str | Path) -> tuple[float | None, dict[str, float]]:
    """(default keep ratio or None, {group label or glob: keep ratio})."""
    where = f"keep_file {str(path)!r}"
    data = read_toml(path, "keep_file")
    _only_keys(data, {"default", "groups"}, where)
    default = data.get("default")
    if default is not None:
        check_keep_ratio(f"{where}: default", default)
    groups = data.get("groups", {})
    if not isinstance(groups, dict):
        raise InputError(f"{where}: [groups] must be a table of label = keep ratio, got {groups!r}")
    return (None if default is None else float(default)), dict(groups)
