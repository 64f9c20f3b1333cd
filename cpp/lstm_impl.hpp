// The LSTM rows kernel, compiled once per instruction set: the including file defines
//   FG_ISA_NS (namespace), FG_VW (floats per vector), FG_RB (rows per register block) and
//   FG_DPBF16 (1: AVX-512 BF16 dot products available to this file).
// GCC / Clang vector extensions, so the same code becomes AVX-512, AVX2 or SSE2 by the
// file's compile flags.
#include <algorithm>
#include <cstring>
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

inline V splat(float x) { return V{} + x; }
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, V v) { std::memcpy(p, &v, sizeof v); }

// exp with x clamped to [-87, 88] (2^n stays a normal number): Cody-Waite reduction and
// Cephes' degree-6 polynomial, a few ulps; NaN stays NaN.
inline V vexp(V x) {
  x = x > 88.0f ? splat(88.0f) : x;
  x = x < -87.0f ? splat(-87.0f) : x;
  const V shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V t = x * 1.44269504088896341f + shifter;
  const V n = t - shifter;
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * (r * r) + r + 1.0f;
  const VI bits = ((VI)t - 0x4B400000 + 127) << 23;  // 2^n
  return y * (V)bits;
}

inline V sigmoid(V x) { return 1.0f / (1.0f + vexp(-x)); }
inline V vtanh(V x) { return 2.0f / (1.0f + vexp(-2.0f * x)) - 1.0f; }

// acc (RB rows x 4 gates) -> the block's c and new h of RB rows. Not inlined: the
// accumulation loop then has every vector register for its accumulators.
__attribute__((noinline)) void finish(V (&acc)[RB][4], float* c, float* h_new, int64_t stride) {
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr) {
    const V i = sigmoid(acc[rr][0]), f = sigmoid(acc[rr][1]), g = vtanh(acc[rr][2]),
            o = sigmoid(acc[rr][3]);
    const V cv = f * load(c + rr * stride) + i * g;
    store(c + rr * stride, cv);
    store(h_new + rr * stride, o * vtanh(cv));
  }
}

inline void copy(const V (&from)[RB][4], V (&to)[RB][4]) {
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr)
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) to[rr][g] = from[rr][g];
}

// The accumulators' start: scale * table row + bias, for hidden block jb of RB rows.
__attribute__((noinline)) void start(const Packed& P, const int64_t* idx, const float* sc, int jb, V (&acc)[RB][4]) {
  const float* bias = P.bias.get() + int64_t(jb) * 4 * VW;
#pragma GCC unroll 8
  for (int rr = 0; rr < RB; ++rr) {
    const float* row = P.table.get() + (idx[rr] * P.nb + jb) * 4 * VW;
    const V s = splat(sc[rr]);
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) acc[rr][g] = s * load(row + g * VW) + load(bias + g * VW);
  }
}

// One register block: RB rows x one hidden block (4 gates x VW units), float32 products.
// x holds the block's step inputs k-major, (k, RB): one pointer walks all RB rows.
inline void block_f32(const Packed& P, const int64_t* idx, const float* sc, const float* x,
                      int64_t kt, int jb, float* c, float* h_new) {
  V io[RB][4], acc[RB][4];  // io: the start and end values (its address escapes), acc: registers
  start(P, idx, sc, jb, io);
  copy(io, acc);
  const float* w = P.w.get() + int64_t(jb) * P.k_total * 4 * VW;
  for (int64_t k = 0; k < kt; ++k, w += 4 * VW, x += RB) {
    const V w0 = load(w), w1 = load(w + VW), w2 = load(w + 2 * VW), w3 = load(w + 3 * VW);
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) {
      const V xv = splat(x[rr]);
      acc[rr][0] += xv * w0;
      acc[rr][1] += xv * w1;
      acc[rr][2] += xv * w2;
      acc[rr][3] += xv * w3;
    }
  }
  copy(acc, io);
  finish(io, c, h_new, P.hp);
}

#if FG_DPBF16
// The same with bfloat16 pairs: x holds the block's packed pairs (uint32), (k_pairs, RB).
inline void block_bf16(const Packed& P, const int64_t* idx, const float* sc, const uint32_t* x,
                       int64_t kt_pairs, int jb, float* c, float* h_new) {
  V io[RB][4], acc[RB][4];
  start(P, idx, sc, jb, io);
  copy(io, acc);
  const uint16_t* w = P.w_bf16.get() + int64_t(jb) * P.k_pairs * 4 * VW * 2;
  for (int64_t kp = 0; kp < kt_pairs; ++kp, w += 4 * VW * 2, x += RB) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w), w1 = (__m512bh)_mm512_loadu_si512(w + 32),
                   w2 = (__m512bh)_mm512_loadu_si512(w + 64),
                   w3 = (__m512bh)_mm512_loadu_si512(w + 96);
#pragma GCC unroll 8
    for (int rr = 0; rr < RB; ++rr) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(int(x[rr]));
      acc[rr][0] = (V)_mm512_dpbf16_ps((__m512)acc[rr][0], xv, w0);
      acc[rr][1] = (V)_mm512_dpbf16_ps((__m512)acc[rr][1], xv, w1);
      acc[rr][2] = (V)_mm512_dpbf16_ps((__m512)acc[rr][2], xv, w2);
      acc[rr][3] = (V)_mm512_dpbf16_ps((__m512)acc[rr][3], xv, w3);
    }
  }
  copy(acc, io);
  finish(io, c, h_new, P.hp);
}
#endif

