// Attention tile kernels for the avx512 path (body in attention_x86.h).
#define STRATA_ISA avx512
#include "ops/attention_x86.h"
