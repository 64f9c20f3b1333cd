"""``fastgap train``: fit a model on a feature store (builds a ``TrainConfig``)."""

from __future__ import annotations

import argparse

help = "train the two-level LSTM on a feature store"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="feature store (Zarr) written by `fastgap featurize`")
    parser.add_argument("--labels",
                        help="CSV of properties joined to the store by id: a header with "
                             "'id' and property names, or CGCNN's headerless id_prop.csv "
                             "(its column is named by the single --target)")
    parser.add_argument("--target", dest="targets", action="append",
                        help="target property (repeat for several; is_metal is derived)")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--config", help="TOML file with TrainConfig fields ([model] table)")
    parser.add_argument("--where", help="filter, e.g. 'band_gap_eV > 0'")
    parser.add_argument("--max-z", type=int, help="drop structures with an element above")
    parser.add_argument("--split-file", help="JSON with train/val/test id lists")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", choices=["auto", "on", "off"])
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-augment", dest="augment", action="store_const", const=False)
    parser.add_argument("--no-tta", dest="tta", action="store_const", const=False)
    parser.add_argument("--resume", action="store_const", const=True,
                        help="continue the run in --out from its last epoch")
    parser.add_argument("--init-from",
                        help="start from this checkpoint (or run directory, or 'pretrained': "
                             "the shipped model pretrained on mp_gap36k): its architecture and "
                             "weights; output rows kept for targets it shares")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False)


FIELDS = ("store", "labels", "targets", "out", "where", "max_z", "split_file", "epochs", "batch_size",
          "lr", "seed", "patience", "device", "compile", "num_workers", "threads", "augment",
          "tta", "resume", "init_from", "progress")


def run(args: argparse.Namespace) -> int:
    from fastgap.train import TrainConfig, train

    overrides = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    config = (TrainConfig.from_toml(args.config, **overrides) if args.config
              else TrainConfig(**overrides))
    out = train(config)
    print(out)
    return 0
