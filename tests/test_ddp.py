"""Two-process CPU (gloo) DistributedDataParallel smoke test launched with torchrun.

Run directly by torchrun as a script (``__main__`` below) from the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def _train(out: str) -> None:
    from fastgap.model import ModelConfig
    from fastgap.synthetic import synthetic_featurized
    from fastgap.train import TrainConfig, train

    data = synthetic_featurized(40, np.random.default_rng(0), max_atoms=5)
    tiny = ModelConfig(embed_dim=8, atom_hidden=8, struct_hidden=8, head_sizes=(8,))
    train(TrainConfig(out=out, epochs=2, batch_size=4, progress=False, threads=1, model=tiny,
                      device="cpu"), data)


def test_ddp_two_processes_gloo(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
    assert (tmp_path / "run" / "best.safetensors").is_file()


if __name__ == "__main__":
    _train(sys.argv[1])
