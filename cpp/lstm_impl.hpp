// The LSTM rows kernel, compiled once per instruction set: the including file defines
//   FG_ISA_NS (namespace), FG_ISA_NAME, FG_VW (floats per vector), FG_RB (rows per register
//   block) and FG_DPBF16 (1: AVX-512 BF16 instructions available to this file).
// GCC / Clang vector extensions, so the same code becomes AVX-512, AVX2 or SSE2 by the
// file's compile flags.
//
// Layout. Rows are stepped together in groups of GROUP; each row keeps its step input
// x = (dense (B), h (hp)) as one contiguous row, float32, or bfloat16 with native BF16 (then
// consecutive pairs are what one dot-product lane reads). The gate step of hidden block jb
// writes its new h straight into the next step's x rows (double-buffered), so nothing is
// copied between steps but the B dense values.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lstm_internal.hpp"

#if FG_DPBF16
#include <immintrin.h>
#endif

namespace fastgap {
namespace FG_ISA_NS {
namespace {

using lstm_detail::Packed;

constexpr int VW = FG_VW;
constexpr int RB = FG_RB;
constexpr int64_t GROUP = RB * 12;  // rows stepped together: a block's weights stay in L1

typedef float V __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t VI __attribute__((vector_size(VW * sizeof(int32_t))));
typedef uint32_t VU __attribute__((vector_size(VW * sizeof(uint32_t))));

inline V splat(float x) { return V{} + x; }
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }

// exp with x clamped to [-87, 88] (2^n stays a normal number): Cody-Waite reduction, then
// exp(r) = 1 + r + r^2 q(r) on |r| <= ln(2)/2 with q a cubic fitted for the least maximum
// relative error (1.8e-7 in float32 arithmetic, about 1.5 ulp); NaN stays NaN.
inline V exp_poly(V x, V n) {
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V q = splat(8.312505669891834e-3f);
  q = q * r + 4.189009591937065e-2f;
  q = q * r + 1.6667114198207855e-1f;
  q = q * r + 4.99992311000824e-1f;
  return q * (r * r) + r + 1.0f;
}

inline V clamp_exp_arg(V x) {
#if FG_DPBF16
  // one instruction each; NaN (the second operand) passes through
  return (V)_mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.0f), (__m512)x));
#else
  x = x > 88.0f ? splat(88.0f) : x;
  return x < -87.0f ? splat(-87.0f) : x;
#endif
}

inline V vexp(V x) {
  x = clamp_exp_arg(x);
  const V shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V t = x * 1.44269504088896341f + shifter;
  const VI bits = ((VI)t - 0x4B400000 + 127) << 23;  // 2^n
  return exp_poly(x, t - shifter) * (V)bits;
}

inline V sigmoid(V x) { return 1.0f / (1.0f + vexp(-x)); }
inline V vtanh(V x) { return 2.0f / (1.0f + vexp(-2.0f * x)) - 1.0f; }

// Values rounded to bfloat16 precision (ties to even), kept as float32; NaN stays NaN.
inline V round_bf16(V x) {
  const VU u = (VU)x;
  const VU rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return (V)((u & 0x7fffffffu) > 0x7f800000u ? (u | 0x400000u) : rounded);
}

// XT, the step-input element type: uint16_t (bfloat16 bits, native BF16 dot products) or
// float.
template <typename XT>
constexpr bool kPairs = std::is_same_v<XT, uint16_t>;

// Store VW new h values into a next-step x row.
inline void store_x(float* x, V h, bool emulate_bf16) { store(x, emulate_bf16 ? round_bf16(h) : h); }
#if FG_DPBF16
inline void store_x(uint16_t* x, V h, bool) {
  const __m256bh b = _mm512_cvtneps_pbh((__m512)h);
  std::memcpy(x, &b, sizeof b);
}
#endif

inline void copy(const V (&from)[RB][4], V (&to)[RB][4]) {
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr)
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) to[rr][g] = from[rr][g];
}

// The accumulators' start: scale * table row + bias, for hidden block jb of RB rows.
__attribute__((noinline)) void start(const Packed& P, const int64_t* idx, const float* sc, int jb,
                                     V (&acc)[RB][4]) {
  const float* bias = P.bias.get() + int64_t(jb) * 4 * VW;
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr) {
    const float* row = P.table.get() + (idx[rr] * P.nb + jb) * 4 * VW;
    const V s = splat(sc[rr]);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) acc[rr][g] = s * load(row + g * VW) + load(bias + g * VW);
  }
}

