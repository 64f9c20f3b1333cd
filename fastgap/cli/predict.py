"""``fastgap predict INPUT... --out preds.csv``: band gaps of many structures, no labels."""

from __future__ import annotations

import argparse

help = "predict band gaps of structure files, archives or feature stores (CSV or Parquet out)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="CIF/POSCAR/xyz files, directories, tar(.gz) archives, "
                             "JSON-lines(.gz) or featurized Zarr stores")
    parser.add_argument("--out", required=True, help="predictions file (.csv or .parquet)")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled ensemble), 'fast' (bundled one-network "
                             "model), 'qm9' (bundled molecular HOMO / LUMO / gap model), a "
                             "bundle or training run directory, or a .safetensors checkpoint")
    parser.add_argument("--rejects", default=None,
                        help="rejects CSV (default: next to --out, <name>.rejects.csv)")
    parser.add_argument("--workers", type=int, default=2, help="parse/featurize processes")
    parser.add_argument("--batch-size", type=int, default=256, help="structures per forward pass")
    parser.add_argument("--chunk-size", type=int, default=1000, help="inputs per worker task")
    parser.add_argument("--no-tta", action="store_true",
                        help="no averaging over axis-swap atom orders for order-dependent "
                             "(LSTM-pooling) members; order-free members never need it")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16", "int8", "auto"],
                        help="fp32 (the default: the model card's numbers), bf16 CPU autocast "
                             "(faster only on CPUs with native bfloat16), int8 dynamic "
                             "quantization, or auto (bf16 where native, else fp32; the "
                             "default with --fast); speed and accuracy in "
                             "benchmarks/RESULTS.md")
    parser.add_argument("--members", type=int, default=0,
                        help="use the first N band-gap regressors and the first N classifiers "
                             "(0 = all; 1 = fast mode, no band_gap_std_eV; fewer regressors "
                             "than all report an uncalibrated std)")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode: --model fast --precision auto (one network for "
                             "band gap and p_metal; with another --model: --members 1 "
                             "--precision auto --no-tta; an explicit --precision is kept); "
                             "accuracy in benchmarks/RESULTS.md, ## Screening")
    parser.add_argument("--raw-std", action="store_true",
                        help="report the raw ensemble spread instead of the calibrated std")
    parser.add_argument("--start-method", default="auto", choices=["auto", "fork", "spawn"],
                        help="worker start: fork (fast, Linux), spawn, or auto (fork if offered)")
    parser.add_argument("--backend", default="auto", help="neighbour-list backend")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--disorder", default="reject", help="reject or majority (CIF occupancy)")
    parser.add_argument("--any-periodicity", action="store_true",
                        help="also predict molecules / partly periodic structures when the "
                             "model was trained on crystals only (or the other way round); "
                             "by default they are rejected with that reason")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that stopped (CSV output): keep the rows of "
                             "OUT.partial and the rejects written so far, predict the rest "
                             "(same model and options required)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from fastgap.inference import resolve_precision
    from fastgap.readers import ReadPolicy
    from fastgap.screening import PredictConfig, predict_to_file

    if args.precision is None:
        args.precision = "auto" if args.fast else "fp32"
    if args.fast:
        args.precision, args.no_tta = resolve_precision(args.precision), True
        if args.model == "default":
            args.model = "fast"
        else:
            args.members = 1
    config = PredictConfig(
        model=args.model, workers=args.workers, batch_size=args.batch_size,
        chunk_size=args.chunk_size, tta=not args.no_tta, precision=args.precision,
        members=args.members, calibrated=not args.raw_std, backend=args.backend,
        threads=args.threads, start_method=args.start_method,
        policy=ReadPolicy(disorder=args.disorder), any_periodicity=args.any_periodicity,
        progress=not args.no_progress, resume=args.resume,
    )  # fmt: skip
    print(predict_to_file(args.inputs, args.out, config, rejects=args.rejects))
    return 0
