"""``fastgap <subcommand>``: each subcommand lives in its own module of this package.

A subcommand module defines ``help: str``, ``add_arguments(parser)`` and ``run(args) -> int``;
it builds a config from the arguments and calls one library function. Modules are imported
only when their subcommand runs (or when ``--help`` lists them).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from fastgap._version import __version__

# subcommand -> module; the order is the order in `fastgap --help`
SUBCOMMANDS: dict[str, str] = {
    "demo": "fastgap.cli.demo",
    "predict": "fastgap.cli.predict",
    "featurize": "fastgap.cli.featurize",
    "train": "fastgap.cli.train",
    "bench": "fastgap.cli.bench",
    "aflow": "fastgap.cli.aflow",
    "neighbors": "fastgap.cli.neighbors",
}


def _available() -> dict[str, str]:
    found = {}
    for name, module in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = module
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastgap", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastgap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in _available().items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.help, description=module.help)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"fastgap {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
