"""What every command module shares: list parsing, the field -> option naming of errors, output.

Library errors start with the field they are about (``w_bits must be ...``, ``prune.ratio ...``);
:func:`option_message` renames it to the option the user typed (``--w-bits``), from the parser's
own actions, so the mapping lives here once and cannot drift from the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from typing import Any, TextIO

from bitops.errors import InputError

__all__ = ["add_execution_options", "add_json", "default", "emit", "execution_options", "float_list", "int_list", "log", "option_message", "progress",
           "same_or_bits", "step_line"]

_LEADING = re.compile(r"[A-Za-z_][A-Za-z_0-9.]*")
_QUOTED_FIELD = re.compile(r"`([a-z_]+)`")


def default(config_type: type, name: str) -> Any:
    """The default of one dataclass field: argparse defaults come from the library (one source)."""
    field = next(f for f in fields(config_type) if f.name == name)
    if field.default is not MISSING:
        return field.default
    assert field.default_factory is not MISSING, f"{config_type.__name__}.{name} has no default"
    return field.default_factory()


def int_list(field: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{field} must be comma-separated integers, got {text!r}") from None


def float_list(field: str, text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{field} must be comma-separated numbers, got {text!r}") from None


def same_or_bits(field: str, text: str | None) -> int | None:
    """``same`` (None: the layer's own bits) or an integer; the range is the library's rule."""
    if text is None or text == "same":
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{field} must be 'same' or an integer in 1..32, got {text!r}") from None


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON (what the Python API's "
                                                            ".to_dict() returns)")


def _option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    # Options only: a positional's field reads better as the library words it ("claims file 'x'").
    return {action.dest: max(action.option_strings, key=len)
            for action in parser._actions if action.option_strings}  # argparse has no public list of them


def option_message(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with its leading library field renamed to the option of ``parser`` that sets it
    (a dotted ChainConfig path such as ``prune.ratio`` through its flat option name), and every
    other field it names in backquotes (``needs `exits` ``) too."""
    names = _option_names(parser)
    # Other fields a message mentions are in backquotes (`exits`): the option's name, unquoted.
    message = _QUOTED_FIELD.sub(lambda m: names.get(m.group(1), m.group(0)), message)
    match = _LEADING.match(message)
    if match is None:
        return message
    token = match.group(0)
    if "." in token:
        from trainer.options import FLAT_OF_PATH

        token = FLAT_OF_PATH.get(token, token)
    return names[token] + message[match.end():] if token in names else message


def log(message: str) -> None:
    """Progress lines of long work go to stderr, so stdout stays the result."""
    print(message, file=sys.stderr)


def progress(unit: str, description: str) -> Callable[[int], Any]:
    """A factory of progress bars on stderr for the library's ``progress(total)`` hook; silent when
    stderr is not a terminal."""
    def make(total: int) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit=unit, leave=False, disable=not sys.stderr.isatty())

    return make


@contextlib.contextmanager
def step_line(command: str, stream: TextIO | None = None, delay: float = 1.0, every: float = 0.5) -> Iterator[None]:
    """While the body runs longer than ``delay`` seconds on a terminal, one stderr line, rewritten
    in place, says what a count is doing (``bitops.trace.Step``: building, channel groups, tracing)
    and for how long; it is cleared at the end. Nothing when the stream is not a terminal."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def show() -> None:
        shown = False
        while not stop.wait(every if shown else delay):
            trace = sys.modules.get("bitops.trace")  # never imported here: a shipped table needs no torch
            now = getattr(getattr(trace, "Step", None), "now", "")
            if now:
                stream.write(f"\r\x1b[K{command}: {now} ({time.monotonic() - start:.0f} s)")
                stream.flush()
                shown = True
        if shown:
            stream.write("\r\x1b[K")
            stream.flush()

    thread = threading.Thread(target=show, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def emit(result: Any, as_json: bool, text: Callable[[], str] | None = None) -> int:
    """Print a result: its ``to_dict()`` as JSON, or its text; exit code 0. A stdout that cannot
    take it (a full disk, /dev/full) is a one-line error, not a traceback at exit."""
    output = json.dumps(result.to_dict(), indent=1) if as_json else (text() if text else result.format())
    try:
        print(output)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise InputError(f"stdout: cannot write the result ({err.strerror})") from None
    return 0


def add_execution_options(p: argparse.ArgumentParser) -> None:
    """Where trainings run (:class:`trainer.executors.Execution`): shared by campaign run, profile, confirm."""
    g = p.add_argument_group("where the trainings run")
    g.add_argument("--jobs", type=int, default=1, help="trainings at once on this machine, each with cores/N torch "
                                                       "threads (default 1: in this process)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run each training as a Ray task: no ADDRESS starts a local Ray instance, 'auto' joins the "
                        "cluster this machine belongs to, HOST:PORT a given one (needs chaincomp[ray])")
    g.add_argument("--cpus-per-run", type=float, default=1, help="with --ray: CPUs each training asks for (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=0, help="with --ray: GPUs each training asks for (default 0)")
    g.add_argument("--threads-per-run", type=int, metavar="N",
                   help="torch threads per training (default: cores / --jobs, or --cpus-per-run with --ray); fix it "
                        "to get the same numbers to the last bit on another executor")
    g.add_argument("--retries", type=int, default=1, help="times a failed training is tried again (default 1)")


def execution_options(args: argparse.Namespace) -> dict[str, Any]:
    """The Execution fields as typed (``--ray`` with no address: a local instance)."""
    options: dict[str, Any] = {"jobs": args.jobs, "cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run,
                               "threads_per_run": args.threads_per_run, "retries": args.retries}
    if args.ray is not None:
        options.update(ray=True, address=args.ray or None)
    return options
