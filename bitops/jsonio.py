"""Atomic JSON writing shared by every file chaincomp produces (tables, reports, run records)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic"]


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> None:
    """Serialise first, then write a temporary file beside ``path`` and rename it into place.

    A failure at any point leaves ``path`` as it was: never a partial or corrupted file.
    """
    text = json.dumps(data, indent=1) + "\n"
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
