// fastgap LSTM inference core: the whole contract in one header.
//
// Final hidden states of a one-layer, one-direction LSTM (PyTorch's nn.LSTM equations and
// gate order i, f, g, o) over many independent rows, for inference only (no gradients).
// The per-atom LSTM of fastgap reads entry vectors that are an element vector times a
// scale (1/distance) or an element vector next to a few Gaussians of the distance; its input
// product is therefore a per-element constant (times the scale) plus a small dense product.
// The caller precomputes the per-element part once (`table`), so each step costs
// 4H x (B + H) multiply-adds instead of 4H x (E + B + H).
//
// For row r and step t < lengths[r], with h and c starting at zero:
//   z = scale[r, t] * table[index[r, t]] + w_dense @ dense[r, t] + w_hh @ h + bias   (4H,)
//   i, f, g, o = sigmoid(z[0:H]), sigmoid(z[H:2H]), tanh(z[2H:3H]), sigmoid(z[3H:4H])
//   c = f * c + i * g;  h = o * tanh(c)
// The output row r is h after step lengths[r] - 1. Entries at t >= lengths[r] are never read
// (whatever they hold). Each row is computed by the same sequence of operations whatever
// the other rows are, so a row's result does not depend on the batch it is in.
//
// Inputs (C-contiguous, owned by the caller, read-only):
//   index    (R, L) int64   row of `table` per entry, 0 <= index < T
//   scale    (R, L) float32 or null (= 1)
//   dense    (R, L, B) float32; or, when B > 0 and dense is null, the Gaussians of
//            distances (R, L) float32 Å: dense[r, t, b] = exp(-a) if a < rbf_zero else 0,
//            a = ((distances[r, t] - rbf_centres[b]) / rbf_width)^2 (fastgap's "rbf" encoding)
//   lengths  (R,) int64     1..L
//   table    (T, 4H) float32 input-gate contribution of each table row (no bias)
//   w_dense  (4H, B) float32 (null when B == 0)
//   w_hh     (4H, H) float32
//   bias     (4H,) float32  (PyTorch's bias_ih + bias_hh)
// Output: out (R, H) float32, written by lstm_final_states.
//
// Arithmetic: float32, except with `bf16`: the products' operands (the table row stays
// float32; dense inputs, h and the weights w_dense, w_hh) are rounded to bfloat16 (round to
// nearest even) and the products summed in float32, as in CPU bfloat16 autocast. Sigmoid and
// tanh use a polynomial exp with a relative error of a few float32 ulps; results differ from
// PyTorch's LSTM by float32 rounding (about 1e-6 relative), and with `bf16` by bfloat16
// rounding. Vector code for AVX-512 (with or without BF16 dot products) or AVX2 is chosen at
// run time by the CPU (`isa`), else portable code; every variant follows the same equations.
//
// Errors: LstmError (std::runtime_error) naming the argument: sizes < 0 or H < 1, a length
// outside 1..L, an index outside 0..T-1 at a step that is read, a missing required array,
// num_threads < 0, an `isa` this CPU or build does not have, both or neither of dense and
// distances when B > 0, distances without rbf_centres or with a width that is not > 0.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastgap {

class LstmError : public std::runtime_error {
 public:
  explicit LstmError(const std::string& message) : std::runtime_error(message) {}
};

struct LstmInput {
  const int64_t* index = nullptr;    // (R, L)
  const float* scale = nullptr;      // (R, L) or null
  const float* dense = nullptr;      // (R, L, B) or null
  const float* distances = nullptr;  // (R, L) or null: dense = Gaussians of these (Å)
  const float* rbf_centres = nullptr;  // (B,) Å, with distances
  float rbf_width = 1.0f;            // Å, with distances
  float rbf_zero = 87.0f;            // Gaussians whose exponent reaches this are 0
  const int64_t* lengths = nullptr;  // (R,)
  const float* table = nullptr;      // (T, 4H)
  const float* w_dense = nullptr;    // (4H, B) or null
  const float* w_hh = nullptr;       // (4H, H)
  const float* bias = nullptr;       // (4H,)
  int64_t rows = 0;                  // R
  int64_t steps = 0;                 // L
  int64_t dense_dim = 0;             // B
  int64_t table_rows = 0;            // T
  int64_t hidden = 0;                // H
  bool bf16 = false;
  const char* isa = nullptr;         // null or "auto": the best of lstm_isas(); else one of them
};

// Check sizes, lengths and the indices that will be read; throws LstmError.
void validate_lstm(const LstmInput& input);

// out (R, H): the final hidden state of every row. num_threads = 0 uses all hardware
// threads (row groups are distributed over std::threads). Validates first.
void lstm_final_states(const LstmInput& input, float* out, int num_threads);

// The instruction sets this CPU and build can run, best first: among "avx512-bf16" (AVX-512
// with BF16 dot products), "avx512" (float32 products; bfloat16 emulated by rounding),
// "avx2" (AVX2 + FMA) and "portable" (always last).
std::vector<std::string> lstm_isas();

}  // namespace fastgap
