"""``fastgap featurize INPUT... --out STORE``: structures -> a feature store, resumably."""

from __future__ import annotations

import argparse

help = "featurize structure files into a Zarr feature store (appends, resumes after a crash)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="files, directories, tar(.gz) archives or JSON-lines(.gz)")
    parser.add_argument("--out", required=True, metavar="STORE", help="store directory")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (0 = none)")
    parser.add_argument("--k", type=int, default=19, help="neighbours per atom")
    parser.add_argument("--backend", default="auto", help="auto, cpp, numba or reference")
    parser.add_argument("--rejects", default=None, help="rejects CSV (default STORE/rejects.csv)")
    parser.add_argument("--chunk-size", type=int, default=1000, help="inputs per worker task")
    parser.add_argument("--disorder", default="reject", help="reject or majority (CIF occupancy)")
    parser.add_argument("--dask", nargs="?", const="", default=None, metavar="SCHEDULER_ADDRESS",
                        help="run on dask.distributed (a LocalCluster without an address)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fastgap.features import FeaturizerConfig
    from fastgap.featurize import FeaturizeConfig
    from fastgap.readers import ReadPolicy

    config = FeaturizeConfig(
        featurizer=FeaturizerConfig(k=args.k, backend=args.backend),
        workers=args.workers,
        chunk_size=args.chunk_size,
        rejects=args.rejects,
        policy=ReadPolicy(disorder=args.disorder),
        progress=not args.no_progress,
    )
    if args.dask is not None:
        from fastgap.dask_featurize import featurize_dask

        summary = featurize_dask(args.inputs, args.out, config, address=args.dask or None)
    else:
        from fastgap.featurize import featurize

        summary = featurize(args.inputs, args.out, config)
    print(summary)
    return 0
