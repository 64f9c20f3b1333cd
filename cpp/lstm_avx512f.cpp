// The LSTM kernel for AVX-512 without BF16 (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mfma; used when the CPU has them but not AVX-512 BF16): float32 products,
// bfloat16 emulated by rounding.
#define FG_ISA_NS avx512f
#define FG_ISA_NAME "avx512"
#define FG_VW 16
#define FG_RB 6
#define FG_DPBF16 0
#include "lstm_impl.hpp"
