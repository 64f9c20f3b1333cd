"""LSTM calls of `fastgap.model` over rows: final states of packed sequences, and row
chunks for CPU inference.

Rows (atoms, structures) are independent sequences, so an LSTM over a subset of them gives
the same states as over all of them; CPU inference uses that to run over cache-sized chunks
padded to a few shapes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

# Without autograd on CPU, LSTMs run over this many rows at a time (a GPU wants whole
# batches): each call's input projection of all steps, (rows * L, 4H) float32, then stays
# in cache and in reused heap memory instead of a fresh mmap'd block (2,048 rows x 20 steps
# x 384 gates is 63 MB, whose first touch cost half the projection's time); same numbers,
# 1.3x faster (benchmarks/RESULTS.md)
INFERENCE_ROWS = 256
# ... and a chunk of unpacked rows is padded with zero rows to a multiple of this, so that
# oneDNN sees a handful of shapes (32, 64, ..., 256 rows) whose compiled LSTM primitives its
# cache keeps, instead of one new primitive per batch (benchmarks/RESULTS.md, "Screening")
INFERENCE_ROW_QUANTUM = 32


def cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` is computed on the CPU without autograd (where the chunking applies)."""
    return not torch.is_grad_enabled() and x.device.type == "cpu"


def by_rows(f: Callable[..., torch.Tensor], *rows: torch.Tensor) -> torch.Tensor:
    """``f(*rows)`` computed on `INFERENCE_ROWS` rows at a time and concatenated (dim 0).

    For row-wise ``f`` only (each output row depends on its input rows alone), on CPU and
    without autograd; otherwise, or for few rows, one call.
    """
    n = rows[0].shape[0]
    if n <= INFERENCE_ROWS or not cpu_inference(rows[0]):
        return f(*rows)
    return torch.cat([f(*(r[i:i + INFERENCE_ROWS] for r in rows))
                      for i in range(0, n, INFERENCE_ROWS)])


def final_state(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Final hidden state of ``lstm`` over padded ``x`` (R, L, E) with ``lengths`` (R,).

    Returns (R, H * directions). Packed sequences make the padding unreachable; when every
    row is full there is no padding and the packing is skipped. On CPU without autograd
    the rows go through in chunks of `INFERENCE_ROWS` (rows are independent: the same
    result).
    """
    if x.shape[0] > INFERENCE_ROWS and cpu_inference(x):
        return by_rows(lambda xs, ls: final_state(lstm, xs, ls), x, lengths)
    if bool((lengths == x.shape[1]).all()):
        n = x.shape[0]
        pad = -n % INFERENCE_ROW_QUANTUM
        if pad and cpu_inference(x):
            # rows are independent: zero rows only add outputs that are cut off again
            x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
        _, (h, _) = lstm(x)
        h = h[:, :n]
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = lstm(packed)
    n_dir = 2 if lstm.bidirectional else 1
    return torch.cat([h[-n_dir + d] for d in range(n_dir)], dim=-1)
