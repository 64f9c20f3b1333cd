"""LSTM calls of `fastgap.model` over rows: final states of packed sequences, row chunks
for CPU inference, and the compiled LSTM core for CPU inference of the per-atom LSTM.

Rows (atoms, structures) are independent sequences, so an LSTM over a subset of them gives
the same states as over all of them; CPU inference uses that to run over cache-sized chunks
padded to a few shapes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from fastgap.neighbors import core_function

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


# The compiled LSTM core (cpp/fastgap_lstm.hpp) runs CPU inference of one-layer,
# one-direction LSTMs whose entry input is an element vector times a scale (1/distance) or
# an element vector next to a dense encoding: the element part of the input product is then
# one product per element instead of one per entry. It is used where it has vector code
# (AVX-512 with or without BF16, AVX2: 1.2-1.9x torch's LSTM, benchmarks/bench_lstm_bound.py);
# its portable code is slower than torch's and runs only when asked for by FASTGAP_LSTM_ISA
# ("auto" or one of fastgap._core.lstm_isas()). FASTGAP_LSTM_KERNEL=0 turns it off.
KERNEL_ENV = "FASTGAP_LSTM_KERNEL"
ISA_ENV = "FASTGAP_LSTM_ISA"


@functools.cache
def _vector_isa() -> bool:
    """Whether the core's best instruction set on this CPU has vector code (not portable)."""
    return core_function("lstm_isas")()[0] != "portable"


def kernel_applies(lstm: nn.Module, x: torch.Tensor) -> bool:
    """Whether `fused_final_state` runs ``lstm`` on data like ``x``: CPU inference, a plain
    one-layer one-direction ``nn.LSTM`` with float32 weights, not while torch.compile traces,
    the core built with vector code for this CPU (or an instruction set asked for by
    `ISA_ENV`) and not switched off (`KERNEL_ENV`)."""
    return (
        os.environ.get(KERNEL_ENV, "1") != "0"
        and cpu_inference(x)
        and type(lstm) is nn.LSTM
        and lstm.num_layers == 1
        and not lstm.bidirectional
        and lstm.proj_size == 0
        and lstm.weight_hh_l0.dtype == torch.float32
        and not torch.compiler.is_compiling()
        and core_function("lstm_final_states") is not None
        and (os.environ.get(ISA_ENV, "auto") != "auto" or _vector_isa())
    )


def fused_final_state(lstm: nn.LSTM, vectors: torch.Tensor, index: torch.Tensor,
                      lengths: torch.Tensor, *, scale: torch.Tensor | None = None,
                      dense: torch.Tensor | None = None,
                      gaussians: tuple[torch.Tensor, torch.Tensor, float, float] | None = None,
                      ) -> torch.Tensor:
    """Final hidden states (R, H) float32 of ``lstm`` over entries whose input is
    ``vectors[index] * scale``, or ``cat([vectors[index], dense])``.

    Args:
        lstm: a module for which `kernel_applies`.
        vectors: (T, E) float table (element vectors).
        index: (R, L) int64 rows of ``vectors``; entries past ``lengths`` are not read.
        lengths: (R,) int64, 1..L.
        scale: (R, L) float, or None (1).
        dense: (R, L, B) float, B = the LSTM's input size - E; or None with B = 0 or
            ``gaussians``.
        gaussians: (distances (R, L) Å, centres (B,) Å, width Å, cut): ``dense`` computed in
            the core as exp(-a) where a = ((distance - centre) / width)^2 < cut, else 0.

    Bfloat16 products when CPU autocast to bfloat16 is on (as torch's LSTM would), else
    float32; results equal torch's LSTM up to that rounding (tests/test_lstm_kernel.py).
    """
    hidden = lstm.hidden_size
    e = vectors.shape[1]
    bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with torch.autocast("cpu", enabled=False):
        w_ih = lstm.weight_ih_l0.detach()
        table = vectors.detach().float() @ w_ih[:, :e].T  # (T, 4H): each row's input gates
        bias = ((lstm.bias_ih_l0 + lstm.bias_hh_l0).detach() if lstm.bias
                else w_ih.new_zeros(4 * hidden))
    distances, centres, width, cut = gaussians or (None, None, 1.0, 0.0)
    out = core_function("lstm_final_states")(
        _np(index.to(torch.int64)), _np(scale), _np(dense), _np(distances), _np(centres),
        float(width), float(cut), _np(lengths.to(torch.int64)), _np(table), _np(w_ih[:, e:]),
        _np(lstm.weight_hh_l0), _np(bias), bf16, torch.get_num_threads(),
        os.environ.get(ISA_ENV, "auto"),
    )
    return torch.from_numpy(out)


def lstm_final_state(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`final_state` of ``lstm`` over dense inputs ``x`` (R, L, E), in the compiled core
    where `kernel_applies` (no element table), else torch's LSTM."""
    if kernel_applies(lstm, x):
        index = torch.zeros(x.shape[:2], dtype=torch.int64)  # (R, L) the one empty row
        return fused_final_state(lstm, x.new_zeros(1, 0, dtype=torch.float32), index, lengths,
                                 dense=x)
    return final_state(lstm, x, lengths)


def _np(t: torch.Tensor | None) -> np.ndarray:
    """A contiguous NumPy view for the core: float tensors as float32, integers as they are,
    None as an empty float32 array."""
    if t is None:
        return np.zeros(0, dtype=np.float32)
    t = t.detach()
    return (t.float() if t.is_floating_point() else t).contiguous().numpy()
