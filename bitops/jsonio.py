"""Atomic file writing shared by every file chaincomp produces (tables, reports, plots, run records)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitops.errors import InputError

__all__ = ["check_writable", "write_atomic", "write_checked", "write_json_atomic"]


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (same suffix), then rename it into place.

    A failure at any point leaves ``path`` as it was: never a partial or corrupted file.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(data: Any, path: str | os.PathLike[str]) -> None:
    """Serialise first (a failure leaves nothing behind), then write atomically."""
    text = json.dumps(data, indent=1) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_writable(name: str, path: str | os.PathLike[str]) -> Path:
    """Fail before any work when an output file cannot be written where it was asked for.

    ``name`` is the field (or option) the path came from; it starts the error message.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise InputError(f"{name}: cannot write {str(path)!r}: directory {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise InputError(f"{name}: {str(path)!r} is a directory, not a file")
    return target


def write_checked(name: str, path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """:func:`write_atomic` after :func:`check_writable`; an OS error is an InputError naming ``name``."""
    target = check_writable(name, path)
    try:
        write_atomic(target, write)
    except OSError as err:
        raise InputError(f"{name}: cannot write {str(path)!r}: {err.strerror}") from None
