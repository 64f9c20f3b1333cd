// Internal to the LSTM core: packed weights shared by the instruction-set variants.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#include "fastgap_lstm.hpp"

namespace fastgap {
namespace lstm_detail {

// A zero-filled, 64-byte aligned array.
template <typename T>
struct Aligned {
  struct Free {
    void operator()(T* p) const noexcept { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<T, Free> ptr;
  explicit Aligned(size_t n = 0)
      : ptr(static_cast<T*>(::operator new[]((n ? n : 1) * sizeof(T), std::align_val_t(64)))) {
    std::memset(ptr.get(), 0, (n ? n : 1) * sizeof(T));
  }
  T* get() const { return ptr.get(); }
};

// Weights laid out for a vector width `vw`: hidden units in `nb` blocks of vw (hp = nb * vw
// >= H; padded units have zero weights, so their c and h stay 0), the four gates of a block
// side by side. Step inputs are x = (dense (B), h (hp)), k_total = B + hp.
struct Packed {
  int vw = 0, nb = 0;
  int64_t hp = 0, k_total = 0, k_pairs = 0, bp = 0;  // bp: B rounded up to vw
  bool native_bf16 = false;  // w_bf16 (dot products on bfloat16 pairs) instead of w
  Aligned<float> table;      // (T, nb, 4, vw)
  Aligned<float> bias;       // (nb, 4, vw)
  Aligned<float> w;          // (nb, k_total, 4, vw); bfloat16-rounded values when emulating
  Aligned<uint16_t> w_bf16;  // (nb, k_pairs, 4, vw, 2): pairs of consecutive k
  Aligned<float> centres;    // (bp,) Gaussian centres, padding +inf (a zero input)
};

// Round to the nearest bfloat16 (ties to even); NaN stays NaN.
inline uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_value(float x) {
  const uint32_t u = uint32_t(to_bf16(x)) << 16;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

// One instruction-set variant: the vector width its packing needs, whether it has bfloat16
// dot products, and the rows [r0, r1).
struct Variant {
  const char* name;
  int vw;
  bool native_bf16;
  void (*run)(const Packed&, const LstmInput&, float*, int64_t, int64_t);
};

}  // namespace lstm_detail
}  // namespace fastgap
