"""Write a pretraining split: a base split minus the val and test ids of other tasks.

A model pretrained on one dataset and fine-tuned on another (``fastgap train --init-from``)
must not have seen the fine-tuning task's validation or test structures. This removes them
from the base split's train and val parts; the base test part is kept as it is (it is never
trained on), so a fine-tune on the base dataset itself keeps its own test set clean too.

    python scripts/make_pretrain_split.py benchmarks/splits/mp_gap36k.json \
        benchmarks/splits/mp_gap36k_pretrain.json \
        --exclude benchmarks/splits/mp_elastic3k.json benchmarks/splits/mp_eform4k.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pretrain_split(base: dict, excluded: list[dict]) -> dict:
    """``base`` with every val / test id of ``excluded`` removed from its train and val lists."""
    for name, split in [("base", base), *((f"exclude[{i}]", s) for i, s in enumerate(excluded))]:
        missing = {"train", "val", "test"} - set(split)
        if missing:
            raise ValueError(f"{name}: expected keys train, val, test; missing {sorted(missing)}")
    held_out = {i for s in excluded for part in ("val", "test") for i in s[part]}
    out = {k: v for k, v in base.items() if k not in ("train", "val", "test")}
    out["train"] = [i for i in base["train"] if i not in held_out]
    out["val"] = [i for i in base["val"] if i not in held_out]
    out["test"] = list(base["test"])
    out["removed"] = {part: len(base[part]) - len(out[part]) for part in ("train", "val")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="split JSON of the pretraining dataset")
    parser.add_argument("out", type=Path, help="where to write the pretraining split")
    parser.add_argument("--exclude", type=Path, nargs="+", required=True,
                        help="split JSONs of the fine-tuning tasks (their val + test are held out)")
    args = parser.parse_args()
    split = pretrain_split(json.loads(args.base.read_text()),
                           [json.loads(p.read_text()) for p in args.exclude])
    split["excluded_from"] = [p.name for p in args.exclude]
    args.out.write_text(json.dumps(split) + "\n")
    print(f"{args.out}: train {len(split['train'])}, val {len(split['val'])}, "
          f"test {len(split['test'])}; removed {split['removed']}")


if __name__ == "__main__":
    main()
