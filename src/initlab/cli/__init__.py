"""``initlab`` command line: ``initlab COMMAND --help``.

Each command lives in its own module ``initlab.cli.<command>`` exposing ``add_parser(subparsers)``
and ``run(args) -> int``. User mistakes (our :class:`InitlabError` types and bad flags) and the
file-system faults a user can fix (no space left, permission denied, read-only, a file where a
directory should be) print one line and exit with code 2, never a traceback.

Exit codes: 0 done; 1 a training run diverged (``train``; a result, not a crash); 2 a user error
(one line on stderr naming the problem and the fix); 130 / 143 stopped by SIGINT / SIGTERM (the
checkpoint is kept: resume it, or rerun the same compare/sweep/results command).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import signal
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
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is met here, not at exit
        return code
    except InitlabError as exc:
        print(f"initlab {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`initlab results --list | head`): stop quietly, as a Unix tool does;
        # stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:
        message = describe_os_error(exc)
        if message is None:
            raise
        print(f"initlab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"initlab {args.command}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def describe_os_error(exc: OSError) -> str | None:
    """One line for the file-system faults a user can fix; None for the others (a bug: traceback)."""
    what = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return (f"cannot write{what}: no space left on the device; free some space and run the "
                f"same command again (runs resume from their last checkpoint)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write{what}: permission denied; pick a directory you can write to (--out)"
    if exc.errno == errno.EROFS:
        return f"cannot write{what}: the file system is read-only; pick a writable directory (--out)"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return f"{what.strip() or 'a path'}: {exc.strerror}; pick another path"
    return None


if __name__ == "__main__":
    sys.exit(main())