// acc (RB rows x 4 gates) -> the block's c and h (float32, row stride hp) and h into the
// next step's x rows (stride kx). Not inlined: the accumulation loop then has every vector
// register for its accumulators.
template <typename XT>
__attribute__((noinline)) void finish(const V (&acc)[RB][4], float* c, float* h, int64_t hp,
                                      XT* x_next, int64_t kx, bool emulate_bf16) {
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr) {
    const V i = sigmoid(acc[rr][0]), f = sigmoid(acc[rr][1]), g = vtanh(acc[rr][2]),
            o = sigmoid(acc[rr][3]);
    const V cv = f * load(c + rr * hp) + i * g;
    const V hv = o * vtanh(cv);
    store(c + rr * hp, cv);
    store(h + rr * hp, hv);
    store_x(x_next + rr * kx, hv, emulate_bf16);
  }
}

// One register block: RB rows x one hidden block (4 gates x VW units). x: the RB rows'
// step inputs (stride kx), of which the first kt (float32) or kt pairs (bfloat16) are read.
template <typename XT>
inline void block(const Packed& P, const int64_t* idx, const float* sc, const XT* x, int64_t kx,
                  int64_t kt, int jb, V (&io)[RB][4]) {
  V acc[RB][4];  // in registers; io's address escapes to start / finish
  start(P, idx, sc, jb, io);
  copy(io, acc);
#if FG_DPBF16
  if constexpr (kPairs<XT>) {
  const uint16_t* w = P.w_bf16.get() + int64_t(jb) * P.k_pairs * 4 * VW * 2;
  for (int64_t kp = 0; kp < kt; ++kp, w += 4 * VW * 2) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w), w1 = (__m512bh)_mm512_loadu_si512(w + 32),
                   w2 = (__m512bh)_mm512_loadu_si512(w + 64),
                   w3 = (__m512bh)_mm512_loadu_si512(w + 96);
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) {
      uint32_t pair;
      std::memcpy(&pair, x + rr * kx + 2 * kp, sizeof pair);
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(int(pair));
      acc[rr][0] = (V)_mm512_dpbf16_ps((__m512)acc[rr][0], xv, w0);
      acc[rr][1] = (V)_mm512_dpbf16_ps((__m512)acc[rr][1], xv, w1);
      acc[rr][2] = (V)_mm512_dpbf16_ps((__m512)acc[rr][2], xv, w2);
      acc[rr][3] = (V)_mm512_dpbf16_ps((__m512)acc[rr][3], xv, w3);
    }
  }
  copy(acc, io);
  return;
  }
#endif
  const float* w = P.w.get() + int64_t(jb) * P.k_total * 4 * VW;
  // per step input: the RB rows' values broadcast once, then one gate's weights at a time
  // (RB x 4 accumulators + RB broadcasts + 1 weight vector: 16 registers for AVX2's RB = 3)
  for (int64_t k = 0; k < kt; ++k, w += 4 * VW) {
    V xv[RB];
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) xv[rr] = splat(x[rr * kx + k]);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {
      const V wg = load(w + g * VW);
#pragma GCC unroll 8
      for (int rr = 0; rr < RB; ++rr) acc[rr][g] += xv[rr] * wg;
    }
  }
  copy(acc, io);
}

// Per-thread buffers of one group of rows.
template <typename XT>
struct Scratch {
  int64_t kx;                // elements per x row: k_total, or 2 * k_pairs (bfloat16 pairs)
  std::vector<XT> x0, x1;    // (GROUP, kx): this step's and the next step's inputs
  std::vector<float> h, c;   // (GROUP, hp) float32 states
  std::vector<float> dense;  // (bp,) one entry's dense inputs, bp = B rounded up to VW
  std::vector<int64_t> idx;  // (GROUP,) table row of this step's entry
  std::vector<float> sc;     // (GROUP,) its scale
  explicit Scratch(const Packed& P)
      : kx(kPairs<XT> ? 2 * P.k_pairs : P.k_total), x0(size_t(GROUP * kx)),
        x1(size_t(GROUP * kx)), h(size_t(GROUP * P.hp)), c(size_t(GROUP * P.hp)),
        dense(size_t(P.bp)), idx(size_t(GROUP)), sc(size_t(GROUP)) {}
};

