"""Bookkeeping of experiment commands: default output folders and the command line of a run."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..output import atomic_write_text


def default_out(command: str) -> str:
    import time

    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def command_text(args: argparse.Namespace) -> str:
    """The command line that started this run.

    From a shell that is ``sys.argv`` verbatim. When the CLI is driven from Python
    (``initlab.cli.main([...])``) sys.argv belongs to the host program, so the equivalent command is
    rebuilt from the parsed flags instead.
    """
    import shlex
    import sys

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == args.command and Path(argv[0]).name in ("initlab", "__main__.py"):
        return " ".join(shlex.quote(a) for a in ["initlab", *argv[1:]])
    parts = ["initlab", args.command]
    for key, value in sorted(vars(args).items()):
        if key == "augment" and value is False:
            parts.append("--no-augment")
            continue
        if key in ("command", "run", "quiet") or value is None or value is False or callable(value):
            continue
        flag = "--" + key.replace("_", "-")
        if key in ("model_options", "init_options"):
            name = "--model-option" if key == "model_options" else "--init-option"
            for k, v in value:
                parts += [name, f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        elif value is True:
            parts.append(flag)
        elif key == "betas":
            parts += [flag, f"{value[0]},{value[1]}"]
        else:
            parts += [flag, str(value)]
    if getattr(args, "quiet", False):
        parts.append("--quiet")
    return " ".join(shlex.quote(p) for p in parts)


def write_command(out: str | os.PathLike, args: argparse.Namespace) -> Path:
    """``out/command.txt``: the command line of ``args`` (atomically, replacing any older one)."""
    return atomic_write_text(Path(out) / "command.txt", command_text(args) + "\n")


def record_command(out: str | os.PathLike, command: str) -> Path:
    """Add ``command`` under the lines ``out/command.txt`` already holds (a resumed run's
    command under the one that started it), atomically."""
    path = Path(out) / "command.txt"
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    return atomic_write_text(path, previous + command + "\n")