// Per-thread buffers of one group of rows. Step inputs x = (dense, h) are stored per
// register block, k-major: x[(r / RB) * K * RB + k * RB + r % RB].
struct Scratch {
  std::vector<float> x, h, h_new, c;  // (GROUP, k_total), (GROUP, hp) x 3
  std::vector<uint32_t> xb;      // (GROUP, k_pairs) bfloat16 pairs with native bfloat16
  std::vector<float> row;        // (k_total,) one row's step inputs
  std::vector<int64_t> idx;      // (GROUP,) table row of this step's entry
  std::vector<float> sc;         // (GROUP,) its scale
  explicit Scratch(const Packed& P)
      : x(size_t(GROUP * P.k_total)), h(size_t(GROUP * P.hp)), h_new(size_t(GROUP * P.hp)),
        c(size_t(GROUP * P.hp)), xb(P.native_bf16 ? size_t(GROUP * P.k_pairs) : 0),
        row(size_t(P.k_total)), idx(size_t(GROUP)), sc(size_t(GROUP)) {}
};

// This step's inputs of the group's rows (n live of `padded`): x = (dense, h), the entry's
// table row and scale; rows past their length (or padding) read zeros and table row 0.
void step_inputs(const Packed& P, const LstmInput& in, int64_t g0, int64_t n, int64_t padded,
                 int64_t t, Scratch& s) {
  const int64_t B = in.dense_dim, L = in.steps, K = P.k_total;
  for (int64_t r = 0; r < padded; ++r) {
    const bool live = r < n && t < in.lengths[g0 + r];
    const int64_t e = (g0 + r) * L + t;
    s.idx[size_t(r)] = live ? in.index[e] : 0;
    s.sc[size_t(r)] = live ? (in.scale ? in.scale[e] : 1.0f) : 0.0f;
    float* x = s.row.data();
    if (live && B > 0)
      std::memcpy(x, in.dense + e * B, size_t(B) * sizeof(float));
    else
      std::fill(x, x + B, 0.0f);
    std::memcpy(x + B, s.h.data() + r * P.hp, size_t(P.hp) * sizeof(float));
    const int64_t blk = r / RB, rr = r % RB;
    if (P.native_bf16) {
      uint32_t* xb = s.xb.data() + blk * P.k_pairs * RB + rr;
      for (int64_t kp = 0; kp < P.k_pairs; ++kp) {
        const uint32_t lo = lstm_detail::to_bf16(x[2 * kp]);
        const uint32_t hi = 2 * kp + 1 < K ? lstm_detail::to_bf16(x[2 * kp + 1]) : 0u;
        xb[kp * RB] = lo | (hi << 16);
      }
    } else {
      float* xt = s.x.data() + blk * K * RB + rr;
      for (int64_t k = 0; k < K; ++k) xt[k * RB] = in.bf16 ? lstm_detail::bf16_value(x[k]) : x[k];
    }
  }
}

void run_group(const Packed& P, const LstmInput& in, float* out, int64_t g0, int64_t n,
               Scratch& s) {
  const int64_t padded = (n + RB - 1) / RB * RB, B = in.dense_dim, H = in.hidden;
  int64_t steps = 0;
  for (int64_t r = 0; r < n; ++r) steps = std::max(steps, in.lengths[g0 + r]);
  std::fill(s.h.begin(), s.h.end(), 0.0f);
  std::fill(s.c.begin(), s.c.end(), 0.0f);
  for (int64_t t = 0; t < steps; ++t) {
    step_inputs(P, in, g0, n, padded, t, s);
    const int64_t kt = t == 0 ? B : P.k_total;  // h is zero before the first step
    for (int jb = 0; jb < P.nb; ++jb) {
      for (int64_t r = 0; r < padded; r += RB) {
        float* c = s.c.data() + r * P.hp + jb * VW;
        float* h_new = s.h_new.data() + r * P.hp + jb * VW;
#if FG_DPBF16
        if (P.native_bf16) {
          block_bf16(P, &s.idx[size_t(r)], &s.sc[size_t(r)], s.xb.data() + r * P.k_pairs,
                     (kt + 1) / 2, jb, c, h_new);
          continue;
        }
#endif
        block_f32(P, &s.idx[size_t(r)], &s.sc[size_t(r)], s.x.data() + r * P.k_total, kt, jb,
                  c, h_new);
      }
    }
    std::swap(s.h, s.h_new);
    for (int64_t r = 0; r < n; ++r)
      if (in.lengths[g0 + r] == t + 1)
        std::memcpy(out + (g0 + r) * H, s.h.data() + r * P.hp, size_t(H) * sizeof(float));
  }
}

void run_rows(const Packed& P, const LstmInput& in, float* out, int64_t r0, int64_t r1) {
  Scratch s(P);
  for (int64_t g0 = r0; g0 < r1; g0 += GROUP) run_group(P, in, out, g0, std::min(GROUP, r1 - g0), s);
}

}  // namespace

extern const lstm_detail::Variant variant;
const lstm_detail::Variant variant{FG_ISA_NAME, VW, run_rows};

}  // namespace FG_ISA_NS
}  // namespace fastgap
