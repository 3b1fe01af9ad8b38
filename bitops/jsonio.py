"""Reading and atomic writing shared by every file chaincomp reads or produces (tables, profiles,
run records, reports, plots).

Every problem with a file a user gives (missing, unreadable, not UTF-8, not JSON, NaN or Infinity
in place of a number) is one :class:`InputError` naming the file; every output is written whole or
not at all."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bitops.errors import InputError

__all__ = ["MAX_INPUT_BYTES", "MAX_NAME_BYTES", "PLOT_SUFFIXES", "check_plot", "check_writable", "hold_lock", "read_json", "read_text", "write_atomic", "write_checked", "write_json_atomic"]

# The longest file name most file systems take (ext4, xfs, btrfs, tmpfs: NAME_MAX = 255 bytes).
MAX_NAME_BYTES = 255
# No file chaincomp reads is near this large (the largest shipped table is ~1 MiB).
MAX_INPUT_BYTES = 256 << 20
# Plots are drawn by matplotlib in the format their suffix names.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
# The temporary file beside an output adds a prefix and a random part to its stem (see write_atomic).
_TEMP_EXTRA_BYTES = 16


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write`` on a temporary file beside ``path`` (same suffix), then rename it into place.

    A failure at any point leaves ``path`` as it was: never a partial or corrupted file.
    """
    target = Path(path)
    stem = target.stem.encode()[:MAX_NAME_BYTES - _TEMP_EXTRA_BYTES - len(target.suffix.encode())]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem.decode(errors='ignore')}.", suffix=target.suffix, dir=target.parent)
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
    if len(target.name.encode()) > MAX_NAME_BYTES:
        raise InputError(f"{name}: the file name of {str(path)[:40] + '...'!r} is {len(target.name.encode())} bytes "
                         f"long; at most {MAX_NAME_BYTES} fit a file system")
    if not target.parent.is_dir():
        raise InputError(f"{name}: cannot write {str(path)!r}: directory {str(target.parent)!r} does not exist")
    if target.is_dir():
        raise InputError(f"{name}: {str(path)!r} is a directory, not a file")
    if not os.access(target.parent, os.W_OK):
        raise InputError(f"{name}: cannot write {str(path)!r}: directory {str(target.parent)!r} is not writable")
    return target


def check_plot(name: str, path: str | os.PathLike[str]) -> Path:
    """:func:`check_writable` for a plot, whose suffix must name a format matplotlib draws here."""
    target = check_writable(name, path)
    if target.suffix.lower() not in PLOT_SUFFIXES:
        raise InputError(f"{name}: {str(path)!r} must end in {', '.join(PLOT_SUFFIXES)} (the format is the suffix's)")
    return target


def write_checked(name: str, path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """:func:`write_atomic` after :func:`check_writable`; an OS error is an InputError naming ``name``."""
    target = check_writable(name, path)
    try:
        write_atomic(target, write)
    except OSError as err:
        raise InputError(f"{name}: cannot write {str(path)!r}: {err.strerror}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_text(path: str | os.PathLike[str], where: str) -> str:
    """The UTF-8 text of ``path``, read no further than :data:`MAX_INPUT_BYTES` (``/dev/zero`` or a
    stray multi-GB file would otherwise fill memory); any problem is an InputError starting with ``where``."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise InputError(f"{where}: larger than {MAX_INPUT_BYTES >> 20} MiB; is it the right file?")
        return data.decode("utf-8")
    except OSError as err:
        raise InputError(f"{where}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text (byte {err.start}); is it the right file?") from None


def read_json(path: str | os.PathLike[str], where: str) -> Any:
    """The JSON document at ``path``; any problem is an InputError starting with ``where``."""
    text = read_text(path, where)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None


def _lock_path(path: Path) -> Path:
    """``.NAME.lock`` beside the file or folder (named by its absolute path: ``.`` and ``''`` have no
    name of their own); ``/`` has none at all, and holds its lock inside."""
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}.lock") if path.name else path / ".chaincomp.lock"


@contextlib.contextmanager
def hold_lock(name: str, path: str | os.PathLike[str]) -> Iterator[None]:
    """One writer per output: hold an exclusive lock on ``.NAME.lock`` beside ``path`` while the body
    runs; a second writer is refused at once, naming the process that holds it.

    The lock is the kernel's (``flock``), so a writer that dies releases it; a lock file it leaves
    behind is taken over. The file is removed on release, and a lock taken on a file another writer
    had just removed is taken again on the new one, so two writers never both hold it.
    """
    lock = _lock_path(Path(path))
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InputError(f"{name}: cannot create the lock {str(lock)!r} beside {str(path)!r} "
                             f"({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"{name} {str(path)!r} is being written by process {holder} (lock {str(lock)!r}); "
                             "wait for it to finish, or choose another file") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
