// The LSTM kernel for AVX-512 with BF16 dot products (compiled with -mavx512f -mavx512bw
// -mavx512vl -mavx512dq -mavx512bf16 -mfma; used when the CPU has all of them).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports _mm512_undefined_ps() inside its own intrinsics headers as uninitialised
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define FG_ISA_NS avx512
#define FG_ISA_NAME "avx512-bf16"
#define FG_VW 16
#define FG_RB 6
#define FG_DPBF16 1
#include "lstm_impl.hpp"