// One entry's dense inputs into s.dense: given, or the Gaussians of its distance.
void entry_dense(const Packed& P, const LstmInput& in, int64_t e, std::vector<float>& dense) {
  const int64_t B = in.dense_dim;
  if (!in.distances) {
    std::memcpy(dense.data(), in.dense + e * B, size_t(B) * sizeof(float));
    return;
  }
  const V d = splat(in.distances[e]), zero = splat(in.rbf_zero);
  for (int64_t b = 0; b < P.bp; b += VW) {
    const V u = (d - load(P.centres.get() + b)) / in.rbf_width;
    const V arg = u * u;
    const V m = arg < zero ? arg : zero;
    store(dense.data() + b, arg < zero ? vexp(-m) : V{});
  }
}

// This step's inputs of the group's rows (n live of `padded`): the dense part of x, the
// entry's table row and scale; rows past their length (or padding) read zeros and row 0.
template <typename XT>
void step_inputs(const Packed& P, const LstmInput& in, int64_t g0, int64_t n, int64_t padded,
                 int64_t t, Scratch<XT>& s) {
  const int64_t B = in.dense_dim;
  for (int64_t r = 0; r < padded; ++r) {
    const bool live = r < n && t < in.lengths[g0 + r];
    const int64_t e = (g0 + r) * in.steps + t;
    s.idx[size_t(r)] = live ? in.index[e] : 0;
    s.sc[size_t(r)] = live ? (in.scale ? in.scale[e] : 1.0f) : 0.0f;
    if (B == 0) continue;
    if (live)
      entry_dense(P, in, e, s.dense);
    else
      std::fill(s.dense.begin(), s.dense.end(), 0.0f);
    XT* x = s.x0.data() + r * s.kx;
    for (int64_t b = 0; b < B; ++b) {
      if constexpr (kPairs<XT>)
        x[b] = lstm_detail::to_bf16(s.dense[size_t(b)]);
      else
        x[b] = in.bf16 ? lstm_detail::bf16_value(s.dense[size_t(b)]) : s.dense[size_t(b)];
    }
  }
}

template <typename XT>
void run_group(const Packed& P, const LstmInput& in, float* out, int64_t g0, int64_t n,
               Scratch<XT>& s) {
  const int64_t padded = (n + RB - 1) / RB * RB, B = in.dense_dim, H = in.hidden;
  const bool emulate_bf16 = in.bf16 && !kPairs<XT>;
  int64_t steps = 0;
  for (int64_t r = 0; r < n; ++r) steps = std::max(steps, in.lengths[g0 + r]);
  std::fill(s.x0.begin(), s.x0.end(), XT(0));  // h = 0 before the first step
  std::fill(s.c.begin(), s.c.end(), 0.0f);
  for (int64_t t = 0; t < steps; ++t) {
    step_inputs(P, in, g0, n, padded, t, s);
    // h is zero before the first step: only the dense part is read
    const int64_t kt = t == 0 ? B : P.k_total;
    for (int jb = 0; jb < P.nb; ++jb) {
      for (int64_t r = 0; r < padded; r += RB) {
        V io[RB][4];
        block(P, &s.idx[size_t(r)], &s.sc[size_t(r)], s.x0.data() + r * s.kx, s.kx,
              kPairs<XT> ? (kt + 1) / 2 : kt, jb, io);
        finish(io, s.c.data() + r * P.hp + jb * VW, s.h.data() + r * P.hp + jb * VW, P.hp,
               s.x1.data() + r * s.kx + B + jb * VW, s.kx, emulate_bf16);
      }
    }
    std::swap(s.x0, s.x1);
    for (int64_t r = 0; r < n; ++r)
      if (in.lengths[g0 + r] == t + 1)
        std::memcpy(out + (g0 + r) * H, s.h.data() + r * P.hp, size_t(H) * sizeof(float));
  }
}

template <typename XT>
void run_rows_of(const Packed& P, const LstmInput& in, float* out, int64_t r0, int64_t r1) {
  Scratch<XT> s(P);
  for (int64_t g0 = r0; g0 < r1; g0 += GROUP)
    run_group(P, in, out, g0, std::min(GROUP, r1 - g0), s);
}

void run_rows(const Packed& P, const LstmInput& in, float* out, int64_t r0, int64_t r1) {
#if FG_DPBF16
  if (P.native_bf16) return run_rows_of<uint16_t>(P, in, out, r0, r1);
#endif
  run_rows_of<float>(P, in, out, r0, r1);
}

}  // namespace

extern const lstm_detail::Variant variant;
const lstm_detail::Variant variant{FG_ISA_NAME, VW, FG_DPBF16 != 0, run_rows};

}  // namespace FG_ISA_NS
}  // namespace fastgap
