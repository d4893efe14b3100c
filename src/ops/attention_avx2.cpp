// Attention tile kernels for the avx2 path (body in attention_x86.h).
#define STRATA_ISA avx2
#include "ops/attention_x86.h"
