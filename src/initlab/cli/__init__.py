"""``initlab`` command line: ``initlab COMMAND --help``.

Each command lives in its own module ``initlab.cli.<command>`` exposing ``add_parser(subparsers)``
and ``run(args) -> int``. User mistakes (our :class:`InitlabError` types and bad flags) print one
line and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InitlabError

# order = order in --help
COMMANDS = ("compare", "train", "sweep", "download", "schemes", "probe", "coordcheck", "weights", "results")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="initlab", description=(
        "Initialize Transformers from theory and pre-trained structure: train, compare, sweep, "
        "probe and inspect."))
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"initlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except InitlabError as exc:
        print(f"initlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"initlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
