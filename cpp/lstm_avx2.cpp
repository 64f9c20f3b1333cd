// The LSTM kernel for AVX2 + FMA (compiled with -mavx2 -mfma; used when the CPU has them).
#define FG_ISA_NS avx2
#define FG_ISA_NAME "avx2"
#define FG_VW 8
#define FG_RB 3
#define FG_DPBF16 0
#include "lstm_impl.hpp"
