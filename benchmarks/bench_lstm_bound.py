"""The fast model's per-atom LSTM: torch's LSTM (oneDNN) against fastgap's compiled LSTM core,
and how close each runs to this core's matrix-multiply rate.

Usage: python benchmarks/bench_lstm_bound.py [--rows 2048] [--repeats 7]

The fast model's per-atom LSTM shape (input 64 element embedding + 24 Gaussians = 88, hidden
96, 20 steps), one thread, random weights, best of ``--repeats``:

- torch's ``nn.LSTM`` over 256-row chunks (as CPU inference runs it), float32 and bfloat16
  autocast; beside it the two matrix products an LSTM is made of (all steps' input
  projection at once; 20 recurrent products), timed alone;
- the compiled core (``fastgap._core.lstm_final_states``) on the same entries, for every
  instruction set this CPU runs, as the model calls it: from the distances (it computes the
  Gaussians itself; torch is handed them ready, untimed) and a per-element table of input
  gates, so it does 4H x (24 + 96) multiply-adds per step instead of 4H x (88 + 96).
  MAC = multiply-accumulate; GMAC/s are counted on torch's MACs for both, so they compare
  as speed.
"""

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

STEPS, EMBED, BINS, HIDDEN, ELEMENTS = 20, 64, 24, 96, 119
CHUNK = 256


def best(f: Callable[[], object], repeats: int) -> float:
    """Shortest wall time of ``repeats`` calls after one warm-up, seconds."""
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from fastgap import _core

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = args.rows
    lstm = torch.nn.LSTM(EMBED + BINS, HIDDEN, batch_first=True).eval()
    vectors = torch.randn(ELEMENTS, EMBED) * 0.3
    index = torch.randint(1, ELEMENTS, (rows, STEPS))
    distances = 1.5 + 5.0 * torch.rand(rows, STEPS)  # Å
    centres, width, cut = torch.linspace(0.0, 8.0, BINS), 8.0 / BINS, 87.0  # the model's
    arg = ((distances[..., None] - centres) / width) ** 2
    gaussians = torch.where(arg < cut, torch.exp(-arg.clamp(max=cut)), 0.0)
    x = torch.cat([vectors[index], gaussians], dim=-1)  # (rows, steps, 88)
    w_ih = lstm.weight_ih_l0.detach()
    empty = np.zeros(0, np.float32)
    core_args = (
        index.numpy(), empty, empty, distances.numpy(), centres.numpy(), width, cut,
        np.full(rows, STEPS, np.int64), (vectors @ w_ih[:, :EMBED].T).contiguous().numpy(),
        w_ih[:, EMBED:].contiguous().numpy(), lstm.weight_hh_l0.detach().numpy(),
        (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(),
    )
    macs = rows * STEPS * (EMBED + BINS + HIDDEN) * 4 * HIDDEN
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, one thread; "
          f"LSTM({EMBED + BINS}, {HIDDEN}) x {STEPS} steps, {rows} rows")
    print("| implementation | precision | us / row | GMAC/s | max abs diff to torch float32 |")
    print("|---|---|---|---|---|")
    with torch.inference_mode():
        want = torch.cat([lstm(x[i:i + CHUNK])[1][0][0] for i in range(0, rows, CHUNK)]).numpy()
        for bf16 in (False, True):
            name = "bfloat16" if bf16 else "float32"
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                def chunks() -> np.ndarray:
                    return torch.cat([lstm(x[i:i + CHUNK])[1][0][0].float()
                                      for i in range(0, rows, CHUNK)]).numpy()
                t = best(chunks, args.repeats)
                diff = np.abs(chunks() - want).max()
            print(f"| torch nn.LSTM | {name} | {t / rows * 1e6:.1f} | {macs / t / 1e9:.1f} | "
                  f"{diff:.1e} |")
            for isa in _core.lstm_isas():
                def core() -> np.ndarray:
                    return _core.lstm_final_states(*core_args, bf16, 1, isa)
                t = best(core, args.repeats)
                diff = np.abs(core() - want).max()
                print(f"| fastgap core, {isa} | {name} | {t / rows * 1e6:.1f} | "
                      f"{macs / t / 1e9:.1f} | {diff:.1e} |")
        inputs = x.reshape(-1, EMBED + BINS)
        h = torch.randn(rows, HIDDEN)
        w_hh = lstm.weight_hh_l0.detach().T.contiguous()
        t_in = best(lambda: inputs @ w_ih.T, args.repeats)
        t_rec = best(lambda: [h @ w_hh for _ in range(STEPS)], args.repeats)
    macs_in = rows * STEPS * (EMBED + BINS) * 4 * HIDDEN
    macs_rec = rows * STEPS * HIDDEN * 4 * HIDDEN
    print(f"\nfloat32 matrix products alone: the input projection of all steps "
          f"{macs_in / t_in / 1e9:.1f} GMAC/s, the {STEPS} recurrent products "
          f"{macs_rec / t_rec / 1e9:.1f} GMAC/s; the input projection is "
          f"{macs_in / (macs_in + macs_rec):.2f} of torch's MACs")


if __name__ == "__main__":
    main()
