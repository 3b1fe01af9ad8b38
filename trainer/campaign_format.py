"""The campaign file: the one owner of its format (type, version, reader with validation, writer). No torch.

A campaign is the list of trainings a profile, a fit or a confirm needs, each a full train
configuration with the path of its run record; ``chaincomp campaign plan`` writes one and
``chaincomp campaign run`` executes it::

    _type, _version   "chaincomp.Campaign", 1
    command           the command that planned it ("" when written by hand)
    runs              [{"name": unique, "record": the run record's path, relative to the campaign
                        file's folder (unique), "config": ChainConfig.to_json() of the run}]

Record paths are relative so a campaign folder can move (to a cluster's head node, say) whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bitops.errors import InputError
from bitops.jsonio import read_json, write_json_atomic
from trainer.config import ChainConfig

__all__ = ["CAMPAIGN_TYPE", "CAMPAIGN_VERSION", "Campaign", "CampaignRun", "read_campaign", "write_campaign"]

CAMPAIGN_TYPE = "chaincomp.Campaign"
CAMPAIGN_VERSION = 1
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class CampaignRun:
    """One training of a campaign: its name, its record's path (relative) and its configuration."""

    name: str
    record: str
    config: ChainConfig

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "record": self.record, "config": self.config.to_json()}


@dataclass(frozen=True)
class Campaign:
    """Runs with unique names and record paths; ``command`` says what planned them."""

    runs: tuple[CampaignRun, ...]
    command: str = ""

    def __post_init__(self) -> None:
        if not self.runs:
            raise InputError("runs must list at least one run")
        for field, values in (("name", [r.name for r in self.runs]), ("record", [r.record for r in self.runs])):
            seen: set[str] = set()
            for value in values:
                if value in seen:
                    raise InputError(f"runs: two runs have the {field} {value!r}; each run needs its own")
                seen.add(value)

    def to_json(self) -> dict[str, Any]:
        return {"_type": CAMPAIGN_TYPE, "_version": CAMPAIGN_VERSION, "command": self.command,
                "runs": [run.to_json() for run in self.runs]}


def _check_record_path(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.endswith(".json"):
        raise InputError(f"{where} must be a relative path ending in .json, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise InputError(f"{where} must stay inside the campaign's folder (relative, no '..'), got {value!r}")
    return value


def _run(k: int, item: Any) -> CampaignRun:
    where = f"runs[{k}]"
    if not isinstance(item, dict):
        raise InputError(f"{where} must be an object with name, record and config, got {type(item).__name__}")
    unknown = sorted(set(item) - {"name", "record", "config"})
    if unknown:
        raise InputError(f"{where}: unknown field {unknown[0]!r} (fields: config, name, record)")
    name = item.get("name")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise InputError(f"{where}.name must be a non-empty name of letters, digits, '.', '_' and '-', got {name!r}")
    record = _check_record_path(f"{where}.record", item.get("record"))
    if "config" not in item:
        raise InputError(f"{where}: 'config' is required (a train configuration)")
    try:
        config = ChainConfig.from_json(item["config"])
    except InputError as err:
        raise InputError(f"{where}.config: {err}") from None
    return CampaignRun(name, record, config)


def check_campaign(value: Any, where: str = "campaign") -> Campaign:
    """The :class:`Campaign` that ``value`` (a parsed file) holds; an InputError starting with
    ``where`` and naming the field otherwise."""
    try:
        if not isinstance(value, dict) or value.get("_type") != CAMPAIGN_TYPE:
            got = value.get("_type") if isinstance(value, dict) else type(value).__name__
            raise InputError(f"not a chaincomp campaign (_type must be {CAMPAIGN_TYPE!r}, got {got!r})")
        if isinstance(value.get("_version"), bool) or value.get("_version") != CAMPAIGN_VERSION:
            raise InputError(f"_version must be {CAMPAIGN_VERSION}, got {value.get('_version')!r}")
        unknown = sorted(set(value) - {"_type", "_version", "command", "runs"})
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r} (fields: _type, _version, command, runs)")
        command = value.get("command", "")
        if not isinstance(command, str):
            raise InputError(f"command must be a string, got {command!r}")
        runs = value.get("runs")
        if not isinstance(runs, list):
            raise InputError(f"runs must be a list of runs, got {type(runs).__name__}")
        return Campaign(tuple(_run(k, item) for k, item in enumerate(runs)), command)
    except InputError as err:
        raise InputError(f"{where}: {err}") from None


def read_campaign(path: str | Path) -> Campaign:
    """Read and check the campaign at ``path``; every problem is an InputError naming the file."""
    where = f"campaign {str(path)!r}"
    return check_campaign(read_json(path, where), where)


def write_campaign(campaign: Campaign, path: str | Path) -> None:
    """Write ``campaign`` atomically (what we write reads back: it was checked on construction)."""
    write_json_atomic(campaign.to_json(), path)
