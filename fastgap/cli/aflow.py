"""``fastgap aflow``: download PBE band gaps of AFLOW ICSD structures as JSON-lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

help = "download AFLOW (AFLUX) ICSD PAW_PBE structures with band gaps to JSON-lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fastgap.aflow_source import DEFAULT_ENDPOINT, LEGACY_ENDPOINT, AflowConfig

    d = AflowConfig()
    parser.add_argument("--out", type=Path, required=True,
                        help="output JSON-lines file (gzipped if it ends with .gz)")
    parser.add_argument("--rejects", type=Path, default=None,
                        help="rejects CSV (default: next to --out, <name>.rejects.csv)")
    parser.add_argument("--endpoint", default=d.endpoint,
                        help=f"AFLUX URL (default {DEFAULT_ENDPOINT}; old: {LEGACY_ENDPOINT})")
    parser.add_argument("--catalog", default=d.catalog, help="AFLOW catalog (default %(default)s)")
    parser.add_argument("--min-density", type=float, default=d.min_density,
                        help="keep density > this, g/cm3 (default %(default)s)")
    parser.add_argument("--nonzero-gap", action="store_true", help="only entries with Egap > 0")
    parser.add_argument("--limit", type=int, default=None, help="stop after N entries")
    parser.add_argument("--page-size", type=int, default=d.page_size,
                        help="entries per request (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=d.timeout_s,
                        help="socket timeout per request, seconds (default %(default)s)")
    parser.add_argument("--retries", type=int, default=d.retries,
                        help="retries after a timeout or HTTP 5xx (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args: argparse.Namespace) -> int:
    from fastgap.aflow_source import AflowConfig, AflowError, fetch_aflow

    config = AflowConfig(
        out=args.out, rejects=args.rejects, endpoint=args.endpoint, catalog=args.catalog,
        min_density=args.min_density, nonzero_gap=args.nonzero_gap, limit=args.limit,
        page_size=args.page_size, timeout_s=args.timeout, retries=args.retries,
        overwrite=args.overwrite,
    )
    try:
        summary = fetch_aflow(config)
    except AflowError as exc:
        print(f"fastgap aflow: error: {exc}", file=sys.stderr)
        return 3
    print(summary)
    return 0
