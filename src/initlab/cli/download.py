"""``initlab download {cifar10,cifar100,fashion-mnist,mnist} --root DIR``: fetch a dataset (online).

Training never downloads; this command is the one place that does. Files are MD5-checked and
written atomically; tarballs are extracted. Afterwards pass ``--data-root DIR`` (or set
INITLAB_DATA=DIR) to use the data.
"""
from __future__ import annotations

from ..errors import ConfigError


def _md5_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or len(value) != 32:
        raise ConfigError(f"--md5 wants FILE=HEX32, got {text!r}")
    return name, value


def add_parser(sub):
    from ..data.download import SOURCES

    parser = sub.add_parser("download", help="download a dataset (for users who are online)",
                            description=(
                                "Download DATASET into ROOT/DATASET/ from its official location: "
                                "MD5-checked, written atomically, tarballs extracted. Training "
                                "never downloads; afterwards use --data-root ROOT."))
    parser.add_argument("dataset", choices=sorted(SOURCES), help="which dataset")
    parser.add_argument("--root", default=None,
                        help="directory to put DATASET/ in (default ~/.cache/initlab, a standard "
                             "place the loaders search)")
    parser.add_argument("--url", default=None, metavar="BASE",
                        help="base URL to fetch the files from instead of the official ones (a mirror)")
    parser.add_argument("--md5", action="append", default=[], metavar="FILE=HEX",
                        help="expected MD5 of FILE, overriding the known checksum (repeatable)")
    parser.add_argument("--force", action="store_true", help="fetch again even if the files are there")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connection (default 60)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> int:
    from ..data.download import download

    md5 = dict(_md5_option(m) for m in args.md5)
    where = download(args.dataset, args.root, base_url=args.url, md5=md5, force=args.force,
                     timeout=args.timeout)
    root = where.parent
    print(f"{args.dataset} is in {where}")
    print(f"use it with --data-root {root} (or INITLAB_DATA={root}), "
          f"or load_vision({args.dataset!r}, root={str(root)!r})")
    return 0
