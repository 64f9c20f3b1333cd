"""How close the fast model's per-atom LSTM runs to this core's matrix-multiply rate.

Usage: python benchmarks/bench_lstm_bound.py

The fast model's per-atom LSTM shape (input 64 embedding + 24 Gaussians = 88, hidden 96,
20 steps) on 2048 rows, one thread, random weights, best of 7; beside it the two matrix
products an LSTM is made of (all steps' input projection at once; 20 recurrent products),
timed alone. MAC = multiply-accumulate.
"""

import time
from collections.abc import Callable

import torch

ROWS, STEPS, INPUT, HIDDEN = 2048, 20, 88, 96


def best(f: Callable[[], object], repeats: int = 7) -> float:
    """Shortest wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(INPUT, HIDDEN, batch_first=True).eval()
    x = torch.randn(ROWS, STEPS, INPUT)  # (rows, steps, input)
    inputs = torch.randn(ROWS * STEPS, INPUT)  # every step's input at once
    w_ih = torch.randn(INPUT, 4 * HIDDEN)
    h = torch.randn(ROWS, HIDDEN)
    w_hh = torch.randn(HIDDEN, 4 * HIDDEN)
    with torch.inference_mode():
        lstm(x)  # warm-up
        t_lstm = best(lambda: lstm(x))
        t_in = best(lambda: inputs @ w_ih)
        t_rec = best(lambda: [h @ w_hh for _ in range(STEPS)])
    macs_in = ROWS * STEPS * INPUT * 4 * HIDDEN
    macs_rec = ROWS * STEPS * HIDDEN * 4 * HIDDEN
    print(f"LSTM({INPUT}, {HIDDEN}) x {STEPS} steps, {ROWS} rows: {t_lstm * 1e3:.1f} ms, "
          f"{t_lstm / ROWS * 1e6:.1f} us/row, {(macs_in + macs_rec) / t_lstm / 1e9:.1f} GMAC/s")
    print(f"input product alone {t_in * 1e3:.1f} ms ({macs_in / t_in / 1e9:.1f} GMAC/s); "
          f"{STEPS} recurrent products alone {t_rec * 1e3:.1f} ms "
          f"({macs_rec / t_rec / 1e9:.1f} GMAC/s); together {100 * (t_in + t_rec) / t_lstm:.0f} % "
          "of the LSTM")
    print(f"input projection's share of the MACs: {macs_in / (macs_in + macs_rec):.2f}")


if __name__ == "__main__":
    main()
