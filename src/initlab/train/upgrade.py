"""``python -m initlab.train.upgrade RUN_DIR_OR_CHECKPOINT``: rewrite format-1 checkpoints as format 2.

Format 1 pickled numpy's RNG state, so it cannot be read with ``torch.load(weights_only=True)``;
initlab refuses it rather than unpickle a file that could run code. Run this only on files you
trust: it loads them with ``weights_only=False`` once, converts the RNG state to tensors and plain
values, and writes the checkpoint back atomically (see :func:`initlab.train.checkpoint.upgrade_checkpoint`).
"""
from __future__ import annotations

import sys

from ..errors import CheckpointError
from .checkpoint import upgrade_checkpoint


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m initlab.train.upgrade RUN_DIR_OR_CHECKPOINT (only for files you trust)",
              file=sys.stderr)
        return 2
    try:
        rewritten = upgrade_checkpoint(argv[0])
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"upgraded {f}" for f in rewritten) or "nothing to upgrade: already format 2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
