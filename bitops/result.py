"""What every entry point returns: the command's ``--json`` as ``to_dict()``, its text as ``format()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Result"]


@dataclass(frozen=True)
class Result:
    """A command's result. ``data`` is exactly what the command prints with ``--json``."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def format(self) -> str:
        """The text the command prints without ``--json``."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.format()
