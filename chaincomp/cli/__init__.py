"""The ``chaincomp`` command line: argparse subcommands built in :func:`make_parser`.

One module per command family (:mod:`.count`: count, audit; :mod:`.train`: train, profile;
:mod:`.simulate`: simulate, orders, fit, confirm; :mod:`.campaign`: campaign plan, campaign run).
Each command parses its options, calls one
library entry point and prints the result (``--json``: the result's ``to_dict()``).

Every user mistake surfaces as :class:`bitops.InputError`, whose message starts with the field it
is about; it ends here as one line on stderr, the field renamed to its option
(:func:`chaincomp.cli.options.option_message`), with exit code 2 and no traceback. Output files
are written only after everything they hold has been computed, and atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bitops.errors import InputError
from chaincomp.cli.campaign import add_campaign
from chaincomp.cli.count import add_audit, add_count
from chaincomp.cli.options import option_message
from chaincomp.cli.simulate import add_benchmark, add_confirm, add_fit, add_orders, add_simulate
from chaincomp.cli.train import add_profile, add_sweep, add_train

__all__ = ["EXIT_USAGE", "main", "make_parser"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Version(argparse.Action):
    """``--version``: the version is looked up only when asked (importlib.metadata is slow to import)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        import chaincomp

        print(f"chaincomp {chaincomp.__version__}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse's parser, its errors one line like every other (argparse prints the usage first)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chaincomp", description="Combinational CNN compression: exact BitOps "
                                     "and CR counts, claim audits, order simulation and a thin trainer.")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_count, add_audit, add_train, add_sweep, add_profile, add_simulate, add_orders, add_fit, add_confirm,
                add_benchmark, add_campaign):
        add(sub)
    return parser


def _one_line(message: str) -> str:
    """``message`` with control characters (a value typed with a newline, say) escaped, so an error
    stays one line whatever the user gave."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # what was asked, for records that note their command
    try:
        return args.run(args)
    except InputError as err:
        # a command with subcommands (campaign plan/run) names its own parser
        command_parser = getattr(args, "command_parser", None) or \
            parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        message = _one_line(option_message(str(err), command_parser))
        print(f"chaincomp {getattr(args, 'command_name', args.command)}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("chaincomp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (e.g. `| head`) closed the pipe: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
