// The LSTM kernel with the compiler's default instruction set (SSE2 on x86-64).
#define FG_ISA_NS portable
#define FG_ISA_NAME "portable"
#define FG_VW 4
#define FG_RB 2
#define FG_DPBF16 0
#include "lstm_impl.hpp"
